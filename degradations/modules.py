"""Module layer over :mod:`degradations.functional` (the kornia pattern).

Each module draws its random parameters with a ``torch.Generator`` (one for the batch, or one per
image), keeps them in ``module.params`` and replays them exactly when given ``params=``::

    udc = UDCDegradation(load_recipe("toled"))
    y = udc(x, generator=torch.Generator().manual_seed(0))
    again = udc(x, params=udc.params)          # bit-identical
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from degradations import functional as Fd
from degradations.psf import display_psf, load_measured_psf, resample_psf
from degradations.recipe import CAPTURE_SCALE, Recipe

Generators = torch.Generator | Sequence[torch.Generator] | None


def _per_image(generators: Generators, batch: int) -> list[torch.Generator | None]:
    if generators is None or isinstance(generators, torch.Generator):
        return [generators] * batch
    if len(generators) != batch:
        raise ValueError(f"got {len(generators)} generators for a batch of {batch}")
    return list(generators)


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * torch.rand((), generator=generator, dtype=torch.float64).item()


def _seed(generator: torch.Generator | None) -> int:
    return int(torch.randint(0, 2**62, (), generator=generator).item())


def noise_generators(seeds: torch.Tensor) -> list[torch.Generator]:
    """One generator per image from the ``noise_seed`` parameters (what makes noise replayable)."""
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


class RandomModule(nn.Module):
    """A module with random per-image parameters: ``sample`` draws them, ``forward`` keeps the ones it used in
    ``self.params`` and replays given ``params`` exactly."""

    def __init__(self):
        super().__init__()
        self.params: dict[str, torch.Tensor] | None = None

    def sample(self, batch: int, generators: Generators = None) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _draw(self, batch: int, params: dict | None, generator: Generators) -> dict[str, torch.Tensor]:
        """``params`` when given, else a new draw; either way kept as ``self.params``."""
        self.params = params if params is not None else self.sample(batch, generator)
        return self.params


class ChannelScale(RandomModule):
    """Per-channel gains drawn uniformly per image from ``ranges`` ((lo, hi) for R, G, B)."""

    def __init__(self, ranges: Sequence[Sequence[float]]):
        super().__init__()
        self.ranges = [tuple(map(float, r)) for r in ranges]

    def sample(self, batch: int, generators: Generators = None) -> dict[str, torch.Tensor]:
        gens = _per_image(generators, batch)
        gains = [[_uniform(lo, hi, g) for lo, hi in self.ranges] for g in gens]
        return {"gains": torch.tensor(gains, dtype=torch.float64)}

    def forward(self, x: torch.Tensor, params: dict | None = None, generator: Generators = None) -> torch.Tensor:
        return Fd.channel_scale(x, self._draw(len(x), params, generator)["gains"])


class PoissonGaussianNoise(RandomModule):
    """Sensor noise with a photon count L drawn log-uniformly per image from ``photons``."""

    def __init__(self, photons: Sequence[float], read_noise: float = Fd.READ_NOISE_E):
        super().__init__()
        self.photons = tuple(map(float, photons))
        self.read_noise = float(read_noise)

    def sample(self, batch: int, generators: Generators = None) -> dict[str, torch.Tensor]:
        lo, hi = map(math.log, self.photons)
        photons, seeds = [], []
        for g in _per_image(generators, batch):
            photons.append(math.exp(_uniform(lo, hi, g)))
            seeds.append(_seed(g))
        return {"photons": torch.tensor(photons, dtype=torch.float64), "noise_seed": torch.tensor(seeds)}

    def forward(self, x: torch.Tensor, params: dict | None = None, generator: Generators = None) -> torch.Tensor:
        p = self._draw(len(x), params, generator)
        return Fd.poisson_gaussian_noise(x, p["photons"], noise_generators(p["noise_seed"]), self.read_noise)


class UDCDegradation(RandomModule):
    """MPGNet's three modules in order (gains, PSF blur, noise) plus quantisation, from a recipe.

    Input and output are sRGB images (B, 3, H, W) in [0, 1]; the output is quantised to 8 bits.
    ``psf_scale`` (dataset pixels per capture pixel) resamples the capture-scale PSF; resampled
    PSFs are cached per scale.
    """

    def __init__(self, recipe: Recipe, cache_dir: Path | None = None):
        super().__init__()
        if recipe.kind != "udc":
            raise ValueError(f"recipe '{recipe.name}' is a {recipe.kind} recipe, not udc")
        self.recipe = recipe
        gains = recipe.raw["gains"]
        self.scale = ChannelScale([gains["r"], gains["g"], gains["b"]])
        self.noise = PoissonGaussianNoise(recipe.raw["photons"], recipe.raw.get("read_noise", Fd.READ_NOISE_E))
        psf_file = recipe.psf_file()
        self.capture_psf = load_measured_psf(psf_file) if psf_file else display_psf(recipe.optics(), cache_dir)
        scatter = recipe.scatter()
        self.capture_halo = None if scatter is None else np.repeat(Fd.gaussian_halo(
            scatter["kernel_px"], torch.tensor(scatter["components"], dtype=torch.float64)).numpy()[None], 3, axis=0)
        self._psf_cache: dict[tuple[str, float], torch.Tensor] = {}

    def _resampled(self, which: str, psf_scale: float) -> torch.Tensor:
        key = (which, round(float(psf_scale), 6))
        if key not in self._psf_cache:
            capture = self.capture_psf if which == "psf" else self.capture_halo
            self._psf_cache[key] = torch.from_numpy(resample_psf(capture, key[1])).float()
        return self._psf_cache[key]

    def psf(self, psf_scale: float) -> torch.Tensor:
        """The diffraction (or measured) PSF on the dataset's pixel grid, (3, k, k)."""
        return self._resampled("psf", psf_scale)

    def halo(self, psf_scale: float) -> torch.Tensor | None:
        """The scatter halo on the dataset's pixel grid, (3, K, K), or None without ``scatter``."""
        return None if self.capture_halo is None else self._resampled("halo", psf_scale)

    def sample(self, batch: int, generators: Generators = None) -> dict[str, torch.Tensor]:
        """Per-image parameters: gains, photons, noise_seed, and with the recipe's ``scatter`` / ``veil`` /
        ``stripes`` the halo's share, the veil's share and the stripes' amplitude, period (capture pixels) and
        phase (each image from its own generator if given; the extra draws come after the others, so a recipe
        without them draws what it always drew)."""
        raw = self.recipe.raw
        rows = []
        for g in _per_image(generators, batch):
            row = {**self.scale.sample(1, g), **self.noise.sample(1, g)}
            if raw.get("scatter") is not None:
                row["scatter"] = torch.tensor([_uniform(*raw["scatter"]["fraction"], g)], dtype=torch.float64)
            if raw.get("veil") is not None:
                row["veil"] = torch.tensor([_uniform(*raw["veil"], g)], dtype=torch.float64)
            if raw.get("stripes") is not None:
                stripes = raw["stripes"]
                row["stripe_amplitude"] = torch.tensor([_uniform(*stripes["amplitude"], g)], dtype=torch.float64)
                row["stripe_period"] = torch.tensor([_uniform(*stripes["period"], g)], dtype=torch.float64)
                row["stripe_phase"] = torch.tensor([_uniform(0.0, 2 * math.pi, g)], dtype=torch.float64)
            rows.append(row)
        return {k: torch.cat([r[k] for r in rows]) for k in rows[0]}

    def forward(self, x: torch.Tensor, psf_scale: float = CAPTURE_SCALE, params: dict | None = None,
                generator: Generators = None, quantize: bool = True, noise: bool = True) -> torch.Tensor:
        """Degrade sRGB images at ``psf_scale`` dataset pixels per capture pixel (``recipe.psf_scale``: the
        face-size rule for stored faces; 1 for a frame at the capture's own pixels, see :meth:`capture`).
        ``noise=False`` leaves the sensor noise out (a noise-free simulation, e.g. to fit a recipe)."""
        p = self._draw(len(x), params, generator)
        linear = self.recipe.domain == "linear"
        y = Fd.srgb_to_linear(x) if linear else x
        y = self.scale(y, params={"gains": p["gains"]})
        psf = self.psf(psf_scale).to(y.device)
        halo = self.halo(psf_scale)
        if halo is not None and "scatter" in p:
            y = Fd.scatter_blur(y, psf, halo.to(y.device), p["scatter"])
        else:
            y = Fd.blur(y, psf)
        if "veil" in p:
            y = Fd.veil(y, p["veil"])
        if "stripe_amplitude" in p:
            y = Fd.column_pattern(y, p["stripe_amplitude"], p["stripe_period"] * psf_scale, p["stripe_phase"])
        if noise:
            y = self.noise(y, params={k: p[k] for k in ("photons", "noise_seed")})
        y = Fd.linear_to_srgb(y) if linear else y.clamp(0.0, 1.0)
        return Fd.quantize(y) if quantize else y

    def capture(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        """Degrade frames at the capture's own pixels (psf_scale 1, e.g. a 2048-px frame): the PSF, halo and
        stripes at the scale they are defined at, never the face-size rule."""
        return self(x, psf_scale=CAPTURE_SCALE, **kwargs)


class LowLightDegradation(RandomModule):
    """Brooks et al.'s unprocessing, darkening, heteroscedastic noise and processing back, from a recipe.

    It takes ``psf_scale`` like :class:`UDCDegradation`, so that synthesis calls either the same way, and has
    no PSF to scale: no blur.
    """

    def __init__(self, recipe: Recipe):
        super().__init__()
        if recipe.kind != "lowlight":
            raise ValueError(f"recipe '{recipe.name}' is a {recipe.kind} recipe, not lowlight")
        self.recipe = recipe

    def _darkening(self, g: torch.Generator | None) -> float:
        spec = self.recipe.raw["darken"]
        lo, hi = spec["range"]
        for _ in range(1000):  # truncated normal by rejection
            value = spec["mean"] + spec["sd"] * torch.randn((), generator=g, dtype=torch.float64).item()
            if lo <= value <= hi:
                return value
        return float(np.clip(spec["mean"], lo, hi))

    def sample(self, batch: int, generators: Generators = None) -> dict[str, torch.Tensor]:
        raw = self.recipe.raw
        rows = []
        for g in _per_image(generators, batch):
            darken = self._darkening(g)
            log_shot = _uniform(*raw["log_shot"], g)
            read = raw["read_from_shot"]
            log_read = read["slope"] * log_shot + read["intercept"] + read["sd"] * torch.randn(
                (), generator=g, dtype=torch.float64).item()
            rows.append((darken, math.exp(log_shot), math.exp(log_read), _uniform(*raw["red_gain"], g),
                         _uniform(*raw["blue_gain"], g), _seed(g)))
        columns = list(zip(*rows))
        names = ("darken", "shot", "read", "red_gain", "blue_gain")
        params = {n: torch.tensor(c, dtype=torch.float64) for n, c in zip(names, columns[:5])}
        params["noise_seed"] = torch.tensor(columns[5])
        return params

    def forward(self, x: torch.Tensor, psf_scale: float = 1.0, params: dict | None = None,
                generator: Generators = None, quantize: bool = True) -> torch.Tensor:
        del psf_scale  # no PSF in low light (see the class docstring)
        p = self._draw(len(x), params, generator)
        y = Fd.srgb_to_linear(Fd.inverse_tone_curve(x))
        y = Fd.white_balance(y, p["red_gain"].to(y), p["blue_gain"].to(y), inverse=True)
        y = y * p["darken"].to(y)[:, None, None, None]
        y = Fd.heteroscedastic_noise(y, p["shot"], p["read"], noise_generators(p["noise_seed"]))
        y = Fd.quantize(y, int(self.recipe.raw.get("raw_bits", 12)))
        y = Fd.white_balance(y, p["red_gain"].to(y), p["blue_gain"].to(y))
        y = Fd.tone_curve(Fd.linear_to_srgb(y))
        return Fd.quantize(y) if quantize else y


def build_degradation(recipe: Recipe, cache_dir: Path | None = None) -> UDCDegradation | LowLightDegradation:
    """The module a recipe describes."""
    return UDCDegradation(recipe, cache_dir) if recipe.kind == "udc" else LowLightDegradation(recipe)
