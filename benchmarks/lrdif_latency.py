"""Inference latency per image of LRDif (T diffusion steps) as a ratio to the plain ResNet-18.

    python benchmarks/lrdif_latency.py [--repeats 30] [--threads 2]

Both models run in float32 eval mode on the same input size, at the ``cpu`` preset's (64 px) and the
``paper`` preset's (112 px) input size; LRDif is the same model at both (ResNet-18 trunk + UDCformer +
the diffusion's reverse chain), with T = 4 (the paper's) and other step counts. Latency is the median
over ``--repeats`` single-image
forward passes; throughput is measured at batch 64. Ratios are to ResNet-18 at the same size,
measured in the same run (compare ratios: the machine is shared).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from udcbench.methods import create_method, get_method

from _common import report


def latency_ms(model: torch.nn.Module, size: int, repeats: int) -> float:
    x = torch.randn(1, 3, size, size)
    times = []
    with torch.no_grad():
        for _ in range(3):
            model(x)
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def throughput(model: torch.nn.Module, size: int, batch: int = 64, repeats: int = 3) -> float:
    x = torch.randn(batch, 3, size, size)
    with torch.no_grad():
        model(x)
        start = time.perf_counter()
        for _ in range(repeats):
            model(x)
    return repeats * batch / (time.perf_counter() - start)


def build(name: str, preset: str, steps: int | None = None) -> tuple[torch.nn.Module, int]:
    torch.manual_seed(0)
    config = get_method(name).config(preset)
    if steps is not None:
        config.method_args["steps"] = steps
    model = create_method(name, 8, config).eval()
    return model, config.input_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 4, 8])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for preset in ("cpu", "paper"):
        lrdif_size = get_method("lrdif").config(preset).input_size
        base, _ = build("resnet18", preset)
        base_ms, base_rate = latency_ms(base, lrdif_size, args.repeats), throughput(base, lrdif_size)
        rows.append({"model": "resnet18", "preset": preset, "input_size": lrdif_size, "steps": "",
                     "params_M": sum(p.numel() for p in base.parameters()) / 1e6, "latency_ms": base_ms,
                     "img_s_batch64": base_rate, "latency_vs_resnet18": 1.0, "throughput_vs_resnet18": 1.0})
        for steps in args.steps:
            model, size = build("lrdif", preset, steps)
            ms, rate = latency_ms(model, size, args.repeats), throughput(model, size)
            rows.append({"model": "lrdif", "preset": preset, "input_size": size, "steps": steps,
                         "params_M": sum(p.numel() for p in model.parameters()) / 1e6, "latency_ms": ms,
                         "img_s_batch64": rate, "latency_vs_resnet18": ms / base_ms,
                         "throughput_vs_resnet18": rate / base_rate})
    report("lrdif_latency", f"LRDif inference latency vs ResNet-18 (float32, {args.threads} threads)", rows)


if __name__ == "__main__":
    main()
