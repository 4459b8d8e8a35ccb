"""The levers that shaped the quick study: what each method reaches on the built-in faces with and without them.

    python benchmarks/quick_levers.py [--workspace DIR] [--seeds 0 1]

Draws the quick study's clean faces and trains, at the ``quick`` preset in fp32, the methods the levers were
about: from scratch; from face pre-trainings of 2 and 4 epochs (``udcbench pretrain``); at 40 px; EAC in one
epoch, in one epoch at its official batch of 32, and in two (its quick recipe). Writes
``benchmarks/results/quick_levers.csv``: one row per lever, method and seed, with the test accuracy at the epoch
chosen on validation, and the validation accuracy itself: a lever is chosen on ``val_accuracy`` (the part carved from
train), never on the test accuracy, which is reported beside it. About 10 minutes per seed on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from _common import machine, merge_previous, report

os.environ["UDCBENCH_CPU_BF16"] = "0"  # fp32, as on the reference machine
os.environ.setdefault("UDCBENCH_QUIET", "1")

#: (lever, pre-training epochs or None for scratch, input size, method, --set overrides)
LEVERS = [
    ("from scratch", None, 48, "resnet18", []),
    ("from scratch", None, 48, "dan", []),
    ("from scratch", None, 48, "eac", []),
    ("from scratch", None, 48, "lrdif", []),
    ("pre-training 2 epochs", 2, 48, "resnet18", []),
    ("pre-training 4 epochs", 4, 48, "resnet18", []),
    ("pre-training 4 epochs", 4, 48, "dan", []),
    ("pre-training 4 epochs", 4, 48, "lrdif", []),
    ("pre-training 4 epochs, EAC 1 epoch", 4, 48, "eac", ["epochs=1"]),
    ("pre-training 4 epochs, EAC 1 epoch of batch 32", 4, 48, "eac", ["epochs=1", "batch_size=32"]),
    ("pre-training 4 epochs, EAC 2 epochs (quick)", 4, 48, "eac", []),
    ("pre-training 4 epochs at 40 px", 4, 40, "resnet18", ["input_size=40"]),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, help="where to train (default: a temporary folder)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()

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
                    recipe = FacePretraining(epochs=epochs, input_size=size)
                    weights = pretrained_trunk(root / "pretrained" / f"{recipe.folder_name()}-e{epochs}", recipe,
                                               log=lambda _: None)
                tag = "-".join(o.replace("=", "") for o in overrides) + (f"-pre{epochs}" if epochs else "-scratch")
                record = train_method(method, adapter, root / "runs", preset="quick", seed=seed, overrides=overrides,
                                      weights=weights, tag=tag.strip("-"), skip_finished=True,
                                      cache_dir=root / "cache", log=lambda _: None)
                rows.append({"lever": lever, "method": method, "seed": seed, "input_size": record["input_size"],
                             "epochs": record["epochs"], "batch_size": _batch(overrides),
                             "val_accuracy": 100 * record["val_at_best"]["accuracy"],
                             "accuracy": 100 * record["test_at_best"]["accuracy"], "precision": record["precision"],
                             "selected_on": "val_accuracy", "commit": record.get("git_commit") or "",
                             "machine": machine()})
                print(f"{lever}: {method} seed {seed}: {rows[-1]['accuracy']:.2f} %", flush=True)
    report("quick_levers", "The quick study's levers: test accuracy (%), fp32, built-in faces, quick preset",
           merge_previous("quick_levers", rows, ("lever", "method", "seed")))


def _batch(overrides: list[str]) -> int:
    return next((int(o.split("=")[1]) for o in overrides if o.startswith("batch_size=")), 64)


if __name__ == "__main__":
    main()
