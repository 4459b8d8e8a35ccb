"""Training and inference throughput of every method on this CPU at the cpu preset's input size.

    python benchmarks/method_speed.py [--size 64] [--batch 128] [--steps 6]

Each method runs ``--steps`` training steps (the engine's precision and memory format: bf16 autocast
where the CPU has native bf16, NHWC for the CNNs) and inference on
the same random batch; figures are images/s and the ratio to the plain ResNet-18 measured in the
same run (the machine is shared and noisy: compare ratios, not absolute numbers). Params and
GMACs (one image) come from torch's FLOP counter.
"""

from __future__ import annotations

import argparse
import time

import torch

from baselines.base import Batch
from udcbench.engine.trainer import count_macs, runtime
from udcbench.methods import BASELINES, create_method, get_method

from _common import report


def measure(name: str, size: int, batch: int, steps: int) -> dict:
    torch.manual_seed(0)
    config = get_method(name).config("cpu")
    config.input_size = size
    rt = runtime("cpu")
    model = rt.place(create_method(name, 8, config))
    model.set_schedule(config.epochs)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, size, size)
    data = Batch(x, torch.arange(batch) % 8, torch.arange(batch))

    def train_step():
        with rt.autocast(config.amp):
            out = model.training_step(data, 0)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()

    model.train()
    train_step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        train_step()
    train_rate = steps * batch / (time.perf_counter() - start)
    model.eval()
    with torch.no_grad(), rt.autocast(config.amp):
        model(x)
        start = time.perf_counter()
        for _ in range(steps):
            model(x)
        infer_rate = steps * batch / (time.perf_counter() - start)
    return {"method": name, "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
            "GMACs": count_macs(model, size, torch.device("cpu")) / 1e9, "train_img_s": train_rate,
            "infer_img_s": infer_rate, "precision": rt.precision(config.amp)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    rows = [measure(name, args.size, args.batch, args.steps) for name in BASELINES]
    base = rows[0]
    for row in rows:
        row["train_vs_resnet18"] = row["train_img_s"] / base["train_img_s"]
        row["infer_vs_resnet18"] = row["infer_img_s"] / base["infer_img_s"]
    report("method_speed", f"Method throughput on CPU at {args.size} px, batch {args.batch}", rows)


if __name__ == "__main__":
    main()
