"""Degradation recipes: YAML or JSON files with parameter ranges. Presets ship in ``presets/``."""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from degradations.psf import Optics

KINDS = ("udc", "lowlight")
DOMAINS = ("linear", "srgb")


#: psf_scale of a frame at the capture's own pixels (the scale the PSF, halo and stripes are defined at).
CAPTURE_SCALE = 1.0


class RecipeError(ValueError):
    """A recipe file that cannot be used."""


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("degradations.presets").iterdir() if p.name.endswith(".yaml"))


#: Recipe keys that document it and take no part in the degradation.
DOC_KEYS = frozenset({"description", "calibration"})


@dataclass(frozen=True)
class Recipe:
    """A parsed, validated recipe. ``raw`` keeps the file's content (it is what the manifest records)."""

    name: str
    kind: str
    raw: dict[str, Any] = field(repr=False)
    source: str = ""

    @property
    def domain(self) -> str:
        return self.raw.get("domain", "linear")

    @property
    def digest(self) -> str:
        """sha256 of the canonical JSON of the recipe's parameters (it seeds the per-image parameters), so
        the documentation keys (``DOC_KEYS``: description, calibration notes) never change the images."""
        params = {k: v for k, v in self.raw.items() if k not in DOC_KEYS}
        return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()

    def optics(self) -> Optics | None:
        psf = self.raw.get("psf") or {}
        if "file" in psf:
            return None
        fields = {k: v for k, v in psf.items() if k != "file"}
        mask = Path(str(fields.get("mask", ""))).expanduser()
        if mask.suffix and not mask.is_absolute() and self.source and Path(self.source).is_file():
            fields["mask"] = str(Path(self.source).parent / mask)  # a mask image, relative to the recipe file
        return Optics(**fields)

    def psf_file(self) -> Path | None:
        psf = self.raw.get("psf") or {}
        if "file" not in psf:
            return None
        path = Path(psf["file"]).expanduser()
        if not path.is_absolute() and self.source and Path(self.source).is_file():
            path = Path(self.source).parent / path  # relative to the recipe file
        return path

    def scatter(self) -> dict[str, Any] | None:
        """The scatter halo (``fraction`` range, capture-scale ``kernel_px``, ``components`` as rows of
        weight, sigma_x, sigma_y), or None."""
        return self.raw.get("scatter")

    def psf_scale(self, dataset: str, width: int) -> float:
        """Dataset pixels per capture pixel for a stored face image of ``width`` pixels of ``dataset`` (the
        face-size rule: a stored face would span ``face_px`` capture pixels). A frame at the capture's own
        pixels has psf_scale 1 (:data:`CAPTURE_SCALE`, ``UDCDegradation.capture``), whatever its width."""
        if self.raw.get("psf_scale") is not None:
            return float(self.raw["psf_scale"])
        fractions = self.raw.get("face_fraction") or {}
        fraction = float(fractions.get(dataset, fractions.get("default", 1.0)))
        return width * fraction / self.face_px(dataset)

    def face_px(self, dataset: str) -> float:
        """Capture pixels a stored face would span: one number, or per dataset with a ``default``."""
        value = self.raw.get("face_px", 512)
        if isinstance(value, dict):
            value = value.get(dataset, value.get("default", 512))
        return float(value)


#: Limits that keep one image's degradation within a stated memory budget (about 1 GB): kernel sides at capture
#: scale (the presets use 31-511), the PSF's FFT grid (the presets' 1,000-1,625 per side; a complex grid of
#: 4,096 x 4,096 takes 268 MB), and dataset pixels per capture pixel (the presets' 0.06-0.6).
MAX_KERNEL_PX = 1023
MAX_FFT_GRID = 4096
MAX_PSF_SCALE = 4.0


#: The largest magnitude a recipe number may have: float32's, the precision the degradation computes in (1e39 is
#: finite in float64 and infinite in float32, and gave an all-black dataset).
FLOAT32_MAX = 3.4028234663852886e38


