"""Accuracy of every method on real FERPlus with the ``cpu`` preset, clean and UDC.

    python benchmarks/fer_accuracy.py [--methods resnet18 scn ...] [--conditions clean toled poled]
                                      [--workspace ../bench] [--seeds 0] [--tag NAME]
                                      [--set KEY=VALUE --variant NAME]
    python benchmarks/fer_accuracy.py --splits-only [--tag NAME]

Trains on FER2013Train (validation: a stratified 10 % of it), tests on FER2013Valid (majority
labels, 8 classes). Every row names the commit that trained it, its validation accuracy (what any choice
reads) and, for LRDif, which model and head (``model``); ``--set`` with ``--variant NAME`` trains a named variant
(e.g. ``--set method_args.head=bypass --variant bypass``) into its own run folders and rows. UDC data is
synthesised first with ``udcbench synth`` when missing. Runs that
already finished are read back, so the script can be stopped and started again. Writes the table
(method, condition, accuracy, mean class accuracy, minutes, precision) to benchmarks/results/fer_accuracy.csv,
and the drop from clean to each UDC condition per method. ``--tag NAME`` writes fer_accuracy-NAME.csv
instead (e.g. another workspace with a new draw of the presets) and takes the drop from that file's clean
rows, or from fer_accuracy.csv's where it has none. Every row names the split it was tested on (``tested_on``)
and the part that chose its epoch (``selected_on``), so rows tested on FER2013Valid are never set beside rows
tested on FER2013Test; ``--splits-only`` adds them to rows written before these columns, from the FERPlus
adapter's split plan of ``--src`` (trains nothing).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from functools import cache
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
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="a recipe change (udcbench train --set), e.g. method_args.head=bypass; needs --variant")
    parser.add_argument("--variant", default="", help="the rows' variant name (and the runs' --tag)")
    parser.add_argument("--splits-only", action="store_true", help="add tested_on / selected_on to the rows "
                        "written before them, train nothing")
    args = parser.parse_args()
    if args.overrides and not args.variant:
        parser.error("--set needs --variant NAME (the rows and the run folders are named by it)")
    if args.splits_only:
        write(args, [])
        return
    ws = args.workspace.resolve()
    prepare_data(ws, args.src, args.conditions)
    rows = []
    for method in args.methods:
        for condition in args.conditions:
            for seed in args.seeds:
                tag = f"-{args.variant}" if args.variant else ""
                run = ws / "runs" / PRESET_FOLDERS[condition] / f"{method}-{args.preset}-s{seed}{tag}"
                if not (run / "results.json").is_file():
                    extra = ["--resume"] if (run / "last.pt").is_file() else []
                    changes = [a for o in args.overrides for a in ("--set", o)]
                    variant = ["--tag", args.variant] if args.variant else []
                    udcbench("train", method, "--data", str(ws / "data" / PRESET_FOLDERS[condition]), "--preset",
                             args.preset, "--seed", str(seed), *changes, *variant, *extra, cwd=ws)
                record = json.loads((run / "results.json").read_text())
                best = record["test_at_best"]
                rows.append({"method": method, "variant": args.variant, "condition": condition, "seed": seed,
                             "accuracy": 100 * best["accuracy"],
                             "accuracy_last": 100 * record["test_at_last"]["accuracy"],
                             "mean_class_accuracy": 100 * best["mean_class_accuracy"], "minutes": record["minutes"],
                             "best_epoch": record["best_epoch"], "init": record["init"],
                             "precision": record.get("precision", ""),
                             "data_manifest": (record.get("dataset_manifest_sha256") or "")[:12],
                             "tested_on": record["test_split"], "selected_on": record["validation"],
                             "val_accuracy": 100 * record["val_at_best"]["accuracy"],
                             "model": (record.get("notes") or {}).get("model", ""),
                             "commit": record.get("git_commit") or ""})
    write(args, rows)


@cache
def split_columns(src: Path, seed: int) -> dict:
    """The split a FERPlus run of ``seed`` at the cpu preset is tested on and the part that chose its epoch: the
    adapter's split plan of the data at ``src``, as the run made it."""
    from udcbench.config import TrainConfig
    from udcbench.datasets import create_dataset
    from udcbench.engine.data import plan_splits

    plan = plan_splits(create_dataset("ferplus", src), TrainConfig().val_fraction, seed)
    return {"tested_on": plan.test_split, "selected_on": plan.val_source}


def write(args: argparse.Namespace, rows: list[dict]) -> None:
    """``rows`` merged into the CSV (the split columns filled where missing), with each row's drop from clean."""
    name = f"fer_accuracy-{args.tag}" if args.tag else "fer_accuracy"
    rows = merge_previous(name, rows, key=("method", "variant", "condition", "seed"))
    for r in rows:
        if not r.get("tested_on"):
            r.update(split_columns(args.src, int(r["seed"])))
    reference = read_rows("fer_accuracy") if args.tag else []
    clean_acc = {(r["method"], r.get("variant", ""), str(r["seed"])): float(r["accuracy"])
                 for r in reference + rows if r["condition"] == "clean"}
    for r in rows:
        base = clean_acc.get((r["method"], r.get("variant", ""), str(r["seed"])))
        r["drop_from_clean"] = "" if base is None or r["condition"] == "clean" else base - float(r["accuracy"])
    report(name, f"FERPlus ({args.preset} preset; test: FER2013Valid)", rows)


if __name__ == "__main__":
    main()
