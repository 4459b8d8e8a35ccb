"""The degradation models as pure tensor functions: tensors in, tensors out, batched, differentiable
where the physics is (gains, blur, colour transforms), on any device.

Images are ``(B, 3, H, W)`` floats in [0, 1]. Per-image parameters are tensors with a leading batch
dimension. Random functions take explicit ``torch.Generator`` objects (one per image) so that a
result can be replayed exactly from its parameters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import kornia
import torch
import torch.nn.functional as F

#: Read noise of the MPGNet / UDC sensor model, in electrons (photon units).
READ_NOISE_E = 4.87


# -- colour -------------------------------------------------------------------------------------------
def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    """Undo the sRGB transfer curve (IEC 61966-2-1)."""
    return kornia.color.rgb_to_linear_rgb(x.clamp(0.0, 1.0))


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    """Apply the sRGB transfer curve (IEC 61966-2-1)."""
    return kornia.color.linear_rgb_to_rgb(x.clamp(0.0, 1.0))


def channel_scale(x: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
    """Module 1 of MPGNet: one gain per RGB channel per image, ``gains`` of shape (B, 3)."""
    return x * gains.to(x)[:, :, None, None]


# -- blur ---------------------------------------------------------------------------------------------
def _pad(x: torch.Tensor, pad_h: int, pad_w: int) -> torch.Tensor:
    """Reflect padding (replicate where the image is too small to reflect)."""
    mode = "reflect" if pad_h < x.shape[-2] and pad_w < x.shape[-1] else "replicate"
    return F.pad(x, (pad_w, pad_w, pad_h, pad_h), mode=mode)


def _fast_size(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n (sizes the FFT handles fastest)."""
    best = 2 * n
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p = p35
            while p < n:
                p *= 2
            best = min(best, p)
            p35 *= 3
        p5 *= 5
    return best


def blur_fft(x: torch.Tensor, psf: torch.Tensor) -> torch.Tensor:
    """Per-channel convolution with ``psf`` (3, kH, kW) or (B, 3, kH, kW) by FFT over the whole batch.

    The image is reflect-padded by the kernel radius, so borders see mirrored content, not zeros.
    """
    kh, kw = psf.shape[-2:]
    ph, pw = kh // 2, kw // 2
    h, w = x.shape[-2:]
    padded = _pad(x, ph, pw)
    # Room for the kernel (no circular wrap), rounded up to a fast FFT size.
    size = (_fast_size(padded.shape[-2] + ph), _fast_size(padded.shape[-1] + pw))
    kernel = torch.zeros(*psf.shape[:-2], *size, dtype=x.dtype, device=x.device)
    kernel[..., :kh, :kw] = psf.to(x)
    kernel = torch.roll(kernel, shifts=(-ph, -pw), dims=(-2, -1))  # kernel centre at the origin
    spectrum = torch.fft.rfft2(padded, s=size) * torch.fft.rfft2(kernel, s=size)
    out = torch.fft.irfft2(spectrum, s=size)
    return out[..., ph : ph + h, pw : pw + w]


