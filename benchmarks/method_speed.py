"""Training and inference throughput of every method on this CPU, and the cost table of study plans.

    python benchmarks/method_speed.py [--size 64] [--batch 128] [--steps 7] [--methods resnet18 dacl lrdif ...]
    python benchmarks/method_speed.py --cost-table [--sizes 32 48 64] [--only lrdif-s1 lrdif ...]

Each method runs ``--steps`` training steps (the engine's precision and memory format: bf16 autocast
where the CPU has native bf16, NHWC for the CNNs) and inference on the same random batch; figures are
images/s at the median step time and the ratio to the plain ResNet-18 measured in the same run (the
machine is shared and noisy: compare ratios, not absolute numbers). Params and GMACs (one image) come
from torch's FLOP counter.

``--cost-table`` measures, in fp32, every study method at its ``quick`` and ``cpu`` input sizes (or
``--sizes``) and the study's other work (drawing faces, UDC synthesis, image loading, run set-up,
t-SNE), each as units of :data:`udcbench.budget.UNIT` per image, and writes
``udcbench/data/method_cost.csv``, which ``udcbench reproduce --dry-run`` and the budget test read;
``--only`` re-measures the named methods' rows and keeps the others.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision

from baselines.base import Batch
from udcbench.engine.records import count_macs
from udcbench.engine.runtime import runtime
from udcbench.methods import BASELINES, create_method, get_method

from _common import REPO, report


def median_seconds(step, repeats: int) -> float:
    """The median time of ``repeats`` calls: steadier than the mean on a shared, noisy machine."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(name: str, size: int, batch: int, steps: int, amp: bool | None = None) -> dict:
    """Training and inference images/s of ``name`` at ``size`` px (``amp`` None: its cpu preset's)."""
    torch.manual_seed(0)
    config = get_method(name).config("cpu")
    config.input_size = size
    config.amp = config.amp if amp is None else amp
    rt = runtime("cpu")
    model = rt.place(create_method(name, 8, config))
    model.set_schedule(config.epochs)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, size, size)
    labels = torch.arange(batch) % 8
    data = Batch(x, labels, torch.arange(batch))
    extra = (labels,) if getattr(model, "uses_labels_at_eval", False) else ()

    def train_step():
        with rt.autocast(config.amp):
            out = model.training_step(data, 0)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()

    model.train()
    train_step()  # warm-up
    train_rate = batch / median_seconds(train_step, steps)
    model.eval()
    with torch.no_grad(), rt.autocast(config.amp):
        model(x, *extra)
        infer_rate = batch / median_seconds(lambda: model(x, *extra), steps)
    macs = None if extra else count_macs(model, size, torch.device("cpu")) / 1e9
    return {"method": name, "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
            "GMACs": macs, "train_img_s": train_rate, "infer_img_s": infer_rate,
            "precision": rt.precision(config.amp)}


def reference_speed(steps: int = 8) -> float:
    """images/s of the budget unit's step: torchvision ResNet-18, 48 px, batch 64, fp32, this process's threads."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=7)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(64, 3, 48, 48), torch.arange(64) % 7

    def step():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()
    return 64 / median_seconds(step, steps)


def _per_image(seconds: float, images: int, speed: float) -> float:
    return seconds / images * speed


_measured: dict[tuple[str, int], dict] = {}


def unit(name: str, size: int, kind: str, speed: float) -> float:
    """Units per image of a method's training step or inference (measured once per process), in fp32 at
    its quick batch size."""
    if (name, size) not in _measured:
        _measured[(name, size)] = measure(name, size, get_method(name).config("quick").batch_size, 6, amp=False)
    return speed / _measured[(name, size)][f"{kind}_img_s"]


def _run_units(name: str, adapter, out: Path, epochs: int, speed: float) -> tuple[float, int]:
    """Units of one whole ``train`` of ``name`` (quick preset, fp32, one step per epoch) beyond its training
    steps and evaluations, and its number of training images."""
    from udcbench.engine.data import forget_decoded, plan_splits
    from udcbench.engine.trainer import train

    forget_decoded()
    config = get_method(name).config("quick")
    config.amp, config.epochs, config.max_steps = False, epochs, 1
    plan = plan_splits(adapter, config.val_fraction, config.seed)
    start = time.perf_counter()
    train(config, adapter, out)
    size = config.input_size
    counted = (epochs * config.batch_size * unit(name, size, "train", speed)
               + epochs * (len(plan.val) + len(plan.test)) * unit(name, size, "infer", speed))
    return (time.perf_counter() - start) * speed - counted, len(plan.train)


def overhead_costs(speed: float, methods: list[str]) -> list[dict]:
    """The study's work besides training steps and evaluation, measured on a small synthetic dataset in a
    temporary folder: units per image (drawing and synthesis with the study's processes, loading, a t-SNE
    point), per epoch and per run (``epoch_setup``, ``run_setup``: checkpoints, MAC count, records), and per
    training image of a method's preparation (``METHOD:prepare``, e.g. pre-training a landmark network)."""
    from degradations import load_recipe
    from udcbench.datasets import create_dataset
    from udcbench.datasets.generate import generate_synthetic
    from udcbench.engine.data import load_images
    from udcbench.reports.figures import tsne_embedding
    from udcbench.reproduce import DATA_WORKERS
    from udcbench.synthesis import synthesize

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root, n = Path(tmp) / "synthetic", 840
        start = time.perf_counter()
        generate_synthetic(root, n_train=700, n_test=140, workers=DATA_WORKERS)
        rows.append(("draw_face", _per_image(time.perf_counter() - start, n, speed)))
        adapter = create_dataset("imagefolder", root)
        start = time.perf_counter()
        synthesize(adapter, Path(tmp) / "udc", load_recipe("toled"), workers=DATA_WORKERS)
        rows.append(("synthesise", _per_image(time.perf_counter() - start, n, speed)))
        records = adapter.records("train") + adapter.records("test")
        start = time.perf_counter()
        load_images(adapter, records, 48, "loading")
        load = _per_image(time.perf_counter() - start, n, speed)
        rows.append(("load_image", load))
        one, _ = _run_units("resnet18", adapter, Path(tmp) / "run1", 1, speed)
        three, _ = _run_units("resnet18", adapter, Path(tmp) / "run3", 3, speed)
        per_epoch = max(0.0, (three - one) / 2)
        run_setup = max(0.0, one - per_epoch - n * load)
        rows += [("epoch_setup", per_epoch), ("run_setup", run_setup)]
        rows += _prepare_rows(speed, methods, adapter, Path(tmp), per_epoch + run_setup + n * load)
        features = np.random.default_rng(0).standard_normal((700, 512)).astype(np.float32)
        start = time.perf_counter()
        tsne_embedding(features)
        rows.append(("tsne_point", _per_image(time.perf_counter() - start, len(features), speed)))
    return [{"key": key, "input_size": "", "train": units, "infer": ""} for key, units in rows]


