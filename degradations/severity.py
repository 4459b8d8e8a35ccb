"""Five severities per panel, UDC-C's scale: each a recipe derived from a panel's preset along the axes that vary
in a real device, level 3 being the preset as shipped (its calibration to real captures).

The whole definition is :data:`AXES`: per recipe kind, the field each axis changes and its factor at levels 1-5.
Every axis moves by about one photographic stop per level at its ends (x2 or x0.5 at levels 1 and 5), so that
the levels are evenly spaced in what a camera engineer reads as an exposure or a framing step:

- **face size on the sensor** (``face_px``, udc): the capture pixels a stored face spans. A face half as wide on
  the sensor meets a PSF twice as wide relative to it (a user further from the phone, a wider lens).
  Level 1 (x2) to 5 (x0.5) brackets the face scales the FERPlus calibration tried (512 down to 96 for ``toled``).
- **photon budget** (``photons``, udc): light at full scale, the panel's transmission times the scene's light and
  exposure. One stop per level: x4 at level 1 (a bright scene, a clearer panel) to x0.25 at level 5 (dim indoor
  light, a denser panel). The measured P-OLED budget's low end (1,608 photons) lies 1.3 stops under T-OLED's
  (4,005): T-OLED's level 4-5 budget is a P-OLED panel's.
- **veil** (``veil``, udc): the share of light the panel's stack spreads over the whole frame (haze, glare from
  the display). Half a stop per level: x0.5 at level 1 to x2 at level 5, clipped to 1.
- **scene light** (``darken``, lowlight): the exposure's darkening factor (mean and spread), one stop per level:
  x4 at level 1 to x0.25 at level 5, on the same sensor (its shot and read noise unchanged), so the photon count and
  with it the signal-to-noise ratio fall with the light.

Read noise and the panel's colour (its gains) are properties of the sensor and the panel: they stay as measured.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from degradations.recipe import MAX_PSF_SCALE, Recipe, parse_recipe

LEVELS = (1, 2, 3, 4, 5)
#: The level that is the preset as shipped.
PRESET_LEVEL = 3


@dataclass(frozen=True)
class Axis:
    """One physical axis of the severity scale: the recipe field it scales and its factor at levels 1-5."""

    kind: str  # the recipe kind it applies to (udc, lowlight)
    field: str  # the recipe field it scales
    title: str  # what it is in the device
    factors: tuple[float, float, float, float, float]


AXES: tuple[Axis, ...] = (
    Axis("udc", "face_px", "face size on the sensor (capture px a face spans)", (2.0, 2 ** 0.5, 1.0, 2 ** -0.5, 0.5)),
    Axis("udc", "photons", "photon budget (panel transmission x scene light)", (4.0, 2.0, 1.0, 0.5, 0.25)),
    Axis("udc", "veil", "veil (light spread over the frame)", (0.5, 2 ** -0.5, 1.0, 2 ** 0.5, 2.0)),
    Axis("lowlight", "darken", "scene light (the exposure's darkening factor)", (4.0, 2.0, 1.0, 0.5, 0.25)),
)


def axes_for(kind: str) -> tuple[Axis, ...]:
    return tuple(a for a in AXES if a.kind == kind)


def _scaled(value: Any, field: str, factor: float) -> Any:
    """A recipe field's value times ``factor``: a number, a [low, high] range, a per-dataset mapping, or
    ``darken``'s mean and spread; shares (the veil) stay at most 1."""
    if isinstance(value, dict) and field == "darken":
        return {**value, "mean": value["mean"] * factor, "sd": value["sd"] * factor}
    if isinstance(value, dict):
        return {k: _scaled(v, field, factor) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scaled(v, field, factor) for v in value]
    scaled = value * factor
    return min(scaled, 1.0) if field == "veil" else scaled


def severity_recipe(recipe: Recipe, level: int) -> Recipe:
    """``recipe`` at ``level`` (1 mild ... 5 harsh); level 3 is ``recipe`` itself (the same digest). The name gains
    ``-s<level>`` so that caches and folders tell levels apart."""
    if level not in LEVELS:
        raise ValueError(f"severity must be one of {LEVELS}, got {level!r}")
    if level == PRESET_LEVEL:
        return recipe
    raw = copy.deepcopy(recipe.raw)
    for axis in axes_for(recipe.kind):
        factor = axis.factors[level - 1]
        if axis.field == "face_px":
            raw["face_px"] = _scaled(raw.get("face_px", 512), "face_px", factor)
            if raw.get("psf_scale") is not None:  # a fixed scale instead of the face-size rule: the PSF grows
                raw["psf_scale"] = min(raw["psf_scale"] / factor, MAX_PSF_SCALE)
        elif raw.get(axis.field) is not None:
            raw[axis.field] = _scaled(raw[axis.field], axis.field, factor)
    raw["name"] = f"{recipe.name}-s{level}"
    raw["description"] = f"{recipe.name} at severity {level} of 5 (udcbench UDC-C; level 3 is the preset)"
    return parse_recipe(raw, source=recipe.source)


def severity_table() -> list[dict[str, Any]]:
    """The definition as rows (kind, field, what it is, factor per level): what docs/robustness.md shows."""
    return [{"kind": a.kind, "field": a.field, "axis": a.title,
             **{f"level {lv}": round(f, 3) for lv, f in zip(LEVELS, a.factors)}} for a in AXES]
