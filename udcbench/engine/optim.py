"""Optimisers and learning-rate schedules by name (``TrainConfig.optimizer``, ``TrainConfig.schedule``)."""

from __future__ import annotations

import torch

from udcbench.config import TrainConfig
from udcbench.errors import UdcbenchError


def make_optimizer(params, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
                               nesterov=config.schedule == "onecycle")
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    raise UdcbenchError(f"unknown optimizer '{config.optimizer}' (sgd, adam, adamw)")


def make_scheduler(optimizer, config: TrainConfig, steps_per_epoch: int):
    """Returns (scheduler, steps it per batch?)."""
    if config.schedule == "onecycle":
        total = max(1, config.epochs * steps_per_epoch)
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total), True
    if config.schedule == "exponential":
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=config.gamma), False
    if config.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.step_size, gamma=config.gamma), False
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, config.epochs)), False
    if config.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0), False
    raise UdcbenchError(f"unknown schedule '{config.schedule}' (onecycle, exponential, step, cosine, constant)")
