"""Time the quick study end to end in fp32 and put it beside this machine's speed in the budget's unit.

    python benchmarks/reproduce_time.py [--preset quick] [--workspace DIR]

Measures the images/s at which this machine trains the unit's ResNet-18 (torchvision, 48 px, batch 64,
fp32; before and after the study, the mean is used), runs ``udcbench reproduce`` in a fresh workspace with
``UDCBENCH_CPU_BF16=0`` (amp off: fp32 everywhere, as on a CPU without native bf16), and prints the study's
minutes, its cost in units (minutes x speed), the plan's predicted cost (``--dry-run``), and the time
scaled to the reference machine (:data:`udcbench.budget.REFERENCE_SPEED` images/s). Writes
``benchmarks/results/reproduce_time.csv``.
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
from udcbench.reproduce import plan_study
from udcbench.workspace import Workspace

from _common import machine, merge_previous, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="quick")
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
            subprocess.run([sys.executable, "-m", "udcbench", "reproduce", "--preset", args.preset], cwd=root,
                           env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
        minutes = (time.perf_counter() - start) / 60
        after = reference_speed()
    speed = (before + after) / 2
    units = minutes * 60 * speed
    row = {"preset": args.preset, "machine": machine(), "minutes": minutes, "resnet18_img_s": speed,
           "resnet18_img_s_before": before, "resnet18_img_s_after": after, "units": units,
           "plan_units": plan.units, "measured_vs_plan": units / plan.units,
           "measured_vs_counted_items": units / (plan.units / (1 + UNCOUNTED_SHARE)),
           "minutes_at_reference": units / REFERENCE_SPEED / 60, "reference_img_s": REFERENCE_SPEED,
           "budget_minutes": QUICK_BUDGET_MINUTES if args.preset == "quick" else ""}
    report("reproduce_time", f"udcbench reproduce --preset {args.preset}, fp32",
           merge_previous("reproduce_time", [row], ("preset", "machine")))


if __name__ == "__main__":
    main()
