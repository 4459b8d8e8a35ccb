"""``udcbench compare A B``: whether two results differ beyond noise, with the difference's 95 % interval.

A side is a run folder or a method name (its latest run per seed in the results store, on one dataset and
condition, of one preset). Two single runs tested on the same images are compared by a **paired bootstrap over
the test images** (each run's per-image predictions at its chosen epoch, ``test_predictions.npy``): the images
are resampled together, so what both runs get right or wrong alike cancels. Where a side has several seeds the
comparison is **over seeds**: Welch's t interval of the difference of the means (3 seeds a side leave about 2-4
degrees of freedom, so the interval is wide, as it should be). The data tell the two apart when the interval
excludes zero.
"""

from __future__ import annotations

import math
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
    method: str  # "paired bootstrap over N test images" or "bootstrap over seeds"
    difference: float  # a - b, points
    low: float
    high: float

    @property
    def separated(self) -> bool:
        return self.low > 0 or self.high < 0

    def verdict(self) -> str:
        if not self.separated:
            return "the data cannot tell them apart"
        better, worse = (self.a, self.b) if self.difference > 0 else (self.b, self.a)
        return f"{better.name} is better than {worse.name}"

    def to_json(self) -> dict[str, Any]:
        return {"a": self.a.name, "b": self.b.name, "a_accuracy": self.a.accuracies.tolist(),
                "b_accuracy": self.b.accuracies.tolist(), "method": self.method, "difference": self.difference,
                "interval_95": [self.low, self.high], "separated": self.separated, "verdict": self.verdict(),
                "a_runs": [r["run_dir"] for r in self.a.records], "b_runs": [r["run_dir"] for r in self.b.records]}

    def summary(self) -> str:
        return (f"{self.a.describe()}; {self.b.describe()}. Difference {self.difference:+.2f} points, 95 % interval "
                f"[{self.low:+.2f}, {self.high:+.2f}] ({self.method}): {self.verdict()}.")


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


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile (p > 0.5) of Student's t with ``df`` degrees of freedom: its density integrated
    (Simpson, 4,001 points) and the integral inverted by bisection; within 1e-4 of the tables."""
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def cdf(x: float) -> float:
        t = np.linspace(0.0, x, 4001)
        density = np.exp(log_norm - (df + 1) / 2 * np.log1p(t * t / df))
        h = x / 4000
        return 0.5 + h / 3 * (density[0] + density[-1] + 4 * density[1:-1:2].sum() + 2 * density[2:-1:2].sum())

    low, high = 0.0, 1.0
    while cdf(high) < p:
        high *= 2
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if cdf(mid) < p else (low, mid)
    return (low + high) / 2


def seed_interval(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """The difference of the mean accuracies over seeds and its 95 % interval: Welch's t where both sides have
    several seeds; where one side has a single run, that run is taken to vary as the other side's seeds do (the
    interval of a new draw against their mean, t with n - 1 degrees of freedom)."""
    diff = float(a.mean() - b.mean())
    if len(a) > 1 and len(b) > 1:
        va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
        se = math.sqrt(va + vb)
        df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)) if se > 0 else 1.0
    else:
        several = a if len(a) > 1 else b
        se = several.std(ddof=1) * math.sqrt(1 / len(several) + 1)
        df = len(several) - 1
    half = t_quantile(0.975, df) * se
    return diff, diff - half, diff + half


def _correct(record: dict[str, Any]) -> np.ndarray:
    path = Path(record["run_dir"]) / PREDICTIONS
    if not path.is_file():
        raise UdcbenchError(f"{record['run_dir']} has no {PREDICTIONS} (trained before udcbench kept its "
                            "predictions): retrain it, or compare over several seeds")
    labels, predictions = np.load(path, allow_pickle=False)
    return labels == predictions


def separated_better(a: Side, b: Side) -> bool:
    """Whether the data say ``a`` is better than ``b`` (False where they cannot be compared: runs without kept
    predictions, or tested on other images)."""
    try:
        result = compare(a, b)
    except UdcbenchError:
        return False
    return result.separated and result.difference > 0


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
        return Comparison(a, b, f"paired bootstrap over {len(correct_a)} test images", diff, low, high)
    diff, low, high = seed_interval(a.accuracies, b.accuracies)
    how = "Welch's t" if len(a.records) > 1 and len(b.records) > 1 else "t, the single run varying as the other's"
    return Comparison(a, b, f"{how} over seeds ({len(a.records)} and {len(b.records)})", diff, low, high)