def _number(value: Any) -> bool:
    """A finite real number, finite in float32 too (not a bool, NaN or infinity)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and abs(value) <= FLOAT32_MAX)


def _positive(raw: dict, key: str, high: float | None = None, where: str = "") -> None:
    value = raw.get(key)
    if not _number(value) or value <= 0 or (high is not None and value > high):
        bound = f" and at most {high}" if high is not None else ""
        raise RecipeError(f"'{where}{key}' must be a positive number{bound}, got {value!r}")


def _odd_kernel(value: Any, key: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 3 or value % 2 == 0 or value > MAX_KERNEL_PX:
        raise RecipeError(f"'{key}' must be an odd integer from 3 to {MAX_KERNEL_PX} (the memory budget), got "
                          f"{value!r}")


def _range(raw: dict, key: str, low: float = 0.0, high: float | None = None) -> None:
    value = raw.get(key)
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(_number(v) for v in value) or value[0] > value[1]):
        raise RecipeError(f"'{key}' must be a range [low, high] of finite numbers, got {value!r}")
    if value[0] < low or (high is not None and value[1] > high):
        raise RecipeError(f"'{key}' must lie within [{low}, {high if high is not None else 'inf'}], got {value}")


def _check_scatter(raw: dict) -> None:
    """The optional ``scatter``, ``veil`` and ``stripes`` entries of a udc recipe."""
    scatter = raw.get("scatter")
    if scatter is not None:
        if not isinstance(scatter, dict) or not {"fraction", "kernel_px", "components"} <= set(scatter):
            raise RecipeError("'scatter' needs fraction (a range), kernel_px and components")
        _range(scatter, "fraction", 0.0, 1.0)
        _odd_kernel(scatter["kernel_px"], "scatter.kernel_px")
        rows = scatter["components"]
        if (not isinstance(rows, list) or not rows
                or not all(isinstance(r, (list, tuple)) and len(r) == 3
                           and all(_number(v) and v > 0 for v in r) for r in rows)):
            raise RecipeError("'scatter.components' must be rows [weight, sigma_x, sigma_y] of positive numbers")
    if raw.get("veil") is not None:
        _range(raw, "veil", 0.0, 1.0)
    stripes = raw.get("stripes")
    if stripes is not None:
        if not isinstance(stripes, dict):
            raise RecipeError("'stripes' must give amplitude and period ranges")
        _range(stripes, "amplitude", 0.0)
        _range(stripes, "period", 2.0)


def _check_optics(recipe: Recipe) -> None:
    """The PSF's optics: positive finite sizes, a kernel and an FFT grid within the memory budget."""
    psf = recipe.raw["psf"]
    for key in ("mask_sample_um", "focal_mm", "pupil_mm", "sensor_um"):
        if key in psf:
            _positive(psf, key, where="psf.")
    if "kernel_px" in psf:
        _odd_kernel(psf["kernel_px"], "psf.kernel_px")
    try:
        optics = recipe.optics()
        optics.cell()
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"'psf': {exc}") from None
    if optics.fft_grid() > MAX_FFT_GRID:
        raise RecipeError(f"'psf': these optics need a {optics.fft_grid()}-sample FFT grid per side, over the memory "
                          f"budget's {MAX_FFT_GRID} (a smaller focal_mm, a larger mask_sample_um)")


def _check_scale(raw: dict) -> None:
    """The face scale and output settings: positive finite numbers within bounds."""
    if raw.get("psf_scale") is not None:
        _positive(raw, "psf_scale", MAX_PSF_SCALE)
    face_px = raw.get("face_px", 512)
    for key, value in (face_px.items() if isinstance(face_px, dict) else [("", face_px)]):
        _positive({"face_px": value}, "face_px", where=f"{key}." if key else "")
    for key, value in (raw.get("face_fraction") or {}).items():
        _positive({"face_fraction": value}, "face_fraction", 1.0, where=f"{key}.")
    quality = raw.get("jpeg_quality", 95)
    if not isinstance(quality, int) or isinstance(quality, bool) or not 1 <= quality <= 100:
        raise RecipeError(f"'jpeg_quality' must be an integer from 1 to 100, got {quality!r}")


