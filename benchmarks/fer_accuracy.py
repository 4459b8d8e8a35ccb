"""Accuracy of every method on real FERPlus with the ``cpu`` preset, clean and UDC.

    python benchmarks/fer_accuracy.py [--methods resnet18 scn ...] [--conditions clean toled poled]
                                      [--workspace ../bench] [--seeds 0] [--tag NAME]

Trains on FER2013Train (validation: a stratified 10 % of it), tests on FER2013Valid (majority
labels, 8 classes). UDC data is synthesised first with ``udcbench synth`` when missing. Runs that
already finished are read back, so the script can be stopped and started again. Writes the table
(method, condition, accuracy, mean class accuracy, minutes, precision) to benchmarks/results/fer_accuracy.csv,
and the drop from clean to each UDC condition per method. ``--tag NAME`` writes fer_accuracy-NAME.csv
instead (e.g. another workspace with a new draw of the presets) and takes the drop from that file's clean
rows, or from fer_accuracy.csv's where it has none.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from _common import FERPLUS, merge_previous, read_rows, report

PRESET_FOLDERS = {"clean": "ferplus", "toled": "udc-ferplus", "poled": "udc-poled-ferplus", "lowlight": "ll-ferplus"}


def udcbench(*args: str, cwd: Path) -> None:
    subprocess.run([sys.executable, "-m", "udcbench", *args], cwd=cwd, check=True)


def prepare_data(ws: Path, src: Path, conditions: list[str]) -> None:
    """``ws/data/ferplus`` linked to the real data, and each condition's copy synthesised when missing."""
    (ws / "data").mkdir(parents=True, exist_ok=True)
    clean = ws / "data" / "ferplus"
    if not clean.exists():
        clean.symlink_to(src.resolve())
    for condition in conditions:
        folder = ws / "data" / PRESET_FOLDERS[condition]
        if condition != "clean" and not (folder / "manifest.json").is_file():
            udcbench("synth", "ferplus", "--preset", condition, "--workers", "2", "--resume", cwd=ws)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["resnet18", "scn", "rul", "eac", "dan"])
    parser.add_argument("--conditions", nargs="+", default=["clean", "toled"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--workspace", type=Path, default=Path(__file__).resolve().parents[2] / "bench")
    parser.add_argument("--src", type=Path, default=FERPLUS)
    parser.add_argument("--tag", help="write fer_accuracy-TAG.csv (its own workspace's draws)")
    args = parser.parse_args()
    ws = args.workspace.resolve()
    prepare_data(ws, args.src, args.conditions)
    rows = []
    for method in args.methods:
        for condition in args.conditions:
            for seed in args.seeds:
                run = ws / "runs" / PRESET_FOLDERS[condition] / f"{method}-{args.preset}-s{seed}"
                if not (run / "results.json").is_file():
                    extra = ["--resume"] if (run / "last.pt").is_file() else []
                    udcbench("train", method, "--data", str(ws / "data" / PRESET_FOLDERS[condition]), "--preset",
                             args.preset, "--seed", str(seed), *extra, cwd=ws)
                record = json.loads((run / "results.json").read_text())
                best = record["test_at_best"]
                rows.append({"method": method, "condition": condition, "seed": seed,
                             "accuracy": 100 * best["accuracy"],
                             "accuracy_last": 100 * record["test_at_last"]["accuracy"],
                             "mean_class_accuracy": 100 * best["mean_class_accuracy"], "minutes": record["minutes"],
                             "best_epoch": record["best_epoch"], "init": record["init"],
                             "precision": record.get("precision", ""),
                             "data_manifest": (record.get("dataset_manifest_sha256") or "")[:12]})
    name = f"fer_accuracy-{args.tag}" if args.tag else "fer_accuracy"
    rows = merge_previous(name, rows, key=("method", "condition", "seed"))
    reference = read_rows("fer_accuracy") if args.tag else []
    clean_acc = {(r["method"], str(r["seed"])): float(r["accuracy"])
                 for r in reference + rows if r["condition"] == "clean"}
    for r in rows:
        base = clean_acc.get((r["method"], str(r["seed"])))
        r["drop_from_clean"] = "" if base is None or r["condition"] == "clean" else base - float(r["accuracy"])
    report(name, f"FERPlus ({args.preset} preset; test: FER2013Valid)", rows)


if __name__ == "__main__":
    main()