def _prepare_rows(speed: float, methods: list[str], adapter, tmp: Path, rest: float) -> list[tuple[str, float]]:
    """``(METHOD:prepare, units per training image)`` of each method with a preparation of its own: a one-epoch
    run's units beyond its steps and evaluations, less ``rest`` (its epoch and run set-up and image loading)."""
    rows = []
    for name in methods:
        spec = get_method(name)
        if spec.prepare is not None and spec.stage1 is None:
            extra, n_train = _run_units(name, adapter, tmp / name, 1, speed)
            rows.append((f"{name}:prepare", max(0.0, extra - rest) / n_train))
    return rows


def _prepare_costs(speed: float, methods: list[str], table: list[dict]) -> list[dict]:
    """The ``METHOD:prepare`` rows of ``methods`` alone, with the per-epoch and per-run set-up read from
    ``table`` (the rows of the cost table already written)."""
    from udcbench.datasets import create_dataset
    from udcbench.datasets.generate import generate_synthetic

    setup = {r["key"]: float(r["train"]) for r in table if r["key"] in ("epoch_setup", "run_setup", "load_image")}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "synthetic"
        generate_synthetic(root, n_train=700, n_test=140)
        rest = setup["epoch_setup"] + setup["run_setup"] + 840 * setup["load_image"]
        rows = _prepare_rows(speed, methods, create_dataset("imagefolder", root), Path(tmp), rest)
    return [{"key": key, "input_size": "", "train": units, "infer": ""} for key, units in rows]


def cost_table(sizes: list[int] | None, only: list[str] | None = None) -> None:
    """Measure the cost table; with ``only``, those methods' rows (and their preparation), the others kept."""
    from udcbench.budget import COST_TABLE
    from udcbench.files import write_csv
    from udcbench.methods import study_methods

    speed = reference_speed()
    names = list(dict.fromkeys(m for kind in ("udc", "lowlight") for name in study_methods(kind=kind)
                               for m in (get_method(name).stage1, name) if m))
    path = REPO / "udcbench" / "data" / COST_TABLE
    kept = []
    if only:
        names = [n for n in names if n in only]
        kept = [r for r in csv.DictReader(path.open()) if r["key"].split(":")[0] not in names]
    rows = []
    for name in names:
        spec = get_method(name)
        for size in sorted(set(sizes or [spec.config(p).input_size for p in ("quick", "cpu")])):
            rows.append({"key": name, "input_size": size, "train": unit(name, size, "train", speed),
                         "infer": unit(name, size, "infer", speed)})
    rows += _prepare_costs(speed, names, kept) if only else overhead_costs(speed, names)
    rows = kept + rows
    after = reference_speed()
    print(f"reference ResNet-18 (48 px, batch 64, fp32): {speed:.1f} images/s before, {after:.1f} after")
    report("method_cost", "Units (ResNet-18 image-steps at 48 px) per image", rows)
    path = write_csv(path, ["key", "input_size", "train", "infer"],
                     ({k: f"{v:.4g}" if isinstance(v, float) else v for k, v in row.items()} for row in rows))
    print(f"wrote {path.relative_to(REPO)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=7)
    parser.add_argument("--cost-table", action="store_true", help="measure and write udcbench/data/method_cost.csv")
    parser.add_argument("--sizes", type=int, nargs="*", help="input sizes of the cost table (default: quick, cpu)")
    parser.add_argument("--only", nargs="*", help="re-measure these methods' rows of the cost table, keep the rest")
    parser.add_argument("--methods", nargs="+", default=list(BASELINES),
                        help="methods of the throughput table (resnet18 first: the ratios' reference)")
    args = parser.parse_args()
    if args.cost_table:
        cost_table(args.sizes, args.only)
        return
    rows = [measure(name, args.size, args.batch, args.steps) for name in dict.fromkeys(["resnet18", *args.methods])]
    base = rows[0]
    for row in rows:
        row["train_vs_resnet18"] = row["train_img_s"] / base["train_img_s"]
        row["infer_vs_resnet18"] = row["infer_img_s"] / base["infer_img_s"]
    report("method_speed", f"Method throughput on CPU at {args.size} px, batch {args.batch}", rows)


if __name__ == "__main__":
    main()