def parse_recipe(raw: dict[str, Any], source: str = "") -> Recipe:
    """Validate a recipe dictionary."""
    if not isinstance(raw, dict):
        raise RecipeError("a recipe must be a mapping")
    kind = raw.get("kind", "udc")
    if kind not in KINDS:
        raise RecipeError(f"kind must be one of {KINDS}, got {kind!r}")
    if raw.get("domain", "linear") not in DOMAINS:
        raise RecipeError(f"domain must be one of {DOMAINS}, got {raw.get('domain')!r}")
    if kind == "udc":
        gains = raw.get("gains")
        if not isinstance(gains, dict) or set(gains) != {"r", "g", "b"}:
            raise RecipeError("'gains' must give ranges for r, g and b")
        for channel in "rgb":
            _range(gains, channel, 0.0)
        _range(raw, "photons", 1.0)
        if not _number(raw.get("read_noise", 0.0)) or raw.get("read_noise", 0.0) < 0:
            raise RecipeError(f"'read_noise' must be a non-negative number, got {raw.get('read_noise')!r}")
        _check_scatter(raw)
        psf = raw.get("psf")
        if not isinstance(psf, dict):
            raise RecipeError("'psf' must be a mapping (mask and optics, or file)")
        if "file" not in psf:
            _check_optics(Recipe(name="check", kind=kind, raw=raw, source=source))
    else:
        darken = raw.get("darken") or {}
        if not isinstance(darken, dict) or not {"mean", "sd", "range"} <= set(darken):
            raise RecipeError("'darken' needs mean, sd and range")
        _range(darken, "range", 0.0, 1.0)
        for key in ("mean", "sd"):
            if not _number(darken[key]) or darken[key] < 0:
                raise RecipeError(f"'darken.{key}' must be a non-negative number, got {darken[key]!r}")
        for key in ("log_shot", "red_gain", "blue_gain"):
            _range(raw, key, -50.0, 50.0)
        read = raw.get("read_from_shot")
        if read is not None:
            if not isinstance(read, dict) or not {"slope", "intercept", "sd"} <= set(read):
                raise RecipeError("'read_from_shot' needs slope, intercept and sd")
            for key in ("slope", "intercept", "sd"):
                if not _number(read[key]) or abs(read[key]) > 100 or (key == "sd" and read[key] < 0):
                    raise RecipeError(f"'read_from_shot.{key}' must be a finite number within +-100 (sd not "
                                      f"negative), got {read[key]!r}")
        bits = raw.get("raw_bits", 12)
        if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= 16:
            raise RecipeError(f"'raw_bits' must be an integer from 1 to 16, got {bits!r}")
    _check_scale(raw)
    name = str(raw.get("name", Path(source).stem or "recipe"))
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", name) or ".." in name:
        raise RecipeError(f"'name': {name!r} is not a plain name (letters, digits and . _ + -): it names folders")
    return Recipe(name=name, kind=kind, raw=raw, source=source)


def parse_recipe_override(recipe: Recipe, **fields: Any) -> Recipe:
    """The same recipe with some top-level fields replaced (e.g. ``psf_scale``)."""
    return parse_recipe({**recipe.raw, **fields}, source=recipe.source)


def load_recipe(name_or_path: str | Path) -> Recipe:
    """A preset by name (``toled``, ``poled``, ``lowlight``) or a recipe file (.yaml, .yml, .json)."""
    text_source = str(name_or_path)
    if text_source in preset_names():
        text = resources.files("degradations.presets").joinpath(f"{text_source}.yaml").read_text()
        return parse_recipe(yaml.safe_load(text), source=f"preset:{text_source}")
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        raise RecipeError(f"no preset or recipe file '{name_or_path}' (presets: {', '.join(preset_names())})")
    try:
        raw = json.loads(path.read_text()) if path.suffix.lower() == ".json" else yaml.safe_load(path.read_text())
    except (ValueError, yaml.YAMLError) as exc:
        raise RecipeError(f"{path}: cannot parse ({exc})") from None
    return parse_recipe(raw, source=str(path))
