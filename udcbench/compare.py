"""``udcbench compare A B``: whether two results differ beyond noise, with the difference's 95 % interval, and
what that interval covers.

A side is a run folder or a method name (its latest run per seed in the results store, on one dataset and
condition, of one preset). What decides:

- **Two or more seeds a side**: Welch's t interval of the difference of the mean accuracies over seeds
  (``scipy.stats.ttest_ind(equal_var=False)``; 3 seeds a side leave about 2-4 degrees of freedom, so the
  interval is wide, as it should be). It covers seed variance (and, inside each run, test sampling). The data
  say one method is better when it excludes zero. Runs of different draws of the data (another synthesis of
  the UDC copy) are refused, as the tables refuse them; seeds that all score alike give an interval of no
  width, which is said as such and decides nothing.
- **One run a side**: a **paired bootstrap over the test images** (each run's per-image predictions at its
  chosen epoch, ``test_predictions.npy``): it covers **test sampling only**. Two runs of one method that
  differ only in seed disagree on a fifth of the images, so such an interval never says which method is
  better: it says whether these two runs differ beyond test sampling.
- **One run against several seeds**: the single run taken to vary as the other side's seeds do (a new draw
  against their mean, t with n - 1 degrees of freedom). It assumes what it cannot check, so it too says no
  "better": train a second seed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from udcbench.errors import UdcbenchError
from udcbench.files import read_json

#: Bootstrap resamples, and the seed of their generator (the interval is reproducible).
RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
#: The run folder's file of test labels and predictions (engine.trainer.TEST_PREDICTIONS).
PREDICTIONS = "test_predictions.npy"
#: The family-wise error rate of the leaderboard's many comparisons (Holm's step-down procedure).
ALPHA = 0.05
#: What each kind of interval covers, in the words the summary, --json and the help use.
TEST_SAMPLING_ONLY = "test-sampling only; seed variance not covered"
SEED_VARIANCE = "seed variance (Welch's t over seeds)"
ASSUMED_SEED_VARIANCE = "seed variance of one side only, assumed for the single run"


@dataclass
class Side:
    """One side of a comparison: its name and its runs' records (one per seed)."""

    name: str
    records: list[dict[str, Any]]

    @property
    def accuracies(self) -> np.ndarray:
        return np.array([100 * r["test_at_best"]["accuracy"] for r in self.records])

    def describe(self) -> str:
        acc = self.accuracies
        spread = f" +- {acc.std(ddof=1):.2f}" if len(acc) > 1 else ""
        return f"{self.name}: {acc.mean():.2f}{spread} % ({len(acc)} seed{'s' if len(acc) > 1 else ''})"


@dataclass
class Comparison:
    a: Side
    b: Side
    method: str  # "paired bootstrap over N test images", "Welch's t over seeds (3 and 3)", ...
    difference: float  # a - b, points
    low: float
    high: float
    covers: str  # what the interval covers (TEST_SAMPLING_ONLY, SEED_VARIANCE, ASSUMED_SEED_VARIANCE)
    p_value: float | None = None  # Welch's two-sided p, where two or more seeds a side decide

    @property
    def decides(self) -> bool:
        """Whether this interval can say which is better: only over seeds, two or more a side, with some spread."""
        return self.covers == SEED_VARIANCE and not self.degenerate

    @property
    def degenerate(self) -> bool:
        return self.low == self.high

    @property
    def separated(self) -> bool:
        """The interval excludes zero (whatever it covers)."""
        return self.low > 0 or self.high < 0

    def verdict(self) -> str:
        if self.degenerate:
            why = ("every seed of both sides scored the same" if self.covers == SEED_VARIANCE
                   else "the two runs made the same mistakes")
            return f"the interval has no width ({why}): it decides nothing"
        if not self.decides:
            if self.covers == TEST_SAMPLING_ONLY:
                differ = "differ" if self.separated else "do not differ"
                return (f"these two runs {differ} beyond test sampling; one run a side cannot say which method is "
                        "better (train two or more seeds a side)")
            return "one side has a single run: no verdict (train two or more seeds a side)"
        if not self.separated:
            return "the data cannot tell them apart"
        better, worse = (self.a, self.b) if self.difference > 0 else (self.b, self.a)
        return f"{better.name} is better than {worse.name}"

    def to_json(self) -> dict[str, Any]:
        return {"a": self.a.name, "b": self.b.name, "a_accuracy": self.a.accuracies.tolist(),
                "b_accuracy": self.b.accuracies.tolist(), "method": self.method, "covers": self.covers,
                "difference": self.difference, "interval_95": [self.low, self.high], "p_value": self.p_value,
                "separated": self.separated, "decides": self.decides, "degenerate": self.degenerate,
                "verdict": self.verdict(),
                "a_runs": [r["run_dir"] for r in self.a.records], "b_runs": [r["run_dir"] for r in self.b.records]}

    def summary(self) -> str:
        return (f"{self.a.describe()}; {self.b.describe()}. Difference {self.difference:+.2f} points, 95 % interval "
                f"[{self.low:+.2f}, {self.high:+.2f}] ({self.method}; covers {self.covers}): {self.verdict()}.")


