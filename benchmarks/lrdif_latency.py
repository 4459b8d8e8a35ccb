"""Inference latency per image of LRDif (T diffusion steps) as a ratio to the plain ResNet-18.

    python benchmarks/lrdif_latency.py [--repeats 30] [--threads 2] [--modules] [--compile]

Both models run in float32 eval mode on the same input size, at the ``cpu`` preset's (64 px) and the
``paper`` preset's (112 px) input size; LRDif is the same model at both (ResNet-18 trunk + UDCformer +
the diffusion's reverse chain), with T = 4 (the paper's) and other step counts. Latency is the median
over ``--repeats`` single-image
forward passes; throughput is measured at batch 64. Ratios are to ResNet-18 at the same size,
measured in the same run (compare ratios: the machine is shared). ``--modules`` times LRDif's parts (the trunk,
the landmark network, FPEN_S2 with the reverse chain, the UDCformer, and the rest) at batch 1 instead, with
the number of ATen operator calls each makes (nested calls included, from torch.profiler). ``--compile`` times
both models through ``torch.compile`` too (lrdif_latency_compiled.csv).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from udcbench.methods import create_method, get_method

from _common import report


def median_ms(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` in ms, after three warm-up calls, without autograd."""
    times = []
    with torch.no_grad():
        for _ in range(3):
            fn()
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def latency_ms(model: torch.nn.Module, size: int, repeats: int) -> float:
    x = torch.randn(1, 3, size, size)
    return median_ms(lambda: model(x), repeats)


def aten_calls(fn) -> int:
    """ATen operator calls of one ``fn()`` (nested calls included)."""
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(event.count for event in prof.key_averages())


def module_rows(preset: str, repeats: int) -> list[dict]:
    """One image through LRDif (T = 4) part by part, each part timed alone on the inputs it gets in the model;
    ``rest`` is the whole model's latency minus the parts' (the glue between them)."""
    from baselines.backbone import trunk_maps

    model, size = build("lrdif", preset)
    base, _ = build("resnet18", preset)
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        maps = trunk_maps(model.trunk, x)
        pooled = maps[-1].mean(dim=(2, 3))
        landmarks = model.landmarks.features(x)
        z = model.estimate(pooled)
    parts = {"resnet18 (whole)": lambda: base(x), "lrdif (whole)": lambda: model(x),
             "trunk": lambda: trunk_maps(model.trunk, x), "landmark net": lambda: model.landmarks.features(x),
             "FPEN_S2 + reverse chain": lambda: model.estimate(pooled),
             "UDCformer": lambda: model.udcformer(maps, pooled, z, landmarks)}
    ms = {name: median_ms(fn, repeats) for name, fn in parts.items()}
    calls = {name: aten_calls(fn) for name, fn in parts.items()}
    ms["rest"] = ms["lrdif (whole)"] - sum(v for k, v in ms.items() if "whole" not in k)
    calls["rest"] = calls["lrdif (whole)"] - sum(v for k, v in calls.items() if "whole" not in k)
    base_ms = ms["resnet18 (whole)"]
    return [{"preset": preset, "input_size": size, "part": name, "latency_ms": v, "vs_resnet18": v / base_ms,
             "aten_calls": calls[name]} for name, v in ms.items()]


def compiled_rows(preset: str, repeats: int) -> list[dict]:
    """ResNet-18 and LRDif (T = 4), one image, eager and through ``torch.compile`` (after its first call), and
    each model in its faster mode against ResNet-18 in its faster one."""
    rows, eager, compiled = [], {}, {}
    size = get_method("lrdif").config(preset).input_size  # both at LRDif's input size
    for name in ("resnet18", "lrdif"):
        model, _ = build(name, preset)
        eager[name] = latency_ms(model, size, repeats)
        compiled[name] = latency_ms(torch.compile(model), size, repeats)  # compiled in the warm-up calls
        rows.append({"preset": preset, "input_size": size, "model": name, "eager_ms": eager[name],
                     "compiled_ms": compiled[name], "eager_vs_resnet18": eager[name] / eager["resnet18"],
                     "compiled_vs_resnet18": compiled[name] / compiled["resnet18"],
                     "faster_vs_resnet18_faster": min(eager[name], compiled[name])
                     / min(eager["resnet18"], compiled["resnet18"])})
    return rows


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
    # the fair model (the baselines' trunk) at every preset's input size: the paper preset's own model needs a
    # CLIP checkpoint (--clip), which a latency comparison on the shared trunk does not
    config.method_args.update(get_method(name).cpu_method_args if name.startswith("lrdif") else {})
    if steps is not None:
        config.method_args["steps"] = steps
    model = create_method(name, 8, config).eval()
    return model, config.input_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--modules", action="store_true",
                        help="time LRDif's parts at batch 1 instead (lrdif_latency_modules.csv)")
    parser.add_argument("--compile", action="store_true",
                        help="time both models eager and through torch.compile instead (lrdif_latency_compiled.csv)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.compile:
        rows = [row for preset in ("cpu", "paper") for row in compiled_rows(preset, args.repeats)]
        report("lrdif_latency_compiled", f"eager and torch.compile, one image (float32, {args.threads} threads)",
               rows)
        return
    if args.modules:
        rows = [row for preset in ("cpu", "paper") for row in module_rows(preset, args.repeats)]
        report("lrdif_latency_modules", f"LRDif's parts, one image (float32, {args.threads} threads)", rows)
        return
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
