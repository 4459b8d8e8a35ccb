"""Optimisers and learning-rate schedules by name (``TrainConfig.optimizer``, ``TrainConfig.schedule``)."""

from __future__ import annotations

import torch

from udcbench.config import OPTIMIZERS, SCHEDULES, TrainConfig
from udcbench.errors import UdcbenchError


def param_groups(model: torch.nn.Module, config: TrainConfig) -> list[dict]:
    """The model's parameters as optimiser groups: the classifier (``fc``) at ``lr x head_lr_scale`` when the
    scale is not 1 (RUL's official recipe trains its classifier ten times faster than the trunk), the rest at
    ``lr``."""
    if config.head_lr_scale == 1:
        return [{"params": list(model.parameters())}]
    head = [p for n, p in model.named_parameters() if n.startswith("fc.")]
    if not head:
        raise UdcbenchError(f"head_lr_scale: {config.method} has no classifier named fc")
    rest = [p for n, p in model.named_parameters() if not n.startswith("fc.")]
    return [{"params": rest}, {"params": head, "lr": config.lr * config.head_lr_scale}]


def make_optimizer(params, config: TrainConfig, foreach: bool | None = None) -> torch.optim.Optimizer:
    """``params`` (tensors or :func:`param_groups`) under the config's optimiser at ``config.lr``; ``foreach``
    as torch's optimisers take it (None: their default, the multi-tensor path on a GPU)."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
                               nesterov=config.schedule == "onecycle", foreach=foreach)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, foreach=foreach)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, foreach=foreach)
    raise UdcbenchError(f"unknown optimizer '{config.optimizer}' ({', '.join(OPTIMIZERS)})")


class SharpnessAware:
    """SAM (Foret et al., "Sharpness-aware minimization", ICLR 2021) around any optimiser: after the first
    backward pass :meth:`perturb` moves the weights to ``w + rho g / ||g||`` (g: all gradients together); the
    second pass takes the gradient there, and :meth:`restore` moves the weights back before the optimiser steps
    with it. The direction does not depend on a gradient scaler's scale; a non-finite or zero gradient perturbs
    nothing (the scaler then skips the step)."""

    def __init__(self, params, rho: float):
        self.params = [p for p in params if p.requires_grad]
        self.rho = rho
        self._moves: list[tuple[torch.Tensor, torch.Tensor]] = []

    @torch.no_grad()
    def perturb(self) -> None:
        grads = [(p, p.grad) for p in self.params if p.grad is not None]
        self._moves = []
        if not grads:
            return
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for _, g in grads]))
        # decided on the device (no read back to the host): a non-finite or zero norm moves by zero
        scale = torch.where(torch.isfinite(norm) & (norm > 0), self.rho / norm, torch.zeros_like(norm))
        for p, g in grads:
            move = torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0).to(p.dtype) * scale.to(p.dtype)
            p.add_(move)
            self._moves.append((p, move))

    @torch.no_grad()
    def restore(self) -> None:
        for p, move in self._moves:
            p.sub_(move)
        self._moves = []


def make_scheduler(optimizer, config: TrainConfig, steps_per_epoch: int):
    """Returns (scheduler, steps it per batch?)."""
    if config.schedule == "onecycle":
        total = max(1, config.epochs * steps_per_epoch)
        peaks = [group["lr"] for group in optimizer.param_groups]  # each group's own rate (head_lr_scale)
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=peaks, total_steps=total), True
    if config.schedule == "exponential":
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=config.gamma), False
    if config.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.step_size, gamma=config.gamma), False
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, config.epochs)), False
    if config.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0), False
    raise UdcbenchError(f"unknown schedule '{config.schedule}' ({', '.join(SCHEDULES)})")
