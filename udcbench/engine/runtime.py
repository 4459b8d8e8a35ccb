"""Where training runs: the device (CUDA when present), mixed precision (bf16 on a GPU that has it, else fp16 with
a grad scaler; bf16 on a CPU that computes it natively, else fp32), the CUDA settings that keep a GPU busy
(cuDNN autotuning, TF32, channels-last), and torch DDP under ``torchrun`` (NCCL on CUDA, gloo on CPU)."""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta
from functools import cache

import torch
import torch.distributed as dist
from torch import nn

from baselines import distributed
from udcbench.errors import UdcbenchError


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX). Without it bf16 autocast is emulated
    and about 2x slower than fp32; ``UDCBENCH_CPU_BF16=1`` forces it (to replay a bf16 run), ``=0`` refuses it."""
    forced = os.environ.get("UDCBENCH_CPU_BF16")
    if forced in ("0", "1"):
        return forced == "1"
    if forced not in (None, ""):
        raise UdcbenchError(f"UDCBENCH_CPU_BF16 is 0 (fp32) or 1 (bf16), got '{forced}'")
    return _native_bf16()


def compile_backend() -> str:
    """The ``torch.compile`` backend: ``UDCBENCH_COMPILE_BACKEND`` (default inductor), checked against the ones
    this torch has before anything trains."""
    backend = os.environ.get("UDCBENCH_COMPILE_BACKEND") or "inductor"
    known = torch._dynamo.list_backends(exclude_tags=())
    if backend not in known:
        raise UdcbenchError(f"UDCBENCH_COMPILE_BACKEND '{backend}' is not a torch.compile backend here (known: "
                            f"{', '.join(sorted(known))})")
    return backend


@cache
def _native_bf16() -> bool:
    """The CPU probe, once per process (``Runtime.autocast`` asks at every step)."""
    probes = (getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return any(probe() for probe in probes if probe is not None)


def cuda_has_bf16(device: torch.device) -> bool:
    """Whether this GPU computes bf16 natively (Ampere and later)."""
    return torch.cuda.is_available() and torch.cuda.get_device_capability(device)[0] >= 8


@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world: int = 1
    ddp: bool = False  # in a process group under torchrun (of one process, or several)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def precision(self, amp: bool) -> str:
        """What ``amp`` means here: bf16 autocast on a GPU or CPU that computes it natively, fp16 (with the
        scaler) on an older GPU, else fp32."""
        if not amp:
            return "fp32"
        if self.cuda:
            return "bf16" if cuda_has_bf16(self.device) else "fp16"
        return "bf16" if cpu_has_bf16() else "fp32"

    def autocast(self, amp: bool):
        precision = self.precision(amp)
        if precision == "fp32":
            return nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)

    def place(self, model: nn.Module) -> nn.Module:
        """The model on this device, in NHWC where it asks for it (``FERModel.channels_last``)."""
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if getattr(model, "channels_last", False) else model

    def per_rank(self, batch_size: int) -> int:
        """This rank's share of a global batch (the preset's batch is the global one, whatever the world)."""
        if batch_size % self.world:
            raise UdcbenchError(f"the batch of {batch_size} does not split over {self.world} processes; pass "
                                f"--set batch_size=N with N a multiple of {self.world}")
        return batch_size // self.world


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


def launched_rank() -> int:
    """This process's rank under ``torchrun`` (0 otherwise), read before any process group starts."""
    return int(os.environ.get("RANK", "0"))


def _tune_cuda() -> None:
    """cuDNN picks the fastest convolution per shape (the inputs have one shape per run); float32 matrix products
    and convolutions may use TF32 (autocast runs most of the step in bf16 anyway)."""
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


#: How long a rank waits in a collective for the others under NCCL (``UDCBENCH_DDP_TIMEOUT_MIN``, minutes): long
#: enough for rank 0's one-off preparation (decoding the image cache, landmarks, synthesis in ``reproduce``), which
#: NCCL's 10-minute default cuts short on real datasets. gloo keeps its own 30 minutes unless the variable is set.
DDP_TIMEOUT_MINUTES = 120


def process_group_timeout() -> timedelta:
    """The process group's timeout: :data:`DDP_TIMEOUT_MINUTES` unless ``UDCBENCH_DDP_TIMEOUT_MIN`` says."""
    from udcbench.config import env_number

    return timedelta(minutes=env_number("UDCBENCH_DDP_TIMEOUT_MIN", DDP_TIMEOUT_MINUTES, 1, 100_000, "minutes"))


def runtime(device: str | None = None) -> Runtime:
    """CUDA when present (or asked), CPU otherwise; torch DDP when launched by ``torchrun``: one process per GPU
    (``LOCAL_RANK``), NCCL on CUDA and gloo on CPU, every collective's tensors on the run's device."""
    check_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    launched = "TORCHELASTIC_RUN_ID" in os.environ or world > 1  # torchrun, even with one process
    rank = launched_rank()
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if launched or dev.index is None:
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) if launched else 0)
        torch.cuda.set_device(dev)
        _tune_cuda()
    if launched and not dist.is_initialized():
        if dev.type == "cuda":
            dist.init_process_group("nccl", device_id=dev, timeout=process_group_timeout())
        else:  # gloo's own 30 minutes unless asked (a 2-hour gloo group aborted at exit under pytest)
            timeout = process_group_timeout() if os.environ.get("UDCBENCH_DDP_TIMEOUT_MIN") else None
            dist.init_process_group("gloo", **({"timeout": timeout} if timeout else {}))
    distributed.bind(dev)
    return Runtime(dev, rank, world, ddp=launched)


def shutdown(wait: bool = True) -> None:
    """End the process group, after a last barrier (``wait``) so that no rank leaves while another still writes."""
    if dist.is_available() and dist.is_initialized():
        if wait:
            distributed.barrier()
        dist.destroy_process_group()