def resolve_side(name: str, results: list[dict[str, Any]], dataset: str | None, condition: str | None,
                 preset: str | None) -> Side:
    """A run folder (its record) or a method's latest finished run per seed in ``results`` (store rows), on
    ``dataset`` / ``condition`` and of ``preset`` when given, else of the most common among its runs."""
    folder = Path(name)
    if (folder / "results.json").is_file():
        record = read_json(folder / "results.json")
        if not isinstance(record, dict) or "test_at_best" not in record:
            raise UdcbenchError(f"{folder}/results.json is not a finished run's record")
        return Side(folder.name, [{**record, "run_dir": str(folder)}])
    rows = [r for r in results if r.get("kind") == "train" and r["method"] == name and r.get("accuracy") is not None
            and not r.get("record", {}).get("config_changes")
            and (dataset is None or r["dataset"] == dataset) and (condition is None or r["condition"] == condition)]
    if not rows:
        where = f" on {dataset or 'any dataset'} ({condition or 'any condition'})"
        raise UdcbenchError(f"'{name}' is neither a run folder nor a method with finished runs{where} in the store")
    groups = Counter((r["dataset"], r["condition"], r["preset"]) for r in rows if preset in (None, r["preset"]))
    if not groups:
        raise UdcbenchError(f"{name} has no finished run of preset {preset}")
    (data, cond, chosen), _ = groups.most_common(1)[0]
    if len({(d, c) for d, c, _ in groups}) > 1 and (dataset is None or condition is None):
        raise UdcbenchError(f"{name} has runs on several datasets or conditions: pass --data to choose one")
    latest: dict[int, dict] = {}
    for r in sorted(rows, key=lambda r: r["created"]):
        if (r["dataset"], r["condition"], r["preset"]) == (data, cond, chosen):
            latest[r["seed"]] = r
    records = [{**latest[s]["record"], "run_dir": latest[s]["run_dir"]} for s in sorted(latest)]
    return Side(name, records)


def paired_bootstrap(correct_a: np.ndarray, correct_b: np.ndarray, resamples: int = RESAMPLES,
                     seed: int = BOOTSTRAP_SEED) -> tuple[float, float, float]:
    """The difference of accuracies (points) of two runs on the same images and its 95 % percentile interval,
    resampling the images together. A paired difference is +1, -1 or 0 per image, so a resample of n images is
    a multinomial draw of how many of each it holds: the same distribution as resampling the images one by one,
    in time independent of n."""
    n = len(correct_a)
    diff = correct_a.astype(np.int64) - correct_b.astype(np.int64)
    shares = [np.mean(diff == 1), np.mean(diff == -1)]
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, [*shares, max(0.0, 1.0 - sum(shares))], size=resamples)
    means = (counts[:, 0] - counts[:, 1]) / n
    low, high = np.percentile(means, [2.5, 97.5])
    return 100 * float(diff.mean()), 100 * float(low), 100 * float(high)


