"""A study's time on a named GPU (``udcbench reproduce --dry-run --gpu h100``).

The plan (:func:`udcbench.reproduce.plan_study`) says, per training run, how many images go through a training
step and through inference, at which input size. ``udcbench/data/gpu_cost.csv`` gives, per GPU, method and input
size, the images/s of both, each row either

- **measured**: the GPU check's ``cost`` rows (``benchmarks/gpu/check.py``: the engine's own step on that GPU, at
  the recipe's batch, after warm-up), merged by ``python benchmarks/gpu_cost.py --from-check CSV``; or
- **estimated** (``python benchmarks/gpu_cost.py --estimate``): a step takes the longer of its compute and its
  kernel launches. Compute: the step's FLOPs (counted by torch on the engine's step) at the rate the GPU trains a
  published anchor (:data:`GPUS`: ResNet-50's images/s there times its FLOPs per image); launches: the step's
  kernels (counted on a CPU as its outermost ATen operators, the optimiser on its multi-tensor path) times
  :data:`LAUNCH_US`, an assumed host cost per eager launch. Both are assumptions (a network's FLOPs do not all run
  at the anchor's rate) that a measurement replaces; the plan says which figure is which.

The inference within the study's other work (the UDC-C sweep, t-SNE) is priced like a run's evaluation; the rest of a
run (decoding, each epoch's set-up) and the other work's remainder (synthesis, drawing faces, t-SNE's embedding) are
counted at the reference CPU speed (:data:`udcbench.budget.REFERENCE_SPEED`): an upper bound on a GPU machine.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from importlib import resources

from udcbench.budget import REFERENCE_SPEED, UNCOUNTED_SHARE, PlanItem, StudyPlan, work_units
from udcbench.errors import UdcbenchError, unknown_name


@dataclass(frozen=True)
class Gpu:
    label: str
    resnet50_images_per_s: float  # ResNet-50 v1.5 training, 224 px, mixed precision, one GPU
    source: str


_A100_RESNET50 = 2470.0
#: Each GPU's anchor: what it trains of one published, well-tuned convolutional network. A100: NVIDIA's ResNet-50
#: v1.5 PyTorch recipe on one A100 80GB in mixed precision (DeepLearningExamples, PyTorch/Classification/ConvNets/
#: resnet50v1.5, "Training performance", NGC pytorch-21.03). H100: that figure times 1.8, the H100/A100 ratio of two
#: otherwise equal MLPerf Training v3.0 ResNet-50 submissions (Dell, 16 GPUs: 7.8 against 14.4 minutes). H200: the
#: H100's compute (more memory bandwidth, no published figure here): the H100's anchor.
GPUS = {
    "a100": Gpu("NVIDIA A100 SXM4 80GB", _A100_RESNET50, "DeepLearningExamples ResNet50 v1.5, 1x A100 80GB, AMP"),
    "h100": Gpu("NVIDIA H100 SXM5", _A100_RESNET50 * 14.4 / 7.8, "the A100 anchor x MLPerf v3.0 ResNet-50 H100/A100"),
    "h200": Gpu("NVIDIA H200 SXM", _A100_RESNET50 * 14.4 / 7.8, "the H100's anchor (same compute)"),
}
#: The anchor network, counted by torch's FLOP counter in ``benchmarks/gpu_cost.py``.
ANCHOR = {"model": "resnet50", "input_size": 224}
#: Assumed host cost of one eager kernel launch (PyTorch's dispatch and cudaLaunchKernel), in microseconds.
LAUNCH_US = 8.0
COST_TABLE = "gpu_cost.csv"
COLUMNS = ("gpu", "method", "input_size", "batch_size", "precision", "train_images_per_s", "infer_images_per_s",
           "source", "train_gflop_per_image", "train_kernels", "infer_gflop_per_image", "infer_kernels",
           "effective_tflops", "basis", "commit")


def effective_tflops(gpu: str, anchor_flops_per_image: float) -> float:
    """The rate at which ``gpu`` trains its anchor network (FLOP/s over 1e12): its images/s times the anchor's
    training FLOPs per image."""
    return GPUS[gpu].resnet50_images_per_s * anchor_flops_per_image / 1e12


def estimate_images_per_s(flops_per_image: float, kernels_per_step: int, batch_size: int, tflops: float) -> float:
    """Images/s of a step of ``batch_size`` images: the longer of its compute at the GPU's effective rate (as it
    trains its anchor) and its launches."""
    compute = flops_per_image * batch_size / (tflops * 1e12)
    return batch_size / max(compute, kernels_per_step * LAUNCH_US * 1e-6)


@cache
def gpu_cost_table() -> dict[tuple[str, str, int], dict]:
    """``(gpu, method, input_size) -> row`` of ``udcbench/data/gpu_cost.csv``; a measured row wins over an
    estimated one."""
    text = resources.files("udcbench").joinpath("data", COST_TABLE).read_text()
    table: dict[tuple[str, str, int], dict] = {}
    for row in csv.DictReader(text.splitlines()):
        key = (row["gpu"], row["method"], int(row["input_size"]))
        if key not in table or row["source"] == "measured":
            table[key] = {**row, "train_images_per_s": float(row["train_images_per_s"]),
                          "infer_images_per_s": float(row["infer_images_per_s"])}
    return table


def gpu_row(gpu: str, method: str, input_size: int) -> dict:
    try:
        return gpu_cost_table()[(gpu, method, input_size)]
    except KeyError:
        raise UdcbenchError(f"no {gpu} cost for {method} at {input_size} px in udcbench/data/{COST_TABLE}: run "
                            "'python benchmarks/gpu_cost.py --estimate' (or the GPU check on that GPU)") from None


@dataclass
class GpuItem:
    item: PlanItem
    minutes: float
    source: str  # measured, estimated, or cpu (counted at the reference CPU speed)


@dataclass
class GpuPlan:
    gpu: str
    items: list[GpuItem]
    gpus: int

    @property
    def work_minutes(self) -> float:
        return sum(i.minutes for i in self.items)

    @property
    def overhead_minutes(self) -> float:
        """Start-up, figures and tables: the plan's share of the rest (:data:`udcbench.budget.UNCOUNTED_SHARE`)."""
        return UNCOUNTED_SHARE * self.work_minutes

    @property
    def minutes(self) -> float:
        """One GPU, one run after another."""
        return self.work_minutes + self.overhead_minutes

    @property
    def side_by_side_minutes(self) -> float:
        """``gpus`` GPUs, one run per GPU (``reproduce --gpus``): the work before the runs, then the runs placed in
        plan order on the GPU free first (a stage 2 not before its stage 1 ends), then the work after them; the
        overhead's share on top."""
        runs = [position for position, i in enumerate(self.items) if i.item.work is not None]
        first, last = (runs[0], runs[-1]) if runs else (len(self.items), len(self.items) - 1)
        before = sum(i.minutes for i in self.items[:first])
        after = sum(i.minutes for i in self.items[last + 1:])
        free = [0.0] * self.gpus
        ends: dict[int, float] = {}
        for position in runs:
            entry = self.items[position]
            slot = min(range(self.gpus), key=free.__getitem__)
            start = max(free[slot], ends.get(entry.item.after, 0.0) if entry.item.after is not None else 0.0)
            free[slot] = ends[position] = start + entry.minutes
        return (before + max(free, default=0.0) + after) * (1 + UNCOUNTED_SHARE)

    def count(self, source: str) -> int:
        return sum(1 for i in self.items if i.source == source and i.item.work is not None)

    def to_json(self) -> dict:
        return {"gpu": self.gpu, "label": GPUS[self.gpu].label, "minutes": self.minutes, "gpus": self.gpus,
                "side_by_side_minutes": self.side_by_side_minutes, "overhead_minutes": self.overhead_minutes,
                "items": [{"what": i.item.what, "dataset": i.item.dataset, "condition": i.item.condition,
                           "minutes": i.minutes, "source": i.source} for i in self.items]}


