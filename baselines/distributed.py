"""The collectives that training under ``torchrun`` needs, in one place, each checking that its tensor is on the
run's device (NCCL has no CPU tensors: a CPU tensor handed to a CUDA process group crashes the run at the end of
an epoch, or hangs it). Outside a process group every function is the identity, so single-process code calls them
unconditionally.

The engine binds the run's device (:func:`bind`) when it starts the process group; the models (DACL's centres,
ARM's shared affinity) and the engine (epoch statistics, sharded evaluation, SCN's relabels, buffers) call these,
never ``torch.distributed`` directly (``tests/test_structure.py`` checks).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

_DEVICE: torch.device | None = None


class CollectiveDeviceError(RuntimeError):
    """A collective got a tensor that is not on the device the process group communicates on."""


def bind(device: torch.device) -> None:
    """The device every collective's tensors must be on (the run's device), set when the group starts."""
    global _DEVICE
    _DEVICE = torch.device(device)


def active() -> bool:
    """Whether this process is in a process group (``torchrun`` started it; one process is a group too, which
    checks the collectives' devices and backends on one GPU)."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def local_rank() -> int:
    """This process's rank on its machine (torchrun's ``LOCAL_RANK``): one process per machine prepares what lies on
    that machine's disk (a multi-node run with node-local disks), whatever its global rank."""
    import os

    return int(os.environ.get("LOCAL_RANK", rank())) if active() else 0


def check_device(tensor: torch.Tensor, what: str = "a collective") -> None:
    """Refuse a tensor on another device than the bound one (raises :class:`CollectiveDeviceError`)."""
    if _DEVICE is None:
        return
    if tensor.device.type != _DEVICE.type or (_DEVICE.index is not None and tensor.device.index != _DEVICE.index):
        raise CollectiveDeviceError(f"{what} got a tensor on {tensor.device}; the process group runs on {_DEVICE}")


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over the ranks, in place (and returned)."""
    if active():
        check_device(tensor, "all_reduce")
        dist.all_reduce(tensor)
    return tensor


def all_reduce_mean_grad(tensor: torch.Tensor) -> torch.Tensor:
    """The mean over the ranks, differentiable: each rank's gradient flows back to every rank's input, as if the
    global batch had been on one device (ARM's minibatch-shared affinity)."""
    if not active():
        return tensor
    check_device(tensor, "all_reduce (autograd)")
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(tensor) / world_size()


def all_gather_cat(tensor: torch.Tensor, same_size: bool = False) -> torch.Tensor:
    """Every rank's ``tensor`` concatenated along dim 0, rank order; the ranks' first dimensions may differ.
    ``same_size``: the caller knows every rank's is as long as this one's (a step's per-rank batch): one collective
    into one buffer, and no exchange of the sizes (whose read back to the host would wait for the GPU)."""
    if not active():
        return tensor
    check_device(tensor, "all_gather")
    if same_size:
        out = tensor.new_empty((world_size() * len(tensor), *tensor.shape[1:]))
        dist.all_gather_into_tensor(out, tensor.contiguous())
        return out
    n = torch.tensor([len(tensor)], device=tensor.device)
    sizes = [torch.zeros_like(n) for _ in range(world_size())]
    dist.all_gather(sizes, n)
    sizes_ = [int(s) for s in torch.cat(sizes).tolist()]
    padded = tensor.new_zeros((max(sizes_), *tensor.shape[1:]))
    padded[: len(tensor)] = tensor
    parts = [torch.empty_like(padded) for _ in sizes_]
    dist.all_gather(parts, padded)
    return torch.cat([part[:size] for part, size in zip(parts, sizes_)])


def barrier() -> None:
    """Wait for every rank (e.g. while rank 0 writes a checkpoint, so that no rank exits mid-write)."""
    if active():
        if _DEVICE is not None and _DEVICE.type == "cuda":
            dist.barrier(device_ids=[_DEVICE.index or 0])
        else:
            dist.barrier()
