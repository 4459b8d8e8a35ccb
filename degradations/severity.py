"""Five severities per panel, UDC-C's scale: each a recipe derived from a panel's preset along the axes that vary
in a real device, level 3 being the preset as shipped (its calibration to real captures).

The whole definition is :data:`AXES`: per recipe kind, the field each axis changes, how, and its factor at levels
1-5. Every axis doubles (or halves) per level or per two levels, so that the levels are evenly spaced in what a
camera engineer reads as a stop of light, a step of framing or a thicker panel:

- **face size on the sensor** (``face_px``, udc, scaled): the capture pixels a stored face spans. A face half as
  wide on the sensor meets a PSF twice as wide relative to it (a user further from the phone, a wider lens).
  Level 1 (x2) to 5 (x1/2) brackets the face scales the FERPlus calibration tried (512 down to 96 for ``toled``).
- **scene light** (``photons``, udc, scaled): photons at full scale, the scene's light times the exposure. One stop
  per level: x4 at level 1 (daylight) to x1/4 at level 5 (a dim room).
- **panel transmission** (``gains``, udc, optical density): each channel's transmission T becomes T^f, the
  Beer-Lambert law for an absorbing layer f times as thick: f = 1/4, 1/2, 1, 2, 4. A panel whose captures are
  exposure-compensated (T-OLED's gains near 1) barely changes; a dark, blue-cut one (P-OLED) clears at level 1 and
  turns black at level 5.
- **scattering** (``scatter.fraction``, udc, optical depth): the share of light the panel's stack scatters into its
  halo, 1 - exp(-tau), its depth tau times f = 1/4, 1/2, 1, 2, 4 (the same thickness as the transmission's).
- **veil** (``veil``, udc, scaled): the share of light spread over the whole frame (display glare): x1/2 at level 1
  to x2 at level 5 (clipped to 1).
- **scene light** (``darken``, lowlight, scaled): the exposure's darkening factor (mean and spread), one stop per
  level: x4 at level 1 to x1/4 at level 5, on the same sensor (its shot and read noise unchanged), so the signal-to-
  noise ratio falls with the light.

Read noise is the sensor's own: it stays as measured.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from degradations.recipe import MAX_PSF_SCALE, Recipe, parse_recipe

LEVELS = (1, 2, 3, 4, 5)
#: The level that is the preset as shipped.
PRESET_LEVEL = 3


#: How an axis changes its field: ``scale`` multiplies it; ``density`` raises a transmission T to T^f (Beer-Lambert);
#: ``depth`` scales a scattered share s through its optical depth, 1 - (1 - s)^f.
RULES = ("scale", "density", "depth")
#: A panel f times as thick, per level.
THICKNESS = (0.25, 0.5, 1.0, 2.0, 4.0)


@dataclass(frozen=True)
class Axis:
    """One physical axis of the severity scale: the recipe field it changes, how (:data:`RULES`) and its factor at
    levels 1-5."""

    kind: str  # the recipe kind it applies to (udc, lowlight)
    field: str  # the recipe field it changes (``scatter.fraction``: a nested one)
    title: str  # what it is in the device
    factors: tuple[float, float, float, float, float]
    rule: str = "scale"


AXES: tuple[Axis, ...] = (
    Axis("udc", "face_px", "face size on the sensor (capture px a face spans)", (2.0, 2 ** 0.5, 1.0, 2 ** -0.5, 0.5)),
    Axis("udc", "photons", "scene light (photons at full scale)", (4.0, 2.0, 1.0, 0.5, 0.25)),
    Axis("udc", "gains", "panel transmission (per channel, as the panel's thickness)", THICKNESS, "density"),
    Axis("udc", "scatter.fraction", "scattering into the halo (as the panel's thickness)", THICKNESS, "depth"),
    Axis("udc", "veil", "veil (light spread over the frame)", (0.5, 2 ** -0.5, 1.0, 2 ** 0.5, 2.0)),
    Axis("lowlight", "darken", "scene light (the exposure's darkening factor)", (4.0, 2.0, 1.0, 0.5, 0.25)),
)


def axes_for(kind: str) -> tuple[Axis, ...]:
    return tuple(a for a in AXES if a.kind == kind)


def _changed(value: Any, axis: Axis, factor: float) -> Any:
    """A recipe field's value changed by ``axis`` at ``factor``: a number, a [low, high] range, a per-dataset or
    per-channel mapping, or ``darken``'s mean and spread; shares (the veil) stay at most 1."""
    if isinstance(value, dict) and axis.field == "darken":
        return {**value, "mean": value["mean"] * factor, "sd": value["sd"] * factor}
    if isinstance(value, dict):
        return {k: _changed(v, axis, factor) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_changed(v, axis, factor) for v in value]
    if axis.rule == "density":
        return min(value, 1.0) ** factor
    if axis.rule == "depth":
        return 1.0 - (1.0 - min(value, 1.0)) ** factor
    scaled = value * factor
    return min(scaled, 1.0) if axis.field == "veil" else scaled


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
        *parents, key = axis.field.split(".")
        holder = raw
        for name in parents:
            holder = holder.get(name) if isinstance(holder, dict) else None
        if not isinstance(holder, dict):  # the recipe has no such part (no scatter halo): nothing to change
            continue
        if axis.field == "face_px":
            raw["face_px"] = _changed(raw.get("face_px", 512), axis, factor)
            if raw.get("psf_scale") is not None:  # a fixed scale instead of the face-size rule: the PSF grows
                raw["psf_scale"] = min(raw["psf_scale"] / factor, MAX_PSF_SCALE)
        elif holder.get(key) is not None:
            holder[key] = _changed(holder[key], axis, factor)
    raw["name"] = f"{recipe.name}-s{level}"
    raw["description"] = f"{recipe.name} at severity {level} of 5 (udcbench UDC-C; level 3 is the preset)"
    return parse_recipe(raw, source=recipe.source)


def severity_table() -> list[dict[str, Any]]:
    """The definition as rows (kind, field, what it is, factor per level): what docs/robustness.md shows."""
    return [{"kind": a.kind, "field": a.field, "axis": a.title, "rule": a.rule,
             **{f"level {lv}": round(f, 3) for lv, f in zip(LEVELS, a.factors)}} for a in AXES]
