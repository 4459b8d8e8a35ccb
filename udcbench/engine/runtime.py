"""Where training runs: the device (CUDA when present), mixed precision (fp16 on CUDA, bf16 on a CPU that
computes it natively, else fp32), channels-last placement, and torch DDP under ``torchrun``."""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass
from functools import cache

import torch
import torch.distributed as dist
from torch import nn

from udcbench.errors import UdcbenchError


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX). Without it bf16 autocast is emulated
    and about 2x slower than fp32; ``UDCBENCH_CPU_BF16=1`` forces it (to replay a bf16 run), ``=0`` refuses it."""
    forced = os.environ.get("UDCBENCH_CPU_BF16")
    if forced in ("0", "1"):
        return forced == "1"
    return _native_bf16()


@cache
def _native_bf16() -> bool:
    """The CPU probe, once per process (``Runtime.autocast`` asks at every step)."""
    probes = (getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return any(probe() for probe in probes if probe is not None)


@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def precision(self, amp: bool) -> str:
        """What ``amp`` means here: fp16 autocast on CUDA, bf16 on a CPU with native bf16, else fp32."""
        if amp and self.device.type == "cuda":
            return "fp16"
        return "bf16" if amp and self.device.type == "cpu" and cpu_has_bf16() else "fp32"

    def autocast(self, amp: bool):
        precision = self.precision(amp)
        if precision == "fp32":
            return nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)

    def place(self, model: nn.Module) -> nn.Module:
        """The model on this device, in NHWC where it asks for it (``FERModel.channels_last``)."""
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if getattr(model, "channels_last", False) else model


def check_device(device: str | None) -> None:
    """Refuse, in one line, a ``--device`` that this machine cannot run (before any work starts)."""
    if device is None:
        return
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UdcbenchError(f"--device {device}: not a device (cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UdcbenchError(f"--device {device}: torch finds no CUDA GPU on this machine (no NVIDIA driver or "
                            "device); leave --device out to train on the CPU")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UdcbenchError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type not in ("cpu", "cuda"):
        raise UdcbenchError(f"--device {device}: udcbench runs on cpu or cuda")


def runtime(device: str | None = None) -> Runtime:
    """CUDA when present (or asked), CPU otherwise; torch DDP when launched by ``torchrun``."""
    check_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if world > 1:
        if not dist.is_initialized():
            dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        if dev.type == "cuda":
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            dev = torch.device("cuda", local)
    return Runtime(dev, rank, world)
