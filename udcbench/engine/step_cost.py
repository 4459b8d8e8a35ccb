"""What one training step of a method costs: its FLOPs and kernels counted, its images/s timed, on any device.

The step is the engine's own (:func:`udcbench.engine.trainer._update`: the method's ``training_step`` under its
wrapper, the configured optimiser, SAM's second pass and clipping where the recipe has them) on random images at
the recipe's batch and input size: what ``train`` runs, less the loader. Inference is the model's forward pass in
eval mode, as ``validate`` runs it. ``benchmarks/gpu_cost.py`` and the GPU check build the GPU cost table from these
(:mod:`udcbench.gpu_cost`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from baselines.base import Batch
from udcbench.config import TrainConfig
from udcbench.engine.optim import SharpnessAware, make_optimizer, param_groups
from udcbench.engine.runtime import Runtime
from udcbench.engine.trainer import TrainState, _update, _wrap

NUM_CLASSES = 7


@dataclass
class Steps:
    """One training step and one inference batch of a method, ready to call."""

    train: Callable[[], None]
    infer: Callable[[], None]
    batch_size: int


def synthetic_steps(model: torch.nn.Module, config: TrainConfig, rt: Runtime, batch_size: int | None = None,
                    foreach: bool | None = None) -> Steps:
    """The engine's training step and an inference batch of ``model`` (made by ``create_method`` for ``config``) on
    random images of ``batch_size`` (default: the recipe's) at the recipe's input size. ``foreach=True`` on a CPU
    gives the optimiser the multi-tensor path it takes on a GPU (what :func:`count_kernels` should see there)."""
    b, s = batch_size or config.batch_size, config.input_size
    model = rt.place(model)
    step_module = _wrap(model, config, rt)
    optimizer = make_optimizer(param_groups(model, config), config, foreach)
    state = TrainState(model, step_module, optimizer, None, False,
                       torch.amp.GradScaler(rt.device.type, enabled=rt.precision(config.amp) == "fp16"),
                       SharpnessAware(model.parameters(), config.sam_rho) if config.sam_rho else None,
                       torch.zeros(b, dtype=torch.long, device=rt.device), 1)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(b, 3, s, s, generator=generator).to(rt.device).contiguous(memory_format=torch.channels_last)
    labels = (torch.arange(b) % NUM_CLASSES).to(rt.device)
    batch = Batch(x, labels, torch.arange(b, device=rt.device), host_index=torch.arange(b))
    extra = (labels,) if getattr(model, "uses_labels_at_eval", False) else ()

    def train() -> None:
        model.train()
        with rt.autocast(config.amp):
            loss = step_module(batch, 0).loss
        _update(state, config, rt, batch, 0, loss)

    @torch.no_grad()
    def infer() -> None:
        model.eval()
        with rt.autocast(config.amp):
            model(x, *extra)

    return Steps(train, infer, b)


def count_flops(fn: Callable[[], None]) -> int:
    """Floating-point operations of one call (torch's counter: matrix products and convolutions, forward and
    backward; element-wise work is not counted)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def count_kernels(fn: Callable[[], None], cuda: bool) -> int:
    """Kernels one call issues: on a GPU the CUDA kernels the profiler sees; on a CPU the outermost ATen operators
    (those inside no other ATen operator, the backward's and the optimiser's included), each at least one kernel
    launch on a GPU."""
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
    with torch.profiler.profile(activities=activities) as prof:
        fn()
        if cuda:
            torch.cuda.synchronize()
    if cuda:
        return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)
    return sum(1 for e in prof.events() if e.name.startswith("aten::") and not _inside_aten(e))


def _inside_aten(event) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("aten::"):
            return True
        parent = parent.cpu_parent
    return False


def images_per_second(fn: Callable[[], None], batch_size: int, rt: Runtime, steps: int = 10, warmup: int = 3) -> float:
    """``batch_size`` / the median time of one call, after ``warmup`` calls (cuDNN's autotuning, the allocator)."""
    def timed() -> float:
        start = time.perf_counter()
        fn()
        if rt.cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for _ in range(warmup):
        timed()
    return batch_size / statistics.median(timed() for _ in range(steps))
