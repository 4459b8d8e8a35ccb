"""What stage 1 should hand stage 2: LRDif trained with and without stage 1's label dropout, on a short budget.

    python benchmarks/lrdif_stage1.py [--data ../bench/data/udc-ferplus] [--steps 150] [--dropout 0 0.5]

For each label-dropout rate, ``udcbench train lrdif`` runs stage 1 and then stage 2 at the ``cpu`` recipe with
each stage cut to one epoch of ``--steps`` steps (one-cycle over those steps). Reported per rate: the
oracle's validation accuracy (label in), stage 2's validation accuracy (no label; model selection's split:
the test split is not looked at), and the minutes of each stage. Writes benchmarks/results/lrdif_stage1.csv.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from _common import report

BENCH = Path(__file__).resolve().parents[2] / "bench"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=BENCH / "data" / "udc-ferplus")
    parser.add_argument("--out", type=Path, default=BENCH / "runs-stage1")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--dropout", type=float, nargs="+", default=[0.0, 0.5])
    args = parser.parse_args()
    rows = []
    for rate in args.dropout:
        out = args.out / f"dropout{rate:g}"
        stage2 = out / args.data.name / "lrdif-cpu-s0"
        if not (stage2 / "results.json").is_file():  # stopped before: stage 1 resumes by itself, stage 2 on --resume
            resume = ["--resume"] if (stage2 / "last.pt").is_file() else []
            subprocess.run([sys.executable, "-m", "udcbench", "train", "lrdif", "--data", str(args.data), "--out",
                            str(out), "--set", "epochs=1", "--set", f"max_steps={args.steps}", "--set",
                            f"method_args.label_dropout={rate}", *resume], cwd=BENCH, check=True)
        one = json.loads((out / args.data.name / "lrdif-s1-cpu-s0" / "results.json").read_text())
        two = json.loads((stage2 / "results.json").read_text())
        rows.append({"label_dropout": rate, "steps_per_stage": args.steps,
                     "oracle_val_accuracy": 100 * one["val_at_best"]["accuracy"],
                     "stage2_val_accuracy": 100 * two["val_at_best"]["accuracy"],
                     "stage1_minutes": one["minutes"], "stage2_minutes": two["minutes"]})
    report("lrdif_stage1", f"LRDif stage 1 label dropout ({args.data.name}, {args.steps} steps per stage)", rows)


if __name__ == "__main__":
    main()