def seed_interval(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """The difference of the mean accuracies over seeds and its 95 % interval: Welch's t (scipy) where both sides
    have several seeds; where one side has a single run, that run is taken to vary as the other side's seeds do
    (the interval of a new draw against their mean, t with n - 1 degrees of freedom)."""
    from scipy import stats

    diff = float(a.mean() - b.mean())
    if len(a) > 1 and len(b) > 1:
        if a.var() == 0 and b.var() == 0:
            return diff, diff, diff  # no spread at all: scipy's interval would be nan
        ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
        return diff, float(ci.low), float(ci.high)
    several = a if len(a) > 1 else b
    half = float(stats.t.ppf(0.975, len(several) - 1)) * several.std(ddof=1) * (1 / len(several) + 1) ** 0.5
    return diff, diff - half, diff + half


def welch_p(a: np.ndarray, b: np.ndarray) -> float:
    """Welch's two-sided p-value of equal mean accuracies (two or more seeds a side); 1 where neither varies."""
    from scipy import stats

    if a.var() == 0 and b.var() == 0:
        return 0.0 if a.mean() != b.mean() else 1.0
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def holm(p_values: list[float], alpha: float = ALPHA) -> list[bool]:
    """Which of several hypotheses Holm's step-down procedure rejects at family-wise error ``alpha``: the k-th
    smallest p (from 0) is compared with alpha / (m - k), stopping at the first that is not below it."""
    rejected = [False] * len(p_values)
    for k, i in enumerate(sorted(range(len(p_values)), key=lambda i: p_values[i])):
        if p_values[i] > alpha / (len(p_values) - k):
            break
        rejected[i] = True
    return rejected


def _correct(record: dict[str, Any]) -> np.ndarray:
    path = Path(record["run_dir"]) / PREDICTIONS
    if not path.is_file():
        raise UdcbenchError(f"{record['run_dir']} has no {PREDICTIONS} (trained before udcbench kept its "
                            "predictions): retrain it, or compare over several seeds")
    labels, predictions = np.load(path, allow_pickle=False)
    return labels == predictions


def draws(side: Side) -> set[str]:
    """The data draws (dataset manifest digests) a side's runs were tested on."""
    return {str(r.get("dataset_manifest_sha256"))[:12] for r in side.records}


def compare(a: Side, b: Side) -> Comparison:
    """The two sides compared (see the module docstring)."""
    if len(a.records) == 1 and len(b.records) == 1:
        ra, rb = a.records[0], b.records[0]
        same = (ra.get("dataset_manifest_sha256"), ra.get("test_split"), ra["test_at_best"].get("count"))
        if same != (rb.get("dataset_manifest_sha256"), rb.get("test_split"), rb["test_at_best"].get("count")):
            raise UdcbenchError(f"{a.name} and {b.name} were not tested on the same images (dataset draw or split "
                                "differ): compare runs of one test set")
        correct_a, correct_b = _correct(ra), _correct(rb)
        diff, low, high = paired_bootstrap(correct_a, correct_b)
        return Comparison(a, b, f"paired bootstrap over {len(correct_a)} test images", diff, low, high,
                          TEST_SAMPLING_ONLY)
    if len(draws(a) | draws(b)) > 1:
        named = "; ".join(f"{side.name}: {', '.join(sorted(draws(side)))}" for side in (a, b))
        raise UdcbenchError(f"the runs were tested on different draws of the data ({named}): compare runs of one "
                            "draw (re-synthesise, or pass run folders of one draw)")
    diff, low, high = seed_interval(a.accuracies, b.accuracies)
    if len(a.records) > 1 and len(b.records) > 1:
        return Comparison(a, b, f"Welch's t over seeds ({len(a.records)} and {len(b.records)})", diff, low, high,
                          SEED_VARIANCE, welch_p(a.accuracies, b.accuracies))
    return Comparison(a, b, f"t over seeds, the single run varying as the other's ({len(a.records)} and "
                      f"{len(b.records)})", diff, low, high, ASSUMED_SEED_VARIANCE)