def plan_on_gpu(plan: StudyPlan, gpu: str, gpus: int = 1) -> GpuPlan:
    """``plan``'s items timed on ``gpu`` (see the module's docstring)."""
    if gpu not in GPUS:
        raise unknown_name("GPU", gpu, tuple(GPUS))
    if gpus < 1:
        raise UdcbenchError("--gpus: at least one GPU")
    timed = []
    for item in plan.items:
        if item.what.startswith("start-up"):  # the overhead: its share of the GPU plan (GpuPlan.overhead_minutes)
            continue
        if item.work is not None:
            w = item.work
            row = gpu_row(gpu, w.method, w.input_size)
            seconds = (w.trained / row["train_images_per_s"] + w.evaluated / row["infer_images_per_s"]
                       + w.other_units / REFERENCE_SPEED)
            timed.append(GpuItem(item, seconds / 60, row["source"]))
        elif item.inference:  # the inference on the GPU, the rest on the CPU
            rows = [gpu_row(gpu, w.method, w.input_size) for w in item.inference]
            seconds = sum(w.evaluated / row["infer_images_per_s"] for w, row in zip(item.inference, rows))
            seconds += (item.units - sum(work_units(w) for w in item.inference)) / REFERENCE_SPEED
            source = "estimated" if any(row["source"] == "estimated" for row in rows) else "measured"
            timed.append(GpuItem(item, seconds / 60, source))
        else:
            timed.append(GpuItem(item, item.units / REFERENCE_SPEED / 60, "cpu"))
    return GpuPlan(gpu, timed, gpus)