def blur_direct(x: torch.Tensor, psf: torch.Tensor) -> torch.Tensor:
    """The same convolution in the spatial domain (kornia's filter2d); faster for small kernels."""
    kh, kw = psf.shape[-2:]
    padded = _pad(x, kh // 2, kw // 2)
    if psf.dim() == 3:  # one kernel per channel: make the channel the batch axis
        out = kornia.filters.filter2d(padded.transpose(0, 1), psf.to(x), border_type="constant", padding="valid",
                                      behaviour="conv")
        return out.transpose(0, 1)
    b, c = x.shape[:2]
    out = kornia.filters.filter2d(padded.reshape(1, b * c, *padded.shape[-2:]).transpose(0, 1),
                                  psf.to(x).reshape(b * c, kh, kw), border_type="constant", padding="valid",
                                  behaviour="conv")
    return out.transpose(0, 1).reshape(b, c, *out.shape[-2:])


def blur(x: torch.Tensor, psf: torch.Tensor, fft_above: int = 15) -> torch.Tensor:
    """Module 2 of MPGNet: PSF blur; spatial for kernels up to ``fft_above`` pixels, FFT above."""
    if max(psf.shape[-2:]) <= fft_above:
        return blur_direct(x, psf)
    return blur_fft(x, psf)


# -- scatter, veil and fixed pattern (what an ideal binary mask leaves out) ---------------------------------
def gaussian_halo(size: int, components: torch.Tensor) -> torch.Tensor:
    """A smooth halo of side ``size`` (odd), unit sum: a weighted sum of axis-aligned Gaussians, ``components``
    (n, 3) rows of (weight, sigma_x, sigma_y) in pixels, sampled at the pixel centres (differentiable in the
    components: a fit can move them)."""
    r = torch.arange(size, dtype=components.dtype, device=components.device) - size // 2
    w, sx, sy = components.unbind(dim=1)
    gx = torch.exp(-0.5 * (r[None, :] / sx[:, None]) ** 2)  # (n, size)
    gy = torch.exp(-0.5 * (r[None, :] / sy[:, None]) ** 2)
    gx, gy = gx / gx.sum(dim=1, keepdim=True), gy / gy.sum(dim=1, keepdim=True)
    halo = torch.einsum("n,ny,nx->yx", w / w.sum(), gy, gx)
    return halo / halo.sum()


def scatter_blur(x: torch.Tensor, psf: torch.Tensor, halo: torch.Tensor, fraction: torch.Tensor) -> torch.Tensor:
    """Blur by the mixed PSF ``(1 - f) psf + f halo`` with ``f = fraction`` (B,) per image, as two blurs mixed
    (the mixture is linear, so each image's own PSF never has to be built): ``psf`` (3, k, k), ``halo``
    (3, K, K)."""
    f = fraction.to(x)[:, None, None, None]
    return (1 - f) * blur(x, psf) + f * blur(x, halo)


def veil(x: torch.Tensor, fraction: torch.Tensor) -> torch.Tensor:
    """Veiling glare: the share ``fraction`` (B,) of each image's light spread evenly over the frame (each
    channel's mean), ``(1 - v) x + v mean(x)``: an additive offset proportional to the scene's brightness."""
    v = fraction.to(x)[:, None, None, None]
    return (1 - v) * x + v * x.mean(dim=(-2, -1), keepdim=True)


def column_pattern(x: torch.Tensor, amplitude: torch.Tensor, period: torch.Tensor, phase: torch.Tensor
                   ) -> torch.Tensor:
    """Faint vertical stripes: ``x + a sin(2 pi col / period + phase)`` per image ((B,) each; period in this
    image's pixels), the same in every row and channel."""
    col = torch.arange(x.shape[-1], dtype=x.dtype, device=x.device)
    a, t, ph = (v.to(x)[:, None] for v in (amplitude, period, phase))
    return x + (a * torch.sin(2 * math.pi * col[None, :] / t + ph))[:, None, None, :]


# -- noise and quantisation -----------------------------------------------------------------------------
def poisson_gaussian_noise(
    x: torch.Tensor,
    photons: torch.Tensor,
    generators: Sequence[torch.Generator],
    read_noise: float = READ_NOISE_E,
    exact_below: float | None = 100.0,
) -> torch.Tensor:
    """Module 3 of MPGNet: ``y = (Poisson(L x) + N(0, read_noise^2)) / L``, clipped to the full well.

    ``photons`` (B,) is L, the photon count at full scale, per image; each image draws its noise from
    its own generator, so the result does not depend on how images are batched. Pixels expecting at
    least ``exact_below`` photons use the Gaussian limit of the Poisson law, N(Lx, Lx + read^2): the
    same mean and variance, a skewness under 0.1, and about ten times faster. ``exact_below=None``
    draws every pixel from the Poisson law.
    """
    scale = photons.to(torch.float32).reshape(-1, 1, 1, 1)
    rate = x.clamp(min=0.0).to(torch.float32) * scale
    # the draws come from the images' own (CPU) generators whatever the device: the same noise on a GPU
    z = torch.stack([torch.randn(rate.shape[1:], generator=g, dtype=torch.float32) for g in generators]).to(x.device)
    if exact_below is None:
        electrons = torch.stack([torch.poisson(r.cpu(), generator=g) for r, g in zip(rate, generators)]).to(x.device)
        electrons = electrons + read_noise * z
    else:
        electrons = rate + torch.sqrt(rate + read_noise**2) * z
        low = rate < exact_below
        for i in torch.nonzero(low.flatten(1).any(dim=1)).flatten().tolist():
            mask = low[i]
            drawn = torch.poisson(rate[i][mask].cpu(), generator=generators[i]).to(x.device)
            electrons[i][mask] = drawn + read_noise * z[i][mask]
    return (electrons / scale).clamp(0.0, 1.0).to(x.dtype)


def heteroscedastic_noise(
    x: torch.Tensor, shot: torch.Tensor, read: torch.Tensor, generators: Sequence[torch.Generator]
) -> torch.Tensor:
    """Brooks et al.'s noise model: Gaussian with variance ``shot * x + read^2`` (shot, read per image)."""
    out = torch.empty_like(x)
    for i, generator in enumerate(generators):
        std = (shot[i] * x[i].clamp(min=0.0) + read[i] ** 2).sqrt().to(torch.float64)
        z = torch.randn(std.shape, generator=generator, dtype=torch.float64).to(x.device)  # a CPU draw on any device
        out[i] = (x[i] + std * z).to(x.dtype)
    return out


def quantize(x: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Clip to [0, 1] and round to ``bits`` bits (values stay in [0, 1])."""
    levels = 2**bits - 1
    return torch.round(x.clamp(0.0, 1.0) * levels) / levels


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats to uint8 (clip once, round)."""
    return torch.round(x.clamp(0.0, 1.0) * 255.0).to(torch.uint8)


# -- low light (Brooks et al. 2019, "Unprocessing images for learned raw denoising") -------------------
def inverse_tone_curve(x: torch.Tensor) -> torch.Tensor:
    """Inverse of the smoothstep tone curve ``3x^2 - 2x^3``."""
    x = x.clamp(0.0, 1.0)
    return 0.5 - torch.sin(torch.asin(1.0 - 2.0 * x) / 3.0)


def tone_curve(x: torch.Tensor) -> torch.Tensor:
    """The smoothstep tone curve."""
    x = x.clamp(0.0, 1.0)
    return 3.0 * x**2 - 2.0 * x**3


def white_balance(x: torch.Tensor, red_gain: torch.Tensor, blue_gain: torch.Tensor, inverse: bool = False
                  ) -> torch.Tensor:
    """Multiply red and blue by their white-balance gains (or divide, with ``inverse``); gains are (B,)."""
    gains = torch.stack([red_gain, torch.ones_like(red_gain), blue_gain], dim=1)
    return channel_scale(x, 1.0 / gains if inverse else gains)


def log_uniform(low: float, high: float, generator: torch.Generator, size: int = 1) -> torch.Tensor:
    """Log-uniform draws in [low, high]."""
    u = torch.rand(size, generator=generator, dtype=torch.float64)
    return torch.exp(math.log(low) + u * (math.log(high) - math.log(low)))
