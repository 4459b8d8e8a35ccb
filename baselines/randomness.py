"""Counter-based random numbers: a pure function of integer keys, the same bits on any device and in any batch.

The engine's augmentation draws from them (``udcbench.engine.augment``), and so do models that sample at
inference (LRDif's reverse chain), so that an image's result depends on its own key alone: not on the batch it
sits in, the evaluation batch size or the number of ranks that share the work.
"""

from __future__ import annotations

import math

import torch

MASK = 0xFFFFFFFF


def mix(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (lowbias32) on int64 tensors holding 32-bit values: the same bits on any device."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & MASK
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & MASK
    return x ^ (x >> 16)


def hash_normal(key: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Standard normal numbers, ``len(key) x shape``, a pure function of each row's 32-bit key and the element's
    position (Box-Muller on two hashes)."""
    n = math.prod(shape)
    cells = torch.arange(n, device=key.device, dtype=torch.int64)
    base = mix((key.to(torch.int64)[:, None] & MASK) ^ (cells[None] * 0x9E3779B1 & MASK))
    u1 = (base.double() + 1) / (2**32 + 1)
    u2 = mix(base ^ 0x68E31DA4).double() / 2**32
    return (torch.sqrt(-2 * torch.log(u1)) * torch.cos(2 * math.pi * u2)).float().view(len(key), *shape)


def image_keys(seed: int, positions: torch.Tensor) -> torch.Tensor:
    """32-bit keys of images at ``positions`` (their place in the evaluated set) under ``seed``."""
    salt = mix(torch.tensor([(seed * 0x9E3779B1) & MASK], device=positions.device))
    return mix((positions.to(torch.int64) & MASK) ^ salt)
