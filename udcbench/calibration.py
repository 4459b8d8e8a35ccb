"""``udcbench calibrate``: fit a UDC recipe to a user's own aligned pair (a clean image and the capture of the
same scene through the panel), so that ``udcbench synth --recipe`` simulates that panel.

The model is the recipe's, noise-free, in linear light at capture scale:
``y = g_c [(1 - v) ((1 - f) D * x + f H * x) + v mean(x)]``, with D the diffraction PSF (of the given panel
mask, or of the base preset's cell), H the scatter halo (anisotropic Gaussians), f its share and v the veil.
The gains start from the ratio of the channel means (the PSF, halo and veil keep the mean); f, v, the gains
and the halo's components are then fitted together by minimising the mean squared error (Adam on their
logarithms, torch autograd), on the pair downscaled by ``scale`` (the PSF and halo scaled with it). The
noise (photons L and read noise) comes from the residual in flat regions: its variance against the signal,
``var = level / L + (read / L)^2``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from degradations import build_degradation
from degradations import functional as Fd
from degradations.recipe import Recipe, parse_recipe
from udcbench.errors import UdcbenchError

#: A pair whose estimated shift exceeds this (capture pixels) is refused as misaligned.
MAX_SHIFT_PX = 1.0
#: The halo's starting components, [weight, sigma_x, sigma_y] in capture pixels: a narrow and a wide one.
START_COMPONENTS = ((1.0, 3.0, 3.0), (1.0, 15.0, 15.0))


@dataclass
class PairFit:
    gains: list[float]
    fraction: float
    components: list[list[float]]
    veil: float
    photons: float
    read_noise: float
    kernel_px: int
    shift_px: tuple[float, float]
    psnr_fit: float = 0.0  # of the fitted noise-free simulation against the capture (sRGB, dB)
    ssim_fit: float = 0.0
    psnr_clean: float = 0.0  # of the clean image against the capture
    ssim_clean: float = 0.0
    seconds: float = 0.0

    def recipe(self, base: Recipe, name: str, provenance: dict) -> dict:
        """A recipe dictionary: the base's optics and scaling, the fitted values as narrow ranges."""
        raw = {k: v for k, v in base.raw.items() if k not in ("description", "calibration", "stripes", "psf_scale")}
        raw.update({
            "name": name, "kind": "udc",
            "description": f"Fitted by udcbench calibrate to {provenance['udc']} (clean: {provenance['clean']}).",
            "gains": {c: [round(g * 0.98, 5), round(g * 1.02, 5)] for c, g in zip("rgb", self.gains)},
            "photons": [round(self.photons / 1.25, 1), round(self.photons * 1.25, 1)],
            "read_noise": round(self.read_noise, 3),
            "scatter": {"fraction": [round(max(0.0, self.fraction - 0.01), 4),
                                     round(min(1.0, self.fraction + 0.01), 4)],
                        "kernel_px": self.kernel_px, "components": self.components},
            "veil": [round(max(0.0, self.veil - 0.005), 5), round(min(1.0, self.veil + 0.005), 5)],
            "calibration": [{**provenance, "psnr_fit": round(self.psnr_fit, 2), "ssim_fit": round(self.ssim_fit, 4),
                             "psnr_clean": round(self.psnr_clean, 2), "ssim_clean": round(self.ssim_clean, 4),
                             "shift_px": [round(v, 3) for v in self.shift_px]}],
        })
        return raw


def read_image(path: Path) -> torch.Tensor:
    """An 8- or 16-bit image as (1, 3, H, W) sRGB in [0, 1], float64."""
    import cv2

    from udcbench.images import ImageTooLarge, decode

    try:
        image = decode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except ImageTooLarge as exc:
        raise UdcbenchError(f"{path}: {exc}") from None
    if image is None:
        raise UdcbenchError(f"{path}: not a readable image")
    scale = 65535.0 if image.dtype == np.uint16 else 255.0
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    rgb = image[..., 2::-1][..., :3].astype(np.float64) / scale
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None]


