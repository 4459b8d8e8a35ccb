"""Synthetic faces: generator throughput, and how separable the classes are for a ResNet-18.

    python benchmarks/synthetic_faces.py [--epochs 6]

1. Images/s of the generator alone (batches in memory) and of ``udcbench generate`` (draw + PNG
   write) with 1 and 2 worker processes.
2. A torchvision ResNet-18 trained from scratch for a few epochs (64 x 64 faces, 2,800 train /
   700 test, AdamW, bf16 autocast on CPU): test accuracy must land clearly below 100 %.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch
import torchvision

from udcbench.datasets.generate import generate_synthetic
from udcbench.datasets.synthetic_faces import SyntheticFaceGenerator

from _common import report


def generator_speed(n: int = 3000) -> float:
    gen = SyntheticFaceGenerator(seed=0)
    gen.draw_batch("train", range(50))
    start = time.perf_counter()
    for s in range(0, n, 250):
        gen.draw_batch("train", range(s, min(s + 250, n)))
    return n / (time.perf_counter() - start)


def generate_speed(workers: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        stats = generate_synthetic(tmp + "/faces", 2800, 700, workers=workers)
    return stats["images_per_second"]


def resnet_accuracy(epochs: int, size: int = 64) -> tuple[float, float, float]:
    torch.manual_seed(0)
    gen = SyntheticFaceGenerator(seed=0, size=size)

    def tensors(split: str, n: int):
        faces = gen.draw_batch(split, range(n))
        x = torch.from_numpy(np.stack([f.image for f in faces])).permute(0, 3, 1, 2).float() / 255.0
        x = (x - 0.5) / 0.25
        return x, torch.tensor([f.label for f in faces])

    x, y = tensors("train", 2800)
    xt, yt = tensors("test", 700)
    model = torchvision.models.resnet18(num_classes=7)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    steps = epochs * (len(x) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x))
        for i in range(0, len(x) - 63, 64):
            idx = order[i : i + 64]
            batch = x[idx]
            flip = torch.rand(len(idx)) < 0.5
            batch[flip] = batch[flip].flip(-1)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = torch.nn.functional.cross_entropy(model(batch), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    minutes = (time.perf_counter() - start) / 60
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        train_acc = (model(x[:700]).argmax(1) == y[:700]).float().mean().item()
        test_acc = (model(xt).argmax(1) == yt).float().mean().item()
    return train_acc, test_acc, minutes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    rows = [
        {"measure": "generator alone, 1 process", "value": generator_speed(), "unit": "images/s"},
        {"measure": "udcbench generate (draw + PNG), 1 worker", "value": generate_speed(1), "unit": "images/s"},
        {"measure": "udcbench generate (draw + PNG), 2 workers", "value": generate_speed(2), "unit": "images/s"},
    ]
    train_acc, test_acc, minutes = resnet_accuracy(args.epochs)
    rows += [
        {"measure": f"ResNet-18 scratch, {args.epochs} epochs, 64 px: train accuracy", "value": train_acc, "unit": ""},
        {"measure": f"ResNet-18 scratch, {args.epochs} epochs, 64 px: test accuracy", "value": test_acc, "unit": ""},
        {"measure": "ResNet-18 training time", "value": minutes, "unit": "minutes"},
    ]
    report("synthetic_faces", "Synthetic faces", rows)


if __name__ == "__main__":
    main()
