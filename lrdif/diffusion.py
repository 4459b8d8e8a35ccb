"""Diffusion in the emotion-prior (EPR) space, as in DiffIR: a few steps on a C-dimensional vector.

Schedule: ``betas = linspace(sqrt(0.1), sqrt(0.99), T) ** 2`` (DiffIR's "linear" schedule with
linear_start 0.1 and linear_end 0.99; for T = 1 the single beta is the end, 0.99). The last beta is 0.99
for every T, so ``abar_T <= 1 - beta_T = 0.01``.

The chain runs on ``Z / sqrt(C)``: the FPENs give Z with unit root-mean-square coordinates (norm sqrt(C)),
so the chain's Z_0 lies on the unit sphere and the part of it that survives into ``Z_T`` has norm
``sqrt(abar_T) <= 0.1`` against unit Gaussian noise in every direction, whatever T: the label that Z carries
cannot pass through ``q(Z_T | Z)`` (training would otherwise start its reverse chain from a hint that
inference, starting from N(0, I), never has). The denoiser is an MLP on ``concat(Z_t, t / T, x_S2)`` that
predicts ``Z_0`` (x0-parameterisation, default) or the noise; the prediction is projected onto the sphere
(as DDPM clips its x0 to the data range); the reverse step is the DDPM posterior, with the noise term
inserted or left out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from baselines.randomness import hash_normal, mix


def beta_schedule(steps: int, start: float = 0.1, end: float = 0.99, dtype=torch.float64) -> torch.Tensor:
    """``linspace(sqrt(start), sqrt(end), steps) ** 2``, ending at ``end`` for every ``steps`` (also 1)."""
    if steps == 1:
        return torch.tensor([end], dtype=dtype)
    return torch.linspace(start**0.5, end**0.5, steps, dtype=dtype) ** 2


class Schedule(nn.Module):
    """Forward-process and posterior coefficients for ``steps`` diffusion steps (index t = 1..T)."""

    def __init__(self, steps: int = 4, start: float = 0.1, end: float = 0.99):
        super().__init__()
        betas = beta_schedule(steps, start, end)
        alphas = 1.0 - betas
        cumprod = torch.cumprod(alphas, dim=0)
        previous = torch.cat([torch.ones(1, dtype=cumprod.dtype), cumprod[:-1]])
        self.steps = steps
        for name, value in {
            "betas": betas,
            "alphas": alphas,
            "alphas_cumprod": cumprod,
            "alphas_cumprod_prev": previous,
            # q(z_{t-1} | z_t, z_0) = N(coef_x0 * z_0 + coef_xt * z_t, posterior_variance)
            "posterior_variance": betas * (1.0 - previous) / (1.0 - cumprod),
            "coef_x0": betas * previous.sqrt() / (1.0 - cumprod),
            "coef_xt": (1.0 - previous) * alphas.sqrt() / (1.0 - cumprod),
        }.items():
            self.register_buffer(name, value.float())

    def q_sample(self, z0: torch.Tensor, t: int, noise: torch.Tensor) -> torch.Tensor:
        """``z_t ~ q(z_t | z_0) = N(sqrt(abar_t) z_0, (1 - abar_t) I)``; t in 1..T."""
        abar = self.alphas_cumprod[t - 1]
        return abar.sqrt() * z0 + (1.0 - abar).sqrt() * noise

    def x0_from_eps(self, zt: torch.Tensor, t: int, eps: torch.Tensor) -> torch.Tensor:
        abar = self.alphas_cumprod[t - 1]
        return (zt - (1.0 - abar).sqrt() * eps) / abar.sqrt()

    def posterior(self, z0: torch.Tensor, zt: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of ``q(z_{t-1} | z_t, z_0)``."""
        return self.coef_x0[t - 1] * z0 + self.coef_xt[t - 1] * zt, self.posterior_variance[t - 1]


class Denoiser(nn.Module):
    """MLP on ``concat(Z_t, t / T, x_S2)``."""

    def __init__(self, dim: int = 256, hidden: int | None = None, layers: int = 4):
        super().__init__()
        hidden = hidden or 2 * dim
        blocks: list[nn.Module] = [nn.Linear(2 * dim + 1, hidden), nn.LeakyReLU(0.1)]
        for _ in range(layers - 2):
            blocks += [nn.Linear(hidden, hidden), nn.LeakyReLU(0.1)]
        blocks.append(nn.Linear(hidden, dim))
        self.net = nn.Sequential(*blocks)

    def forward(self, zt: torch.Tensor, t_fraction: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([zt, t_fraction.expand(zt.shape[0], 1).to(zt), condition], dim=1))


class EPRDiffusion(nn.Module):
    """The reverse chain that estimates the EPR from an image condition ``x_S2`` (no label anywhere). ``Z`` in
    and out at unit RMS; ``Z_t`` in the chain's units (``Z / sqrt(C)`` plus noise)."""

    def __init__(self, dim: int = 256, steps: int = 4, parameterization: str = "x0"):
        super().__init__()
        if parameterization not in ("x0", "eps"):
            raise ValueError("parameterization is 'x0' or 'eps'")
        self.schedule = Schedule(steps)
        self.denoiser = Denoiser(dim)
        self.parameterization = parameterization
        self.scale = dim**0.5

    @property
    def steps(self) -> int:
        return self.schedule.steps

    def noised(self, z: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """``Z_T ~ q(Z_T | Z)`` for a unit-RMS ``Z``."""
        noise = torch.randn_like(z) if noise is None else noise
        return self.schedule.q_sample(z / self.scale, self.steps, noise)

    def predict_x0(self, zt: torch.Tensor, t: int, condition: torch.Tensor) -> torch.Tensor:
        # made on zt's device (a fill, no host-to-device copy: no sync per reverse step)
        out = self.denoiser(zt, zt.new_full((1, 1), t / self.steps), condition)
        x0 = out if self.parameterization == "x0" else self.schedule.x0_from_eps(zt, t, out)
        return F.normalize(x0, dim=1)

    def reverse(self, zt: torch.Tensor, condition: torch.Tensor, insert_noise: bool = True,
                generator: torch.Generator | None = None, keys: torch.Tensor | None = None) -> torch.Tensor:
        """Run t = T..1 from ``zt``; returns the estimate of ``Z`` at unit RMS (differentiable). ``keys``: one 32-bit
        key per row, whose inserted noise is then that row's own (:func:`baselines.randomness.hash_normal`)."""
        z = zt
        for t in range(self.steps, 0, -1):
            x0 = self.predict_x0(z, t, condition)
            mean, variance = self.schedule.posterior(x0, z, t)
            if t > 1 and insert_noise:
                noise = (torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype) if keys is None
                         else hash_normal(mix(keys ^ (t * 0x27D4EB2F)), tuple(z.shape[1:])).to(z.dtype))
                z = mean + variance.sqrt() * noise
            else:
                z = mean if t > 1 else x0
        return z * self.scale

    def sample(self, condition: torch.Tensor, insert_noise: bool = True,
               generator: torch.Generator | None = None, keys: torch.Tensor | None = None) -> torch.Tensor:
        """Inference: start from Gaussian noise, no label; with ``keys`` (one per row) every row's noise is its own,
        whatever batch or rank it is evaluated in."""
        if keys is None:
            zt = torch.randn(condition.shape, generator=generator, device=condition.device, dtype=condition.dtype)
        else:
            zt = hash_normal(keys, tuple(condition.shape[1:])).to(condition.dtype)
        return self.reverse(zt, condition, insert_noise, generator, keys)
