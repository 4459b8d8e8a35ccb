"""Time the quick study end to end in fp32 and put it beside this machine's speed in the budget's unit.

    python benchmarks/reproduce_time.py [--preset quick] [--seed 0] [--workspace DIR]

Measures the images/s at which this machine trains the unit's ResNet-18 (torchvision, 48 px, batch 64,
fp32; before and after the study, the mean is used), runs ``udcbench reproduce`` in a fresh workspace with
``UDCBENCH_CPU_BF16=0`` (amp off: fp32 everywhere, as on a CPU without native bf16), and prints the study's
minutes, its cost in units (minutes x speed), the plan's predicted cost (``--dry-run``), and the time
scaled to the reference machine (:data:`udcbench.budget.REFERENCE_SPEED` images/s). Writes
``benchmarks/results/reproduce_time.csv``, and every run's test accuracy (at the epoch chosen on validation),
its drop from clean, the same on the validation part (what the study's choices read: the panel's scale for
the built-in faces, the quick epochs), the study's seed, precision and machine speed, and the commit that trained it to
``benchmarks/results/<preset>_study.csv`` (one row per seed, method and condition; other seeds' rows kept).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from method_speed import reference_speed

from udcbench.budget import QUICK_BUDGET_MINUTES, REFERENCE_SPEED, UNCOUNTED_SHARE
from udcbench.engine.runs import STORE
from udcbench.engine.store import load_results
from udcbench.reproduce import plan_study
from udcbench.workspace import Workspace

from _common import machine, merge_previous, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--seed", type=int, default=0, help="the study's seed (reproduce --seeds)")
    parser.add_argument("--workspace", type=Path, help="where to run (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.workspace or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "UDCBENCH_CPU_BF16": "0", "UDCBENCH_DATA": str(root / "data"),
               "UDCBENCH_RUNS": str(root / "runs"), "UDCBENCH_RESULTS": str(root / "results"),
               "UDCBENCH_CACHE": str(root / ".udcbench-cache")}
        plan = plan_study(args.preset, Workspace(root / "data", root / "runs", root / "results",
                                                 root / ".udcbench-cache"))
        before = reference_speed()
        start = time.perf_counter()
        with open(root / "reproduce.log", "w") as log:
            subprocess.run([sys.executable, "-m", "udcbench", "reproduce", "--preset", args.preset, "--seeds",
                            str(args.seed)], cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
        minutes = (time.perf_counter() - start) / 60
        after = reference_speed()
        records = [r["record"] for r in load_results(root / "runs" / STORE) if r["kind"] == "train"]
    speed = (before + after) / 2
    report(f"{args.preset}_study", f"udcbench reproduce --preset {args.preset}: test accuracy per run",
           merge_previous(f"{args.preset}_study", study_rows(records, args.seed, speed), ("seed", "method",
                                                                                          "condition")))
    units = minutes * 60 * speed
    row = {"preset": args.preset, "seed": args.seed, "machine": machine(), "minutes": minutes,
           "resnet18_img_s": speed,
           "resnet18_img_s_before": before, "resnet18_img_s_after": after, "units": units,
           "plan_units": plan.units, "measured_vs_plan": units / plan.units,
           "measured_vs_counted_items": units / (plan.units / (1 + UNCOUNTED_SHARE)),
           "minutes_at_reference": units / REFERENCE_SPEED / 60, "reference_img_s": REFERENCE_SPEED,
           "budget_minutes": QUICK_BUDGET_MINUTES if args.preset == "quick" else ""}
    report("reproduce_time", f"udcbench reproduce --preset {args.preset}, fp32",
           merge_previous("reproduce_time", [row], ("preset", "seed", "machine")))


def study_rows(records: list[dict], seed: int, speed: float) -> list[dict]:
    """One row per run of the study: its test accuracy at the epoch chosen on validation, the drop from the same
    method's clean run, and how it trained."""
    clean = {r["method"]: r for r in records if r["condition"] == "clean"}
    rows = []
    for r in sorted(records, key=lambda r: (r["condition"] != "clean", r["condition"], r["method"])):
        accuracy, val = r["test_at_best"]["accuracy"], r["val_at_best"]["accuracy"]
        base = clean.get(r["method"]) if r["condition"] != "clean" else None
        drop = "" if base is None else 100 * (base["test_at_best"]["accuracy"] - accuracy)
        val_drop = "" if base is None else 100 * (base["val_at_best"]["accuracy"] - val)
        rows.append({"seed": seed, "method": r["method"], "condition": r["condition"],
                     "accuracy": 100 * accuracy, "drop": drop, "val_accuracy": 100 * val, "val_drop": val_drop,
                     "epochs": r["epochs"],
                     "input_size": r["input_size"], "init": Path(str(r["init"])).name, "precision": r["precision"],
                     "minutes": r["minutes"], "machine": machine(), "resnet18_img_s": speed,
                     "commit": r.get("git_commit") or ""})
    return rows


if __name__ == "__main__":
    main()
