"""The 68-point facial landmark layout (iBUG 300-W order) and a neutral mean face.

Coordinates are in a face frame: x to the image right, y down, one unit is half the face
width, the origin sits between the eyes and the nose tip. Index groups follow iBUG:
jaw 0-16, right brow 17-21, left brow 22-26, nose bridge 27-30, nostrils 31-35,
right eye 36-41, left eye 42-47, outer lips 48-59, inner lips 60-67 ("right" is the
subject's right, the image's left).
"""

from __future__ import annotations

import numpy as np

JAW = np.arange(0, 17)
RIGHT_BROW = np.arange(17, 22)
LEFT_BROW = np.arange(22, 27)
NOSE_BRIDGE = np.arange(27, 31)
NOSTRILS = np.arange(31, 36)
RIGHT_EYE = np.arange(36, 42)
LEFT_EYE = np.arange(42, 48)
OUTER_LIPS = np.arange(48, 60)
INNER_LIPS = np.arange(60, 68)
NUM_LANDMARKS = 68


def _mirror(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    return [(-x, y) for x, y in points]


def neutral_face() -> np.ndarray:
    """The neutral template, 68 x 2 float64, in face-frame units."""
    t = np.linspace(0.0, np.pi, 17)
    # Jaw from the subject's right ear (image left) round the chin; narrower towards the chin.
    jaw = np.stack([-0.95 * np.cos(t) * (1 - 0.12 * np.sin(t) ** 4), -0.12 + 1.08 * np.sin(t)], axis=1)
    right_brow = [(-0.80, -0.50), (-0.66, -0.60), (-0.50, -0.63), (-0.34, -0.61), (-0.18, -0.56)]
    left_brow = _mirror(right_brow)[::-1]
    bridge = [(0.0, -0.36), (0.0, -0.22), (0.0, -0.08), (0.0, 0.06)]
    nostrils = [(-0.18, 0.20), (-0.09, 0.235), (0.0, 0.25), (0.09, 0.235), (0.18, 0.20)]
    right_eye = [(-0.58, -0.30), (-0.47, -0.365), (-0.34, -0.365), (-0.23, -0.30), (-0.34, -0.25), (-0.47, -0.25)]
    left_eye = [(0.23, -0.30), (0.34, -0.365), (0.47, -0.365), (0.58, -0.30), (0.47, -0.25), (0.34, -0.25)]
    outer_lips = [
        (-0.34, 0.52), (-0.22, 0.47), (-0.08, 0.445), (0.0, 0.455), (0.08, 0.445), (0.22, 0.47),
        (0.34, 0.52), (0.22, 0.60), (0.08, 0.635), (0.0, 0.64), (-0.08, 0.635), (-0.22, 0.60),
    ]
    inner_lips = [
        (-0.29, 0.52), (-0.09, 0.505), (0.0, 0.51), (0.09, 0.505), (0.29, 0.52), (0.09, 0.53), (0.0, 0.532),
        (-0.09, 0.53),
    ]
    rest = right_brow + left_brow + bridge + nostrils + right_eye + left_eye + outer_lips + inner_lips
    return np.concatenate([jaw, np.array(rest)], axis=0)


def mean_shape_in_box(width: float, height: float) -> np.ndarray:
    """The neutral template placed in an aligned face crop of the given size (68 x 2 float32).

    The crop is assumed to frame the face as RAF-DB's aligned crops and FERPlus images do:
    the jaw spans about 84 % of the width, brows at about a quarter of the height.
    """
    face = neutral_face()
    scale = 0.42 * width
    x = width / 2 + face[:, 0] * scale
    y = 0.25 * height + (face[:, 1] + 0.58) * scale * (height / width)
    return np.stack([x, y], axis=1).astype(np.float32)
