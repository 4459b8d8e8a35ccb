"""The levers that shaped the quick study: what each method reaches on the built-in faces with and without them.

    python benchmarks/quick_levers.py [--workspace DIR] [--seeds 0 1]

Draws the quick study's clean faces and trains, at the ``quick`` preset in fp32 from the study's identity
pre-training, every method of the study at three learning rates of the quick recipe, and the control from
pre-trainings of 2, 4 and 6 epochs (the rows of
the landmark pre-training, which read test accuracy, are kept as history: ``pretraining`` landmarks). Writes
``benchmarks/results/quick_levers.csv``: one row per lever, method and seed, with the test accuracy at the epoch
chosen on validation, and the validation accuracy itself: a lever is chosen on ``val_accuracy`` (the part carved from
train), never on the test accuracy, which is reported beside it. About 10 minutes per seed on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from functools import cache
from pathlib import Path

from udcbench.budget import QUICK_BUDGET_MINUTES

from _common import machine, merge_previous, read_rows, report

os.environ["UDCBENCH_CPU_BF16"] = "0"  # fp32, as on the reference machine
os.environ.setdefault("UDCBENCH_QUIET", "1")

#: (lever, pre-training epochs or None for scratch, input size, method, --set overrides). The levers of the
#: identity pre-training (the study's since issue 41): the quick recipe's learning rate for every method of the
#: study (one shared rate: the highest mean validation accuracy over methods and seeds; 2e-3 was the recipe's when
#: they were measured, 1e-3 since), and the pre-training's length (2, 4 or 6 epochs), read on the control.
STUDY_METHODS = ("resnet18", "scn", "rul", "eac", "dan", "lrdif")
RATES = {"lr 1e-3": ["lr=0.001"], "lr 2e-3": ["lr=0.002"], "lr 4e-3": ["lr=0.004"]}
LEVERS = [
    (f"identity pre-training 4 epochs, {name}", 4, 48, method, overrides)
    for method in STUDY_METHODS for name, overrides in RATES.items()
] + [(f"identity pre-training {e} epochs, lr 2e-3", e, 48, "resnet18", ["lr=0.002"]) for e in (2, 6)]
#: What each choice compares (lever names) and over which methods' runs.
CHOICES = {
    "learning rate": ([f"identity pre-training 4 epochs, {name}" for name in RATES], STUDY_METHODS),
    "pre-training length": ([f"identity pre-training {e} epochs, lr 2e-3" for e in (2, 4, 6)], ("resnet18",)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, help="where to train (default: a temporary folder)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs-from", type=Path, nargs="+", metavar="WORKSPACE",
                        help="instead of training: each epoch's validation and test accuracy of the multi-epoch runs "
                             "(EAC's two) of finished quick studies (reproduce_time.py --workspace)")
    parser.add_argument("--choose", action="store_true", help="instead of training: the shared learning rate and "
                        "the pre-training's length, from the rows already measured")
    args = parser.parse_args()
    if args.choose:
        choose(read_rows("quick_levers"))
        return
    if args.epochs_from:
        report("quick_levers", "The quick study's levers: validation (chooses) and test accuracy (%), fp32, quick "
               "preset", merge_previous("quick_levers", epoch_rows(args.epochs_from), ("lever", "method", "seed")))
        return

    from udcbench.datasets import create_dataset
    from udcbench.datasets.generate import generate_synthetic
    from udcbench.engine.runs import train_method
    from udcbench.pretrain import FacePretraining, pretrained_trunk

    with tempfile.TemporaryDirectory() as tmp:
        root = args.workspace or Path(tmp)
        faces = root / "data" / "synthetic"
        if not faces.is_dir():
            generate_synthetic(faces)
        adapter = create_dataset("imagefolder", faces)
        rows = []
        for seed in args.seeds:
            for lever, epochs, size, method, overrides in LEVERS:
                weights = None
                if epochs is not None:
                    recipe = FacePretraining(epochs=epochs, input_size=size)  # the identity task
                    weights = pretrained_trunk(root / "pretrained" / f"{recipe.folder_name()}-e{epochs}", recipe,
                                               log=lambda _: None)
                tag = "-".join(o.replace("=", "") for o in overrides) + (f"-pre{epochs}" if epochs else "-scratch")
                record = train_method(method, adapter, root / "runs", preset="quick", seed=seed, overrides=overrides,
                                      weights=weights, tag=tag.strip("-"), skip_finished=True,
                                      cache_dir=root / "cache", log=lambda _: None)
                rows.append({"lever": lever, "pretraining": "identity" if epochs else "none", "method": method,
                             "seed": seed, "input_size": record["input_size"],
                             "epochs": record["epochs"], "batch_size": _batch(overrides),
                             "val_accuracy": 100 * record["val_at_best"]["accuracy"],
                             "accuracy": 100 * record["test_at_best"]["accuracy"], "precision": record["precision"],
                             "selected_on": "val_accuracy", "commit": record.get("git_commit") or "",
                             "machine": machine()})
                print(f"{lever}: {method} seed {seed}: val {rows[-1]['val_accuracy']:.2f} %", flush=True)
    rows = merge_previous("quick_levers", rows, ("lever", "method", "seed"))
    report("quick_levers", "The quick study's levers: validation (chooses) and test accuracy (%), fp32, quick preset",
           rows)
    choose(rows)


def choose(rows: list[dict]) -> None:
    """Each lever's mean validation accuracy over the runs of its choice (the learning rates over every method of the
    study, the pre-training's lengths over the control) and the study's planned minutes with it; the highest mean
    of each choice among the levers that fit the budget and were measured on as many runs is marked ``chosen``:
    ``benchmarks/results/quick_choice.csv``. Test accuracy is never read."""
    out = []
    for kind, (levers, methods) in CHOICES.items():
        means = []
        for lever in levers:
            picked = [float(r["val_accuracy"]) for r in rows
                      if r["lever"] == lever and r["method"] in methods and r.get("val_accuracy")]
            epochs = int(lever.split()[2])  # "identity pre-training N epochs, ..."
            means.append({"choice": kind, "lever": lever, "methods": " ".join(methods), "runs": len(picked),
                          "mean_val_accuracy": sum(picked) / len(picked) if picked else "",
                          "study_minutes_at_reference": study_minutes(epochs),
                          "budget_minutes": QUICK_BUDGET_MINUTES})
        most = max(m["runs"] for m in means)
        fit = [m for m in means
               if most and m["runs"] == most and m["study_minutes_at_reference"] <= QUICK_BUDGET_MINUTES]
        best = max(fit, key=lambda m: m["mean_val_accuracy"], default=None)
        out += [{**m, "chosen": int(m is best)} for m in means]
    report("quick_choice", "The quick study's choices: mean validation accuracy (%) per lever", out)


@cache
def study_minutes(pretrain_epochs: int) -> float:
    """The quick study's planned minutes at the reference speed (``reproduce --dry-run``) with a face pre-training of
    ``pretrain_epochs``."""
    from dataclasses import replace
    from unittest import mock

    from udcbench import reproduce
    from udcbench.workspace import Workspace

    study = reproduce.STUDY_PRESETS["quick"]
    longer = replace(study, pretrain=replace(study.pretrain, epochs=pretrain_epochs))
    with tempfile.TemporaryDirectory() as tmp, mock.patch.dict(reproduce.STUDY_PRESETS, quick=longer):
        root = Path(tmp)
        return reproduce.plan_study("quick", Workspace(root / "data", root / "runs", root / "results",
                                                       root / "cache")).minutes()


def epoch_rows(workspaces: list[Path]) -> list[dict]:
    """One row per epoch of each clean run that trained more than one epoch in these quick-study workspaces: the
    epochs lever read on validation from the runs themselves (``metrics.jsonl``)."""
    import json

    rows = []
    for ws in workspaces:
        for metrics in sorted((ws / "runs" / "synthetic").glob("*-quick-s*/metrics.jsonl")):
            record = json.loads((metrics.parent / "results.json").read_text())
            config = json.loads((metrics.parent / "config.json").read_text())
            epochs = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
            if len(epochs) < 2:
                continue
            for e in epochs:
                rows.append({"lever": f"identity pre-training 4 epochs, {record['method']} after epoch {e['epoch']} "
                                      f"of {len(epochs)}", "pretraining": "identity", "method": record["method"],
                             "seed": record["seed"], "input_size": record["input_size"], "epochs": e["epoch"],
                             "batch_size": config["batch_size"],
                             "val_accuracy": 100 * e["val_accuracy"], "accuracy": 100 * e["test_accuracy"],
                             "precision": record["precision"], "selected_on": "val_accuracy",
                             "commit": record.get("git_commit") or "", "machine": machine()})
    return rows


def _batch(overrides: list[str]) -> int:
    return next((int(o.split("=")[1]) for o in overrides if o.startswith("batch_size=")), 64)


if __name__ == "__main__":
    main()
