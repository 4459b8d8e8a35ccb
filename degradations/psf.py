"""Display point spread functions from first principles (Fraunhofer diffraction), or measured.

The field at the lens is a circular pupil of diameter D times the display's binary pixel-opening
mask tiled at its pitch. For each wavelength the PSF is ``|FFT(field)|^2``; the FFT size is chosen
per wavelength (it scales with ``lambda * f``) so that every wavelength lands on the same sensor
grid. The PSF is computed on a fine grid, integrated over the sensor pixels, summed over each
colour channel's wavelength band, cropped and normalised to unit sum per channel.

A PSF is defined at the capture's sensor scale; :func:`resample_psf` integrates it onto a
dataset's pixel grid (``psf_scale`` dataset pixels per sensor pixel: face crops are downscaled
captures, so usually well below 1).
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

#: Wavelength bands of the R, G, B channels in nm (25 nm steps).
BANDS_NM: dict[str, tuple[int, int]] = {"r": (575, 700), "g": (475, 600), "b": (400, 525)}
STEP_NM = 25


def toled_cell() -> np.ndarray:
    """T-OLED: a 168 um square cell (21 x 21 samples at 8 um) with one vertical slit 5/21 wide."""
    cell = np.zeros((21, 21), dtype=bool)
    cell[:, 8:13] = True
    return cell


def poled_cell() -> np.ndarray:
    """P-OLED: a 336 um pentile cell (42 x 42 samples at 8 um) of small openings on a staggered
    6-sample lattice (7 x 7 sites, odd rows shifted by half a site): 3 x 3 openings alternate with
    4 x 2 and 2 x 4 ones, so the pattern repeats only once per cell. Open ratio 417 / 1764 = 0.236;
    the openings are finer and denser than the T-OLED slit, so the PSF spreads in both directions."""
    cell = np.zeros((42, 42), dtype=bool)
    for i in range(7):
        for j in range(7):
            top, left = 6 * i, 6 * j + 3 * (i % 2)
            h, w = (3, 3) if (i + j) % 2 == 0 else ((2, 4) if i % 2 == 0 else (4, 2))
            cell[np.ix_(np.arange(top, top + h) % 42, np.arange(left, left + w) % 42)] = True
    return cell


MASKS = {"toled": toled_cell, "poled": poled_cell}


def load_mask(path: Path | str) -> np.ndarray:
    """A panel cell from an image: grey levels above half are openings."""
    import cv2

    image = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_GRAYSCALE)  # any file name (not imread)
    if image is None:
        raise ValueError(f"{path}: not a readable mask image")
    cell = image > 127
    if not cell.any():
        raise ValueError(f"{path}: the mask has no openings (white pixels)")
    return cell


@dataclass(frozen=True)
class Optics:
    """Display mask and camera geometry of a simulated PSF."""

    mask: str = "toled"  # a name from MASKS
    mask_sample_um: float = 8.0  # size of one mask sample
    focal_mm: float = 10.0
    pupil_mm: float = 4.0
    #: Sensor pixel of the capture (psf_scale 1). 16 um puts the T-OLED diffraction orders about
    #: 2 px apart at 550 nm, as on the 2048-px-wide captures the presets are calibrated against.
    sensor_um: float = 16.0
    kernel_px: int = 31  # PSF side at the sensor scale (odd)
    wavelengths_nm: tuple[int, ...] = field(default_factory=lambda: tuple(range(400, 701, STEP_NM)))

    def cell(self) -> np.ndarray:
        """The panel's cell of openings: a named mask, or a mask image (white = open, one pixel per
        ``mask_sample_um``)."""
        if self.mask in MASKS:
            return MASKS[self.mask]()
        path = Path(self.mask).expanduser()
        if path.suffix.lower() in (".png", ".bmp", ".tif", ".tiff") and path.is_file():
            return load_mask(path)
        raise ValueError(f"unknown display mask '{self.mask}' (known: {', '.join(MASKS)}, or a mask image file)")

    @property
    def open_ratio(self) -> float:
        return float(self.cell().mean())

    def fine_pitch_um(self) -> tuple[float, int]:
        """Fine sensor-plane sampling and the number of fine samples per sensor pixel.

        The FFT grid must hold twice the pupil (the PSF is the pupil's autocorrelation in frequency)
        at the shortest wavelength: ``lambda_min f / (dx p) >= 2 D / dx``.
        """
        limit = min(self.wavelengths_nm) * 1e-3 * self.focal_mm * 1e3 / (2 * self.pupil_mm * 1e3)
        factor = math.ceil(self.sensor_um / limit)
        return self.sensor_um / factor, factor

    def fft_grid(self) -> int:
        """The side of the largest FFT grid the PSF needs (at the longest wavelength)."""
        pitch, _ = self.fine_pitch_um()
        return int(round(max(self.wavelengths_nm) * 1e-3 * self.focal_mm * 1e3 / (self.mask_sample_um * pitch)))

    def order_spacing_px(self, wavelength_nm: float = 550.0) -> float:
        """Spacing of the mask's diffraction orders on the sensor, in sensor pixels."""
        period_um = self.cell().shape[1] * self.mask_sample_um
        return wavelength_nm * 1e-3 * self.focal_mm * 1e3 / period_um / self.sensor_um


def field_at_lens(optics: Optics, n: int) -> np.ndarray:
    """Pupil times tiled mask on an n x n grid of mask samples, centred."""
    dx = optics.mask_sample_um
    coords = (np.arange(n) - n // 2) * dx
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    pupil = xx**2 + yy**2 <= (optics.pupil_mm * 1e3 / 2) ** 2
    cell = optics.cell()
    idx = np.arange(n) - n // 2
    tiled = cell[np.ix_(idx % cell.shape[0], idx % cell.shape[1])]
    return (pupil & tiled).astype(np.float32)


def psf_at_wavelength(optics: Optics, wavelength_nm: float) -> tuple[np.ndarray, float]:
    """Fine-grid PSF at one wavelength (unit sum) and its pitch in um; centred at ``n // 2``."""
    pitch, _ = optics.fine_pitch_um()
    n = int(round(wavelength_nm * 1e-3 * optics.focal_mm * 1e3 / (optics.mask_sample_um * pitch)))
    spectrum = np.fft.fftshift(np.fft.fft2(field_at_lens(optics, n)))
    psf = (spectrum.real**2 + spectrum.imag**2).astype(np.float64)
    return psf / psf.sum(), pitch


def _bin_to_sensor(fine: np.ndarray, factor: int, kernel_px: int) -> np.ndarray:
    """Crop the centre ``kernel_px * factor`` fine samples and sum each factor x factor block."""
    side = kernel_px * factor
    c = fine.shape[0] // 2
    if side > fine.shape[0]:
        raise ValueError(f"kernel of {kernel_px} px needs {side} fine samples, the grid has {fine.shape[0]}")
    lo = c - side // 2
    crop = fine[lo : lo + side, lo : lo + side]
    return crop.reshape(kernel_px, factor, kernel_px, factor).sum(axis=(1, 3))


@lru_cache(maxsize=16)
def _simulated(optics: Optics) -> np.ndarray:
    _, factor = optics.fine_pitch_um()
    per_wavelength = {w: _bin_to_sensor(psf_at_wavelength(optics, w)[0], factor, optics.kernel_px)
                      for w in optics.wavelengths_nm}
    channels = []
    for lo, hi in BANDS_NM.values():
        band = [per_wavelength[w] for w in optics.wavelengths_nm if lo <= w <= hi]
        if not band:
            raise ValueError(f"no simulated wavelength in the band {lo}-{hi} nm")
        channels.append(np.sum(band, axis=0))
    psf = np.stack(channels).astype(np.float64)
    return psf / psf.sum(axis=(1, 2), keepdims=True)


def display_psf(optics: Optics, cache_dir: Path | None = None) -> np.ndarray:
    """The simulated RGB PSF at the sensor scale, (3, K, K) float64, unit sum per channel.

    Computed once per optics (in memory, and as ``.npy`` under ``cache_dir`` when given).
    """
    if cache_dir is None:
        return _simulated(optics).copy()
    key = hashlib.sha1(repr(sorted(asdict(optics).items())).encode()).hexdigest()[:16]
    path = Path(cache_dir) / "psf" / f"{optics.mask}-{key}.npy"
    if path.is_file():
        return np.load(path)
    psf = _simulated(optics)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp.npy")  # per process: synthesis workers race here
    np.save(tmp, psf)
    tmp.replace(path)
    return psf.copy()


#: The largest measured PSF array a recipe may name (a capture-scale kernel of 1,023 x 1,023 x 3 float64 is 25 MB).
MAX_PSF_FILE_BYTES = 64 << 20


def load_measured_psf(path: Path | str) -> np.ndarray:
    """A measured PSF from ``.npy`` (H x W, H x W x 3 or 3 x H x W) or an image file (grey or RGB).

    Returned as (3, K, K) float64 with unit sum per channel, padded to odd square size.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"PSF file not found: {path}")
    if path.suffix.lower() == ".npy":
        try:  # mapped first: a small file declaring a huge array is refused before anything is allocated
            mapped = np.load(path, mmap_mode="r", allow_pickle=False)
            if mapped.nbytes > MAX_PSF_FILE_BYTES:
                raise ValueError(f"declares {mapped.nbytes / 2**20:.0f} MB, over {MAX_PSF_FILE_BYTES >> 20} MB")
            psf = np.asarray(mapped, dtype=np.float64)
        except ValueError as exc:  # e.g. a pickled object array: refused, never unpickled
            raise ValueError(f"{path}: not a numeric .npy array ({exc})") from None
    else:
        import cv2

        image = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise ValueError(f"{path}: not a readable image")
        psf = image.astype(np.float64)
        if psf.ndim == 3:
            psf = psf[..., 2::-1][..., :3]  # BGR(A) -> RGB
    if psf.ndim == 2:
        psf = np.repeat(psf[None], 3, axis=0)
    elif psf.ndim == 3 and psf.shape[-1] in (1, 3) and psf.shape[0] not in (1, 3):
        psf = np.moveaxis(psf, -1, 0)
    if psf.ndim != 3 or psf.shape[0] not in (1, 3):
        raise ValueError(f"{path}: a PSF must have one or three channels, got shape {psf.shape}")
    if psf.shape[0] == 1:
        psf = np.repeat(psf, 3, axis=0)
    if (psf < 0).any() or not np.isfinite(psf).all() or (psf.sum(axis=(1, 2)) <= 0).any():
        raise ValueError(f"{path}: a PSF must be finite, non-negative and non-zero in every channel")
    side = max(psf.shape[1:]) | 1  # odd
    padded = np.zeros((3, side, side))
    oy, ox = (side - psf.shape[1]) // 2, (side - psf.shape[2]) // 2
    padded[:, oy : oy + psf.shape[1], ox : ox + psf.shape[2]] = psf
    return padded / padded.sum(axis=(1, 2), keepdims=True)


def _area_weights(n_in: int, scale: float) -> np.ndarray:
    """(n_out, n_in) overlap of output pixels with input pixels, centres aligned; n_out odd."""
    half_in = n_in / 2
    n_out = 2 * max(0, math.ceil(half_in * scale - 0.5)) + 1
    edges_out = (np.arange(n_out + 1) - n_out / 2) / scale  # output pixel edges in input pixels
    edges_in = np.arange(n_in + 1) - half_in
    lo = np.maximum(edges_out[:-1, None], edges_in[None, :-1])
    hi = np.minimum(edges_out[1:, None], edges_in[None, 1:])
    return np.clip(hi - lo, 0.0, None)


def resample_psf(psf: np.ndarray, scale: float) -> np.ndarray:
    """Integrate a (3, K, K) sensor-scale PSF onto a grid of ``scale`` dataset pixels per sensor pixel.

    Exact area integration of the piecewise-constant PSF (separable in x and y); unit sum per channel.
    """
    if scale <= 0:
        raise ValueError(f"psf_scale must be positive, got {scale}")
    wy = _area_weights(psf.shape[1], scale)
    wx = _area_weights(psf.shape[2], scale)
    out = wy @ psf @ wx.T  # two matrix products per channel (an unoptimised einsum is O(K^4): minutes at 511 px)
    return out / out.sum(axis=(1, 2), keepdims=True)


def central_lobe_fraction(psf: np.ndarray, radius: float) -> float:
    """Share of a single-channel PSF's energy within ``radius`` samples of its centre."""
    n_y, n_x = psf.shape
    yy, xx = np.mgrid[0:n_y, 0:n_x]
    inside = (yy - n_y // 2) ** 2 + (xx - n_x // 2) ** 2 <= radius**2
    return float(psf[inside].sum() / psf.sum())


def mtf(psf: np.ndarray, frequencies: np.ndarray, axis: str) -> np.ndarray:
    """Modulation transfer of a single-channel PSF along x or y at ``frequencies`` (cycles/px)."""
    line = psf.sum(axis=0 if axis == "x" else 1)
    positions = np.arange(line.size) - line.size // 2
    response = np.abs(np.exp(-2j * np.pi * np.outer(frequencies, positions)) @ line)
    return response / line.sum()
