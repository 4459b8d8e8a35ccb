"""The cost of one full UDC-C sweep (3 panels x 5 severities + clean) of one ResNet-18 run on the FERPlus test split:
with a cold cache (every degraded test set synthesised, the clean set decoded) and with a warm one (evaluation
only), and the synthesis share of the cold sweep. The issue's bar: at most 5 minutes cold, 1 minute warm, fp32,
on 2 cores.

    python benchmarks/robustness_speed.py --run WORKSPACE/runs/ferplus/resnet18-cpu-s0 [--data DIR] [--precision fp32]

The cold sweep uses a fresh cache folder (removed afterwards); the warm sweeps read it, in fp32 and in the run's own
precision (bf16 where the run trained in it and the CPU computes it natively). ``forward only`` is the ceiling: the
model's forward pass alone over as many images as a sweep scores (16 x the test split), random inputs, fp32. Writes
``benchmarks/results/robustness_speed.csv``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

from udcbench.datasets import create_dataset
from udcbench.engine.data import decode_workers, forget_decoded
from udcbench.engine.records import git_commit
from udcbench.robustness import DEFAULT_PANELS, load_model, load_panels, sweep

from _common import FERPLUS, machine, report


def forward_only(run: Path, images: int, batch: int = 256) -> dict:
    """The fp32 forward pass of the run's model alone over ``images`` random inputs: the sweep's ceiling."""
    from udcbench.predict import Predictor

    predictor = Predictor.load(run, "cpu")
    model, size = predictor.model.float().eval(), predictor.config.input_size
    x = torch.rand(batch, 3, size, size)
    with torch.no_grad():
        model(x)
        start = time.perf_counter()
        for i in range(0, images, batch):
            model(x[: min(batch, images - i)])
    seconds = time.perf_counter() - start
    return {"measure": "forward only (the ceiling)", "images": images, "input_size": size, "precision": "fp32",
            "seconds": round(seconds, 1), "minutes": round(seconds / 60, 2), "images_per_s": round(images / seconds),
            "threads": torch.get_num_threads(), "machine": machine(), "run": run.name, "commit": git_commit() or ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="A ResNet-18 run folder trained on FERPlus.")
    parser.add_argument("--data", type=Path, default=FERPLUS, help="The clean FERPlus folder.")
    args = parser.parse_args()
    adapter = create_dataset("ferplus", args.data)
    panels = load_panels(list(DEFAULT_PANELS))
    cache = Path(tempfile.mkdtemp(prefix="udcbench-robustness-speed-"))
    rows = []
    try:
        for state, precision in (("cold", "fp32"), ("warm", "fp32"), ("warm", "run")):
            forget_decoded()
            model = load_model(args.run, "cpu", precision)
            result = sweep(model, adapter, panels, (1, 2, 3, 4, 5), cache, workers=decode_workers())
            seconds = result.seconds
            rows.append({
                "measure": f"sweep, {state} cache", "cells": len(result.cells), "images": result.images,
                "input_size": model.input_size, "precision": model.info["precision"],
                "synthesised": result.synthesised,
                "seconds": round(seconds["total"], 1), "minutes": round(seconds["total"] / 60, 2),
                "synthesis_seconds": round(seconds["synthesis"], 1),
                "evaluation_seconds": round(seconds["evaluation"], 1),
                "synthesis_share": round(seconds["synthesis"] / seconds["total"], 3),
                "images_per_s": round(len(result.cells) * result.images / seconds["evaluation"]),
                "bar_minutes": 5 if state == "cold" else 1,
                "threads": torch.get_num_threads(), "machine": machine(), "run": args.run.name,
                "commit": git_commit() or "",
            })
        rows.append(forward_only(args.run, 16 * result.images))
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    report("robustness_speed", "A full UDC-C sweep of one run on FERPlus's test split", rows)


if __name__ == "__main__":
    main()
