"""The GPU cost table behind ``udcbench reproduce --dry-run --gpu NAME`` (udcbench/data/gpu_cost.csv).

    python benchmarks/gpu_cost.py --estimate [--gpus h100 h200 a100] [--presets paper cpu quick] [--methods lrdif ...]
    python benchmarks/gpu_cost.py --from-check benchmarks/results/gpu_check.csv --gpu h100
    python benchmarks/gpu_cost.py --plan [--src-root ../shared/data]      # the paper study on FERPlus, per GPU

``--estimate`` counts, on this CPU, each study method's training step and inference batch at its preset's input size
(the engine's step, random images, batch 2: FLOPs per image and kernels per step, the optimiser on its multi-tensor
path as on a GPU) and the anchor network's (udcbench.gpu_cost.ANCHOR), and writes estimated rows for every GPU named
(udcbench/gpu_cost.py says how). ``--from-check`` takes the ``cost`` rows the GPU check measured on a GPU and
writes them as measured rows for ``--gpu``. Measured rows are never replaced by estimates. Both write
benchmarks/results/gpu_cost.csv too. ``--plan`` prices the ``paper`` study on FERPlus (``reproduce --study paper
--datasets ferplus --dry-run --gpu G``) on each GPU, on one and on 8 side by side, into benchmarks/results/gpu_plan.csv.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
from pathlib import Path

import torch
import torchvision

from udcbench.config import apply_overrides
from udcbench.engine.records import git_commit
from udcbench.engine.runtime import runtime
from udcbench.engine.step_cost import count_flops, count_kernels, synthetic_steps
from udcbench.files import write_csv
from udcbench.gpu_cost import ANCHOR, COLUMNS, COST_TABLE, GPUS, LAUNCH_US, effective_tflops, estimate_images_per_s
from udcbench.methods import create_method, get_method, study_methods

from _common import FERPLUS, REPO, report

PATH = REPO / "udcbench" / "data" / COST_TABLE
BATCH = 2  # FLOPs grow with the batch, kernels do not: both are counted on 2 images


def study_config(method: str, preset: str):
    """The preset's recipe; a method whose paper model needs a CLIP checkpoint is counted with its fair model's
    encoders (the CLIP towers' image embeddings are cached after the first epoch: their cost is left out)."""
    spec = get_method(method)
    overrides = [f"method_args.{k}={json.dumps(v)}" for k, v in spec.cpu_method_args.items()] \
        if "clip_weights" in spec.file_args else []
    return apply_overrides(spec.config(preset), overrides)


def anchor_flops() -> float:
    """The anchor network's training FLOPs per image (torch's count of a forward and backward pass)."""
    model = getattr(torchvision.models, ANCHOR["model"])(num_classes=1000)
    size = ANCHOR["input_size"]
    x, y = torch.randn(BATCH, 3, size, size), torch.arange(BATCH)
    return count_flops(lambda: torch.nn.functional.cross_entropy(model(x), y).backward()) / BATCH


def estimate(methods: list[str], presets: list[str], gpus: list[str]) -> list[dict]:
    rt = runtime("cpu")
    anchor = anchor_flops()
    rates = {gpu: effective_tflops(gpu, anchor) for gpu in gpus}
    print(f"{ANCHOR['model']}: {anchor / 1e9:.2f} GFLOP per training image; " +
          ", ".join(f"{gpu} {GPUS[gpu].resnet50_images_per_s:.0f} images/s = {rate:.1f} TFLOP/s"
                    for gpu, rate in rates.items()))
    rows = []
    for method in methods:
        for size, config in {study_config(method, p).input_size: study_config(method, p) for p in presets}.items():
            torch.manual_seed(0)
            steps = synthetic_steps(create_method(method, 7, config), config, rt, batch_size=BATCH, foreach=True)
            steps.train()  # lazy state (optimiser moments) before counting
            train_flops, infer_flops = count_flops(steps.train) / BATCH, count_flops(steps.infer) / BATCH
            train_kernels, infer_kernels = count_kernels(steps.train, False), count_kernels(steps.infer, False)
            for gpu in gpus:
                rows.append({"gpu": gpu, "method": method, "input_size": size, "batch_size": config.batch_size,
                             "precision": "bf16",
                             "train_images_per_s": estimate_images_per_s(train_flops, train_kernels, config.batch_size,
                                                                         rates[gpu]),
                             "infer_images_per_s": estimate_images_per_s(infer_flops, infer_kernels, config.batch_size,
                                                                         rates[gpu]),
                             "source": "estimated", "train_gflop_per_image": train_flops / 1e9,
                             "train_kernels": train_kernels, "infer_gflop_per_image": infer_flops / 1e9,
                             "infer_kernels": infer_kernels, "effective_tflops": rates[gpu],
                             "basis": f"{GPUS[gpu].source}; {LAUNCH_US:g} us a launch", "commit": git_commit() or ""})
            print(f"{method} {size} px: {train_flops / 1e9:.3g} GFLOP and {train_kernels} kernels a training step, "
                  f"{infer_flops / 1e9:.3g} GFLOP and {infer_kernels} kernels an inference batch")
    return rows


def from_check(path, gpu: str) -> list[dict]:
    with open(path, newline="") as f:
        found = [r for r in csv.DictReader(f) if r["check"] == "cost" and r["status"] == "ok"]
    if not found:
        raise SystemExit(f"{path} has no measured cost rows")
    rows = []
    for r in found:
        detail = json.loads(r["detail"])
        rows.append({"gpu": gpu, "method": r["method"], "input_size": detail["input_size"],
                     "batch_size": detail["batch_size"], "precision": r["precision"],
                     "train_images_per_s": float(r["images_per_second"]),
                     "infer_images_per_s": float(detail["infer_images_per_second"]), "source": "measured",
                     "train_kernels": r["kernels_per_step"], "basis": f"GPU check on {r['device']}",
                     "commit": detail.get("commit", "")})
    return rows


def merge(new: list[dict]) -> list[dict]:
    """The table's rows with ``new`` in: a new row replaces one of the same GPU, method, size and source; an
    estimate never replaces a measurement."""
    old = list(csv.DictReader(PATH.open(newline=""))) if PATH.is_file() else []

    def key(r):
        return r["gpu"], r["method"], str(r["input_size"])

    measured = {key(r) for r in old if r["source"] == "measured"}
    new = [r for r in new if r["source"] == "measured" or key(r) not in measured]
    replaced = {(*key(r), r["source"]) for r in new}
    return [r for r in old if (*key(r), r["source"]) not in replaced] + new


def plan_rows(src_root: Path) -> list[dict]:
    from udcbench.gpu_cost import plan_on_gpu
    from udcbench.reproduce import plan_study
    from udcbench.workspace import Workspace

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        plan = plan_study("paper", Workspace(root / "data", root / "runs", root / "results", root / "cache"),
                          datasets=["ferplus"], src_root=src_root)
    rows = []
    for gpu in GPUS:
        one, eight = plan_on_gpu(plan, gpu), plan_on_gpu(plan, gpu, gpus=8)
        runs = one.count("measured") + one.count("estimated")
        rows.append({"study": "paper", "dataset": "ferplus", "gpu": gpu, "runs": runs,
                     "runs_measured": one.count("measured"), "hours_one_gpu": one.minutes / 60,
                     "hours_8_gpus_side_by_side": eight.side_by_side_minutes / 60,
                     "train_hours": sum(i.minutes for i in one.items if i.item.work is not None) / 60,
                     "cpu_work_hours": sum(i.minutes for i in one.items if i.source == "cpu") / 60,
                     "overhead_hours": one.overhead_minutes / 60,
                     "commit": git_commit() or ""})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--estimate", action="store_true")
    parser.add_argument("--from-check", help="a GPU check CSV with cost rows")
    parser.add_argument("--gpu", choices=list(GPUS), help="the GPU the check ran on (with --from-check)")
    parser.add_argument("--gpus", nargs="*", default=list(GPUS), choices=list(GPUS))
    parser.add_argument("--presets", nargs="*", default=["paper", "cpu", "quick"])
    parser.add_argument("--methods", nargs="*")
    parser.add_argument("--plan", action="store_true", help="price the paper study on FERPlus on each GPU")
    parser.add_argument("--src-root", type=Path, default=FERPLUS.parent, help="the folder holding ferplus/")
    args = parser.parse_args()
    if args.plan:
        report("gpu_plan", "The paper study on FERPlus, per GPU (hours; udcbench reproduce --dry-run --gpu)",
               plan_rows(args.src_root))
        return
    if args.from_check:
        if not args.gpu:
            parser.error("--from-check needs --gpu")
        new = from_check(args.from_check, args.gpu)
    elif args.estimate:
        methods = args.methods or list(dict.fromkeys(
            m for kind in ("udc", "lowlight") for name in study_methods(kind=kind)
            for m in (get_method(name).stage1, name) if m))
        new = estimate(methods, args.presets, args.gpus)
    else:
        parser.error("--estimate, --from-check or --plan")
    rows = merge(new)
    report("gpu_cost", "Training and inference images/s per GPU (measured or estimated)",
           [{k: r.get(k, "") for k in COLUMNS} for r in rows])
    write_csv(PATH, list(COLUMNS), ({k: f"{v:.5g}" if isinstance(v, float) else v for k, v in r.items()} for r in rows))
    print(f"wrote {PATH.relative_to(REPO)}")


if __name__ == "__main__":
    main()
