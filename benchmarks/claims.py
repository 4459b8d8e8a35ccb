"""The documentation's comparisons on real FERPlus, as ``udcbench compare`` makes them over seeds.

    python benchmarks/claims.py

Reads ``benchmarks/results/fer_accuracy.csv`` (and the rows it no longer holds, measured before the engine's
rewrite: ``fer_accuracy-before-engine-rewrite.csv``) and, for each pair docs/ compares (same condition, same draw
of the data, the same engine: the rows measured since its rewrite when a side has any, the seeds both have
rows for), gives the difference of the mean accuracies with its 95 % interval
(Welch's t over seeds, :func:`udcbench.compare.seed_interval`) and whether the data tell the two apart. Pairs on
different draws of the data are refused, not compared. Writes ``benchmarks/results/claims.csv``, and the seed
means docs/ quotes (per method, condition and draw: accuracy and mean class accuracy, mean and sample std,
and the drop of the means from clean) to ``benchmarks/results/fer_accuracy_summary.csv``.
"""

from __future__ import annotations

import numpy as np

from udcbench.compare import seed_interval

from _common import read_rows, report

#: (method, other, condition): the comparisons docs/ words.
PAIRS = [
    ("lrdif", "resnet18", "clean"),
    ("lrdif", "resnet18", "toled"),
    ("dan", "resnet18", "clean"),
    ("rul", "resnet18", "clean"),
    ("dan", "resnet18", "toled"),
    ("rul", "resnet18", "toled"),
    ("lrdif (bypass)", "resnet18", "clean"),
    ("lrdif (bypass)", "resnet18", "toled"),
    ("lrdif", "lrdif (bypass)", "clean"),
    ("lrdif", "lrdif (bypass)", "toled"),
]


#: The engine a row was measured with: rows recorded before the engine's rewrite name no commit.
BEFORE = "before the engine rewrite"
CURRENT = "current engine"


def engine(row: dict) -> str:
    return BEFORE if not row.get("commit") or row["commit"].startswith("not recorded") else CURRENT


def label(row: dict) -> str:
    """The method as the comparisons name it: a named variant (``--variant``) is a method of its own."""
    return f"{row['method']} ({row['variant']})" if row.get("variant") else row["method"]


def main() -> None:
    # the engine's rewrite replaced some rows of fer_accuracy.csv; the replaced ones (kept apart) still count, in
    # their own engine's means and comparisons
    rows = read_rows("fer_accuracy") + read_rows("fer_accuracy-before-engine-rewrite")
    out = []
    for (method, other, condition), wanted in ((pair, era) for pair in PAIRS for era in (BEFORE, CURRENT)):
        # a comparison never mixes the two engines' runs: one row per engine that measured either side
        sides = [[r for r in rows if label(r) == m and r["condition"] == condition and engine(r) == wanted]
                 for m in (method, other)]
        if not sides[0] and not sides[1]:
            continue
        draws = [{r["data_manifest"] for r in side} for side in sides]
        row = {"method": method, "other": other, "condition": condition, "engine": wanted,
               "seeds": f"{len(sides[0])} / {len(sides[1])}", "draws": " / ".join("+".join(sorted(d)) or "-"
                                                                               for d in draws)}
        if not sides[0] or not sides[1]:
            era = "before the engine rewrite" if wanted == BEFORE else "with the current engine"
            out.append({**row, "verdict": f"not compared: no runs of {method if not sides[0] else other} {era}"})
            continue
        if draws[0] != draws[1] or len(draws[0]) > 1:
            out.append({**row, "verdict": "not compared: the runs are on different draws of the data"})
            continue
        if min(len(sides[0]), len(sides[1])) < 2:
            out.append({**row, "verdict": "not compared: one seed on a side, so seed noise is not covered"})
            continue
        a, b = (np.array([float(r["accuracy"]) for r in side]) for side in sides)
        diff, low, high = seed_interval(a, b)
        verdict = ("the data cannot tell them apart" if low <= 0 <= high
                   else f"{method if diff > 0 else other} is better")
        out.append({**row, "mean": a.mean(), "other_mean": b.mean(), "difference": diff, "low_95": low,
                    "high_95": high, "verdict": verdict})
    report("claims", "FERPlus comparisons over seeds (Welch's t, 95 %)", out)
    report("fer_accuracy_summary", "FERPlus, means over seeds", summary(rows))


def summary(rows: list[dict]) -> list[dict]:
    """Per method, condition and draw of the data: the seeds' mean and sample std of accuracy and mean class
    accuracy, and the drop of the mean from the method's clean mean."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((label(r), r["condition"], r["data_manifest"], engine(r)), []).append(r)
    out = []
    for (method, condition, draw, measured), runs in sorted(groups.items()):
        acc = np.array([float(r["accuracy"]) for r in runs])
        mca = np.array([float(r["mean_class_accuracy"]) for r in runs])
        out.append({"method": method, "condition": condition, "draw": draw, "engine": measured, "seeds": len(runs),
                    "accuracy_mean": acc.mean(), "accuracy_std": acc.std(ddof=1) if len(acc) > 1 else "",
                    "mean_class_accuracy_mean": mca.mean()})
    clean = {(r["method"], r["engine"]): r["accuracy_mean"] for r in out if r["condition"] == "clean"}
    for r in out:
        base = clean.get((r["method"], r["engine"]))
        r["drop_of_means"] = base - r["accuracy_mean"] if base is not None and r["condition"] != "clean" else ""
    return out


if __name__ == "__main__":
    main()
