"""``udcbench calibrate``: fit a UDC recipe to a user's own pair (a clean image and the capture of the same scene
through the panel), so that ``udcbench synth --recipe`` simulates that panel. The pair is aligned first
(:func:`align`: shift, rotation and scale, sub-pixel), as real pairs rarely are to a pixel.

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

#: A pair whose alignment moves no pixel by more than this (px) is taken as aligned and left as it is.
ALIGNED_PX = 0.1
#: The alignment's fit (ECC's correlation of the green channels, after alignment) below which a pair is refused
#: as not of one scene; a blurred, hazed capture of the scene correlates at 0.9 and more.
MIN_ALIGNED_CORRELATION = 0.5
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
    rotation_deg: float = 0.0  # the alignment applied (:class:`Alignment`)
    scale: float = 1.0
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
                             "shift_px": [round(v, 3) for v in self.shift_px],
                             "rotation_deg": round(self.rotation_deg, 4), "scale": round(self.scale, 5)}],
        })
        return raw


#: The smallest capture side ``calibrate`` takes (a 1 x 1 pair gave an OpenCV traceback in the alignment).
MIN_CAPTURE_SIDE = 32


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
    if min(image.shape[:2]) < MIN_CAPTURE_SIDE:
        raise UdcbenchError(f"{path}: {image.shape[1]} x {image.shape[0]} pixels; a capture for calibrate needs at "
                            f"least {MIN_CAPTURE_SIDE} on each side (the PSF and its alignment need room)")
    scale = 65535.0 if image.dtype == np.uint16 else 255.0
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    rgb = image[..., 2::-1][..., :3].astype(np.float64) / scale
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None]


@dataclass
class Alignment:
    """Where the capture lies against the clean image: ``capture(x) = clean(warp x)`` for a 2 x 3 ``warp`` in
    pixel coordinates (rotation, scale and shift), and the border both are cropped by after the clean image is
    warped. The properties describe it about the image's centre."""

    warp: np.ndarray
    correlation: float
    margin: int
    size: tuple[int, int] = (0, 0)  # (width, height)

    @property
    def shift_px(self) -> tuple[float, float]:
        """(dx, dy) of the capture against the clean image, at the image's centre."""
        w, h = self.size
        centre = np.array([(w - 1) / 2, (h - 1) / 2, 1.0])
        moved = self.warp @ centre - centre[:2]
        return float(-moved[0]), float(-moved[1])

    @property
    def rotation_deg(self) -> float:
        return math.degrees(math.atan2(self.warp[1, 0], self.warp[0, 0]))

    @property
    def scale(self) -> float:
        return float(math.sqrt(abs(np.linalg.det(self.warp[:, :2]))))


def align(clean: torch.Tensor, udc: torch.Tensor, psf: torch.Tensor) -> Alignment:
    """Align the capture to the clean image: the shift by phase correlation, then rotation and the sub-pixel
    shift by ECC (Evangelidis and Psarakis 2008: a correlation, so the panel's dimming and colour do not matter),
    and scale too where that fits better, on the green channels in linear light. The clean image is blurred by
    the panel's diffraction PSF first (``psf``, the base recipe's), whose asymmetry would otherwise pass for a
    shift. Refused in one line when it does not converge or leaves the two uncorrelated (not one scene)."""
    import cv2

    blurred = Fd.blur(Fd.srgb_to_linear(clean), psf.double())
    a, b = (t[0, 1].numpy().astype(np.float32) for t in (blurred, Fd.srgb_to_linear(udc)))
    h, w = a.shape
    (dx, dy), _ = cv2.phaseCorrelate(a, b, cv2.createHanningWindow((w, h), cv2.CV_32F))
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 300, 1e-7)
    best = None
    for motion in (cv2.MOTION_EUCLIDEAN, cv2.MOTION_AFFINE):  # scale (and shear) only where it fits better
        start = best[1] if best is not None else np.array([[1, 0, -dx], [0, 1, -dy]], dtype=np.float32)
        try:
            found = cv2.findTransformECC(b, a, start.copy(), motion, criteria, None, 5)
        except cv2.error:
            continue
        if best is None or found[0] > best[0] + 1e-3:
            best = found
    if best is None:
        raise UdcbenchError("the pair could not be aligned (ECC did not converge): is the capture of the same "
                            "scene as the clean image?")
    warp = best[1]
    # the fit of the result, measured here (ECC's own figure can stay high on a pair that is not one scene)
    on_capture = cv2.warpAffine(a, warp, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    m = max(2, min(h, w) // 20)
    correlation = float(np.corrcoef(on_capture[m:-m, m:-m].ravel(), b[m:-m, m:-m].ravel())[0, 1])
    if not correlation >= MIN_ALIGNED_CORRELATION:
        raise UdcbenchError(f"the pair could not be aligned: after alignment the images correlate at "
                            f"{correlation:.2f} (under {MIN_ALIGNED_CORRELATION}); is the capture of the same scene?")
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]], dtype=np.float64)
    moved = np.abs(corners @ warp.astype(np.float64).T - corners[:, :2]).max()
    if moved < ALIGNED_PX:  # aligned already: no pixel moves by this much, so neither image is resampled
        return Alignment(np.eye(2, 3), float(correlation), 0, (w, h))
    return Alignment(warp.astype(np.float64), float(correlation), int(math.ceil(moved)) + 2, (w, h))


def apply_alignment(clean: torch.Tensor, udc: torch.Tensor, alignment: Alignment,
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """The clean image warped onto the capture's pixels (Lanczos; the capture, with its noise, is never
    resampled), both cropped by the alignment's margin."""
    import cv2

    if alignment.margin == 0:
        return clean, udc
    h, w = clean.shape[-2:]
    image = clean[0].permute(1, 2, 0).numpy()
    warped = cv2.warpAffine(image, alignment.warp, (w, h), flags=cv2.INTER_LANCZOS4 | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_REFLECT)
    m = alignment.margin
    if 2 * m >= min(h, w) // 2:
        raise UdcbenchError(f"the pair could not be aligned: the capture is off by {m} px, too much of an image "
                            f"of {w} x {h}")
    crop = (slice(None), slice(None), slice(m, h - m), slice(m, w - m))
    aligned = torch.from_numpy(np.ascontiguousarray(warped)).permute(2, 0, 1)[None].clamp(0, 1)
    return aligned[crop].contiguous(), udc[crop].contiguous()


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
    alignment = align(clean, udc, build_degradation(base).psf(1.0))
    clean, udc = apply_alignment(clean, udc, alignment)
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
                  shift_px=alignment.shift_px, rotation_deg=alignment.rotation_deg, scale=alignment.scale)
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