def estimate_shift(clean: torch.Tensor, udc: torch.Tensor) -> tuple[float, float]:
    """(dx, dy) in pixels of the capture against the clean image (phase correlation of the green channels, a
    Hanning window against the borders)."""
    import cv2

    a, b = (t[0, 1].numpy().astype(np.float32) for t in (clean, udc))
    window = cv2.createHanningWindow(a.shape[::-1], cv2.CV_32F)
    (dx, dy), _ = cv2.phaseCorrelate(a, b, window)
    return float(dx), float(dy)


def _odd(n: float) -> int:
    return max(3, int(round(n)) // 2 * 2 + 1)


def simulate(x: torch.Tensor, d_blur: torch.Tensor, gains: torch.Tensor, fraction: torch.Tensor, veil: torch.Tensor,
             components: torch.Tensor, kernel: int) -> torch.Tensor:
    """The noise-free model on linear ``x`` given its diffraction blur ``d_blur`` (components in this image's
    pixels)."""
    halo = Fd.gaussian_halo(kernel, components).expand(3, kernel, kernel)
    mixed = (1 - fraction) * d_blur + fraction * Fd.blur_fft(x, halo)
    return gains[None, :, None, None] * Fd.veil(mixed, veil[None])


def fit_pair(clean: torch.Tensor, udc: torch.Tensor, base: Recipe, kernel_px: int | None = None,
             scale: float | None = None, steps: int = 150, progress=None) -> PairFit:
    """Fit gains, scatter and veil (noise-free MSE at ``scale``, default 0.5 above 1024 px wide, else 1) and
    the noise (flat regions, full resolution) to a pair of (1, 3, H, W) sRGB images."""
    start = time.perf_counter()
    if clean.shape != udc.shape:
        raise UdcbenchError(f"the pair differs in size: clean {clean.shape[-1]} x {clean.shape[-2]}, capture "
                            f"{udc.shape[-1]} x {udc.shape[-2]}; calibrate needs an aligned pair of one size")
    shift = estimate_shift(clean, udc)
    if math.hypot(*shift) > MAX_SHIFT_PX:
        raise UdcbenchError(f"the pair is misaligned by ({shift[0]:.1f}, {shift[1]:.1f}) px (phase correlation): "
                            f"align the capture to the clean image first (calibrate accepts up to {MAX_SHIFT_PX} px)")
    x_full, y_full = Fd.srgb_to_linear(clean), Fd.srgb_to_linear(udc)
    scale = scale or (0.5 if clean.shape[-1] > 1024 else 1.0)
    step = round(1 / scale)
    x, y = (F.avg_pool2d(t, step) if step > 1 else t for t in (x_full, y_full))
    d_blur = Fd.blur(x, build_degradation(base).psf(1 / step).double())  # the base's diffraction or measured PSF
    kernel_px = kernel_px or (base.scatter() or {}).get("kernel_px", 127)
    kernel = _odd(kernel_px / step)
    log_gains = (y.mean(dim=(0, 2, 3)) / x.mean(dim=(0, 2, 3)).clamp(min=1e-6)).log().clone().requires_grad_(True)
    logit_f = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
    logit_v = torch.tensor(-4.0, dtype=torch.float64, requires_grad=True)
    log_c = torch.tensor(START_COMPONENTS, dtype=torch.float64)
    log_c[:, 1:] /= step
    log_c = log_c.log().requires_grad_(True)
    optimizer = torch.optim.Adam([log_gains, logit_f, logit_v, log_c], lr=0.05)
    for i in range(steps):
        model = simulate(x, d_blur, log_gains.exp(), torch.sigmoid(logit_f), torch.sigmoid(logit_v), log_c.exp(),
                         kernel)
        loss = F.mse_loss(model, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if progress is not None:
            progress(i + 1, steps, loss.item())
    components = log_c.detach().exp()
    components[:, 1:] *= step
    fit = PairFit(gains=log_gains.detach().exp().tolist(), fraction=torch.sigmoid(logit_f).item(),
                  components=[[round(v, 4) for v in row] for row in components.tolist()],
                  veil=torch.sigmoid(logit_v).item(), photons=0.0, read_noise=0.0, kernel_px=_odd(kernel_px),
                  shift_px=shift)
    noise_free = _render(fit, base, clean)
    fit.photons, fit.read_noise = estimate_noise(x_full, y_full, Fd.srgb_to_linear(noise_free))
    fit.psnr_fit, fit.ssim_fit = quality(noise_free, udc)
    fit.psnr_clean, fit.ssim_clean = quality(clean, udc)
    fit.seconds = time.perf_counter() - start
    return fit


def _render(fit: PairFit, base: Recipe, clean: torch.Tensor) -> torch.Tensor:
    """The fitted recipe's noise-free simulation of ``clean`` at capture scale (sRGB, not quantised)."""
    raw = fit.recipe(base, "fit", {"clean": "", "udc": ""})
    raw.update(photons=[1e6, 1e6], read_noise=0.0, scatter={**raw["scatter"], "fraction": [fit.fraction] * 2},
               veil=[fit.veil] * 2, gains={c: [g, g] for c, g in zip("rgb", fit.gains)})
    return render(parse_recipe(raw, source=base.source), clean)


def render(recipe: Recipe, clean: torch.Tensor) -> torch.Tensor:
    """A recipe's noise-free simulation of ``clean`` at capture scale, every range at its mean (sRGB, float64)."""
    module = build_degradation(recipe)
    params = module.sample(1, torch.Generator().manual_seed(0))
    raw = recipe.raw
    params["gains"] = torch.tensor([[sum(raw["gains"][c]) / 2 for c in "rgb"]], dtype=torch.float64)
    for key, value in (("scatter", (raw.get("scatter") or {}).get("fraction")), ("veil", raw.get("veil"))):
        if key in params:
            params[key] = torch.tensor([sum(value) / 2], dtype=torch.float64)
    if "stripe_amplitude" in params:
        params["stripe_amplitude"] = torch.zeros(1, dtype=torch.float64)
    return module.capture(clean.float(), params=params, noise=False, quantize=False).double()


def estimate_noise(clean_linear: torch.Tensor, udc_linear: torch.Tensor, model_linear: torch.Tensor,
                   bins: int = 12) -> tuple[float, float]:
    """(photons L, read noise in electrons) from the residual's variance in the flat regions of the clean image
    (the quietest fifth by gradient), binned by the model's level: ``var = level / L + (read / L)^2``."""
    import kornia

    gray = clean_linear.mean(dim=1, keepdim=True)
    gradient = kornia.filters.sobel(gray)[0, 0]
    flat = gradient <= torch.quantile(gradient.flatten()[:: max(1, gradient.numel() // 200_000)], 0.2)
    residual = (udc_linear - model_linear)[0, 1][flat]
    level = model_linear[0, 1][flat]
    edges = torch.quantile(level, torch.linspace(0, 1, bins + 1, dtype=level.dtype))
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (level >= lo) & (level <= hi)
        if inside.sum() > 50:
            rows.append((level[inside].mean().item(), residual[inside].var().item()))
    if len(rows) < 2:
        raise UdcbenchError("too few flat regions in the clean image to estimate the noise")
    levels, variances = np.array(rows).T
    slope, intercept = np.polyfit(levels, variances, 1)
    slope = max(float(slope), 1e-9)
    photons = 1.0 / slope
    read = math.sqrt(max(float(intercept), 0.0)) * photons
    return photons, read


def quality(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """PSNR (dB) and SSIM (11-px Gaussian window) of two sRGB images in [0, 1]."""
    import kornia

    a, b = a.clamp(0, 1).float(), b.clamp(0, 1).float()
    psnr = kornia.metrics.psnr(a, b, 1.0).item()
    ssim = kornia.metrics.ssim(a, b, 11).mean().item()
    return psnr, ssim
