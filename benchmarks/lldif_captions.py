"""LLDif's caption ablation on LL-FERPlus: the brightness captions in the prior, on and off.

    python benchmarks/lldif_captions.py [--workspace ../bench] [--seed 0] [--preset cpu]

Trains ``udcbench train lldif --data data/ll-ferplus --set method_args.captions=false --tag nocap`` in the
benchmark workspace (its own stage 1 with it, ``lldif-s1-<preset>-s<seed>-nocap``; LL-FERPlus is synthesised
first when missing) and sets it beside the captioned run of the same seed: the workspace's own run folder
when it has one, else that seed's ``lldif`` row of benchmarks/results/fer_accuracy.csv, taken only when its
data manifest is the same draw. Writes benchmarks/results/lldif_captions.csv: accuracy and mean class
accuracy at the epoch chosen on validation, minutes (stage 2, and stage 1 where known), and the difference.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from udcbench.files import read_json

from _common import FERPLUS, read_rows, report
from fer_accuracy import PRESET_FOLDERS, prepare_data, udcbench

TAG = "nocap"


def run_row(captions: bool, record: dict, stage1: dict | None) -> dict:
    best = record["test_at_best"]
    return {"captions": "on" if captions else "off", "seed": record["seed"],
            "accuracy": 100 * best["accuracy"], "mean_class_accuracy": 100 * best["mean_class_accuracy"],
            "minutes": record["minutes"], "stage1_minutes": stage1["minutes"] if stage1 else "",
            "stage1_oracle_accuracy": 100 * stage1["test_at_best"]["accuracy"] if stage1 else "",
            "source": "run folder", "data_manifest": (record.get("dataset_manifest_sha256") or "")[:12]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=Path(__file__).resolve().parents[2] / "bench")
    parser.add_argument("--src", type=Path, default=FERPLUS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", default="cpu")
    args = parser.parse_args()
    ws = args.workspace.resolve()
    prepare_data(ws, args.src, ["lowlight"])
    data = ws / "data" / PRESET_FOLDERS["lowlight"]
    runs = ws / "runs" / data.name
    name = f"lldif-{args.preset}-s{args.seed}"
    off = runs / f"{name}-{TAG}"
    if not (off / "results.json").is_file():
        extra = ["--resume"] if (off / "last.pt").is_file() else []
        udcbench("train", "lldif", "--data", str(data), "--preset", args.preset, "--seed", str(args.seed),
                 "--set", "method_args.captions=false", "--tag", TAG, *extra, cwd=ws)
    record = read_json(off / "results.json")
    rows = [run_row(False, record, read_json(Path(record["notes"]["stage1_run"]) / "results.json"))]
    on = read_json(runs / name / "results.json")
    if on is not None:
        rows.insert(0, run_row(True, on, read_json(Path(on["notes"]["stage1_run"]) / "results.json")))
    else:
        match = [r for r in read_rows("fer_accuracy") if (r["method"], r["condition"], r["seed"]) ==
                 ("lldif", "lowlight", str(args.seed)) and r["data_manifest"] == rows[0]["data_manifest"]]
        if not match:
            sys.exit(f"no captioned lldif run of seed {args.seed} on this draw: run benchmarks/fer_accuracy.py "
                     f"--methods lldif --conditions lowlight --seeds {args.seed} first")
        r = match[0]
        rows.insert(0, {"captions": "on", "seed": args.seed, "accuracy": float(r["accuracy"]),
                        "mean_class_accuracy": float(r["mean_class_accuracy"]), "minutes": float(r["minutes"]),
                        "stage1_minutes": "", "stage1_oracle_accuracy": "", "source": "fer_accuracy.csv",
                        "data_manifest": r["data_manifest"]})
    for key in ("accuracy", "mean_class_accuracy"):
        rows[1][f"{key}_change"] = rows[1][key] - rows[0][key]
    report("lldif_captions", f"LLDif captions on / off, LL-FERPlus ({args.preset} preset; test: FER2013Valid)",
           rows)


if __name__ == "__main__":
    main()
