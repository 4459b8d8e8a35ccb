"""Procedural faces with the seven basic expressions, drawn from facial action units (AUs).

Each image is a pure function of (seed, split, index): a per-image random generator draws an
identity (face shape, skin tone, hair, eye spacing, feature sizes), an expression (its AU
prototype at 80-100 % intensity, plus low-level activity of every AU and now and then a weak
second expression, drawn exaggerated: :data:`EXPRESSIVENESS`), a pose (in-plane rotation, yaw,
pitch, scale, shift), a background and an illumination. The 68 landmarks are moved by the AUs and
the face is then drawn from them, so the landmarks are exact ground truth.

Geometry and photometry are computed for a whole batch with numpy; only the OpenCV drawing
calls run per image, which keeps the generator at thousands of images per second.

What it is for: demos, tests and pipeline checks that run anywhere without a download.
What it is not: a FER benchmark. Accuracy on it says nothing about real faces.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from udcbench.face_template import (
    INNER_LIPS,
    JAW,
    LEFT_BROW,
    LEFT_EYE,
    NUM_LANDMARKS,
    OUTER_LIPS,
    RIGHT_BROW,
    RIGHT_EYE,
    neutral_face,
)

#: Action units driving the faces, in the order of every AU vector.
ACTION_UNITS: tuple[str, ...] = (
    "AU1_inner_brow_raise",
    "AU2_outer_brow_raise",
    "AU4_brow_lower",
    "AU5_upper_lid_raise",
    "AU6_cheek_raise",
    "AU7_lid_tighten",
    "AU9_nose_wrinkle",
    "AU10_upper_lip_raise",
    "AU12_lip_corner_pull",
    "AU15_lip_corner_depress",
    "AU20_lip_stretch",
    "AU23_lip_tighten",
    "AU26_jaw_drop",
)
_AU = {name.split("_", 1)[0]: i for i, name in enumerate(ACTION_UNITS)}

#: EMFACS-style prototypes: canonical label index -> {AU: activation at full intensity}.
PROTOTYPES: dict[int, dict[str, float]] = {
    0: {},  # neutral
    1: {"AU6": 0.8, "AU12": 1.0, "AU10": 0.3},  # happiness
    2: {"AU1": 1.0, "AU2": 1.0, "AU5": 0.9, "AU26": 0.9},  # surprise
    3: {"AU1": 0.9, "AU4": 0.6, "AU15": 0.9, "AU7": 0.2},  # sadness
    4: {"AU4": 1.0, "AU5": 0.5, "AU7": 0.8, "AU23": 0.9},  # anger
    5: {"AU9": 1.0, "AU10": 0.7, "AU15": 0.5, "AU4": 0.3},  # disgust
    6: {"AU1": 0.9, "AU2": 0.6, "AU4": 0.6, "AU5": 1.0, "AU20": 0.9, "AU26": 0.5},  # fear
}
NUM_CLASSES = len(PROTOTYPES)
#: How far the drawn faces move their landmarks, as a multiple of :func:`apply_action_units`' motions.
#: The built-in faces are caricatures, each expression at 80-100 % of its prototype and rarely blended with
#: another, so that a from-scratch ResNet-18 learns them within the quick study's budget (``udcbench.budget``).
EXPRESSIVENESS = 2.5
#: "pretrain": the face pre-training set (:mod:`udcbench.pretrain`), other faces than the study's splits.
SPLIT_CODES = {"train": 0, "valid": 1, "test": 2, "pretrain": 3}
_PROTO = np.zeros((NUM_CLASSES, len(ACTION_UNITS)))
for _label, _aus in PROTOTYPES.items():
    for _name, _value in _aus.items():
        _PROTO[_label, _AU[_name]] = _value

_SKIN = np.array(
    [(255, 224, 196), (241, 194, 160), (224, 172, 130), (198, 134, 96), (161, 102, 66), (112, 70, 44), (84, 52, 34)],
    dtype=np.float64,
)
_HAIR = np.array([(25, 20, 18), (60, 40, 28), (110, 75, 45), (180, 140, 80), (140, 60, 30), (150, 150, 150)], float)
_IRIS = np.array([(70, 45, 25), (40, 30, 20), (70, 110, 150), (80, 110, 70), (110, 90, 50)], float)

#: Per-image random draws: every name is one uniform number in [0, 1) of the image's generator.
_UNIFORMS: tuple[str, ...] = (
    "intensity", "blend", "blend_label", "blend_intensity", "jaw_w", "jaw_h", "eye_scale", "eye_shift",
    "eye_h", "brow_dy", "nose_len", "nose_w", "mouth_w", "mouth_h", "mouth_dy", "yaw", "pitch", "roll",
    "scale", "cx", "cy", "skin", "skin_r", "skin_g", "skin_b", "hair", "hair_gain", "lip_r", "lip_g", "lip_b",
    "cloth_r", "cloth_g", "cloth_b", "style", "hairline", "iris", "gaze_x", "gaze_y", "brow_th", "glasses",
    "frame_r", "frame_g", "frame_b", "top_r", "top_g", "top_b", "bottom_r", "bottom_g", "bottom_b",
    "light_angle", "light", "gain", "gain_r", "gain_g", "gain_b", "blur", "blur_sigma", "noise", "noise_dx",
    "noise_dy",
)
#: The draws that make a person: face shape, colouring, hair, eyes, glasses. Everything else (the expression, pose,
#: light, background, clothes, camera) is drawn per image. :meth:`SyntheticFaceGenerator.draw_identities` draws
#: these once per identity and the rest per view, for the identity pre-training (:mod:`udcbench.pretrain`).
IDENTITY_DRAWS: tuple[str, ...] = (
    "jaw_w", "jaw_h", "eye_scale", "eye_shift", "eye_h", "brow_dy", "nose_len", "nose_w", "mouth_w", "mouth_h",
    "mouth_dy", "skin", "skin_r", "skin_g", "skin_b", "hair", "hair_gain", "lip_r", "lip_g", "lip_b", "style",
    "hairline", "iris", "brow_th", "glasses", "frame_r", "frame_g", "frame_b",
)
_IDENTITY_STREAM = 1_000_003  # separates identity draws from any image's own
_BG_GRID = 6
_NORMALS = len(ACTION_UNITS) + _BG_GRID * _BG_GRID * 3
_SHIFT = 4  # OpenCV sub-pixel bits for every drawing call
_ONE = 1 << _SHIFT

# Landmark motion weights.
_BROW_INNER_W = np.array([0.2, 0.4, 0.6, 0.85, 1.0])  # outer -> inner
_UPPER_LIDS = [37, 38, 43, 44]
_LOWER_LIDS = [40, 41, 46, 47]
_CORNERS = [48, 54, 60, 64]
_UPPER_LIP = [49, 50, 51, 52, 53, 61, 62, 63]
_UPPER_LIP_W = np.array([0.5, 1, 1, 1, 0.5, 0.8, 1, 0.8])
_LOWER_LIP_OUTER = [55, 56, 57, 58, 59]
_LOWER_LIP_INNER = [65, 66, 67]
_DEPTH = np.zeros(NUM_LANDMARKS)
# How far each landmark sits in front of the face outline, for the yaw and pitch shifts.
_DEPTH[17:27], _DEPTH[27:36], _DEPTH[[30, 33]] = 0.12, 0.25, 0.35
_DEPTH[36:48], _DEPTH[48:68], _DEPTH[8] = 0.1, 0.18, 0.12


@dataclass(frozen=True)
class FaceDrawing:
    """One generated face."""

    image: np.ndarray  # size x size x 3 uint8 RGB
    landmarks: np.ndarray  # 68 x 2 float32, pixel (x, y) of the output image
    label: int
    intensity: float
    action_units: np.ndarray  # len(ACTION_UNITS) activations in [0, 1]


def apply_action_units(points: np.ndarray, aus: np.ndarray) -> np.ndarray:
    """Move face-frame landmarks (..., 68, 2) by AU activations (..., 13); returns a new array."""
    p = np.array(points, dtype=np.float64, copy=True)
    aus = np.asarray(aus, dtype=np.float64)
    p = np.broadcast_to(p, aus.shape[:-1] + p.shape[-2:]).copy()
    a = {name: aus[..., i, None] for name, i in _AU.items()}  # (..., 1) for broadcasting
    outer_w, inner_w = _BROW_INNER_W[::-1], _BROW_INNER_W
    for brow, side in ((RIGHT_BROW, -1.0), (LEFT_BROW[::-1], 1.0)):  # each ordered outer -> inner
        p[..., brow, 1] += -0.13 * a["AU1"] * inner_w - 0.12 * a["AU2"] * outer_w
        p[..., brow, 1] += 0.09 * a["AU4"] * (0.5 + 0.5 * inner_w) + 0.03 * a["AU9"] * inner_w
        p[..., brow, 0] += -side * 0.05 * a["AU4"] * inner_w
    p[..., _UPPER_LIDS, 1] += -0.055 * a["AU5"] + 0.03 * a["AU7"]
    p[..., _LOWER_LIDS, 1] += -0.035 * a["AU6"] - 0.03 * a["AU7"] + 0.01 * a["AU5"]
    p[..., [36, 45], 1] += -0.012 * a["AU6"]
    p[..., 31:36, 1] += -0.035 * a["AU9"]
    p[..., [31, 35], 0] += np.array([-0.02, 0.02]) * a["AU9"]
    p[..., _UPPER_LIP, 1] += -0.03 * a["AU9"] - 0.06 * a["AU10"] * _UPPER_LIP_W
    outward = np.sign(p[..., _CORNERS, 0])
    p[..., _CORNERS, 0] += outward * (0.08 * a["AU12"] + 0.10 * a["AU20"] - 0.01 * a["AU15"] - 0.035 * a["AU23"])
    lift = -0.085 * a["AU12"] + 0.075 * a["AU15"] + 0.02 * a["AU20"] - 0.012 * a["AU6"]
    p[..., _CORNERS, 1] += lift
    p[..., [49, 59, 61, 67, 53, 55, 63, 65], 1] += 0.45 * lift  # neighbours follow the corners
    p[..., 49:54, 1] += 0.025 * a["AU23"] + 0.01 * a["AU20"]
    p[..., _LOWER_LIP_OUTER, 1] += -0.025 * a["AU23"] - 0.01 * a["AU20"]
    drop = 0.20 * a["AU26"] * np.array([0.4, 0.8, 1.0, 0.8, 0.4])
    p[..., _LOWER_LIP_OUTER, 1] += drop
    p[..., _LOWER_LIP_INNER, 1] += 1.05 * drop[..., 1:4]
    p[..., JAW, 1] += 0.16 * a["AU26"] * np.sin(np.linspace(0, np.pi, 17)) ** 2
    p[..., _CORNERS, 1] += 0.05 * a["AU26"]
    return p


def _lerp(u: np.ndarray, low: float, high: float) -> np.ndarray:
    return low + (high - low) * u


class SyntheticFaceGenerator:
    """Deterministic procedural faces: ``generator.draw("train", 17)`` is always the same image,
    alone or in any batch."""

    def __init__(self, seed: int = 0, size: int = 100, supersample: int = 2):
        self.seed = int(seed)
        self.size = int(size)
        self.ss = int(supersample)
        self._template = neutral_face()
        grid = np.mgrid[0 : self.size, 0 : self.size].astype(np.float32) / self.size - 0.5
        self._yy, self._xx = grid
        bank_rng = np.random.default_rng([self.seed, 99])
        self._noise_bank = bank_rng.standard_normal((self.size + 64, self.size + 64, 3), dtype=np.float32)

    @staticmethod
    def label_of(index: int) -> int:
        """Labels cycle through the seven classes, so every split is balanced."""
        return index % NUM_CLASSES

    def draw(self, split: str, index: int) -> FaceDrawing:
        return self.draw_batch(split, [index])[0]

    def identity_draws(self, split: str, identities: list[int] | np.ndarray) -> np.ndarray:
        """The :data:`IDENTITY_DRAWS` of each identity of ``split`` (N x len(IDENTITY_DRAWS), uniform in [0, 1))."""
        code = SPLIT_CODES[split]
        return np.array([np.random.default_rng([self.seed, code, _IDENTITY_STREAM, int(i)]).random(
            len(IDENTITY_DRAWS)) for i in identities]).reshape(-1, len(IDENTITY_DRAWS))

    def image_draws(self, split: str, indices: list[int] | np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Each image's own uniform draws (by name) and normal draws; its identity is among the uniforms."""
        code = SPLIT_CODES[split]
        uniforms, normals = [], []
        for i in indices:
            rng = np.random.default_rng([self.seed, code, int(i)])
            uniforms.append(rng.random(len(_UNIFORMS)))
            normals.append(rng.standard_normal(_NORMALS))
        return dict(zip(_UNIFORMS, np.array(uniforms).reshape(-1, len(_UNIFORMS)).T)), np.array(normals)

    def draw_batch(self, split: str, indices: list[int] | np.ndarray) -> list[FaceDrawing]:
        """Draw several faces at once (faster than one by one, identical results); each image is its own person."""
        indices = [int(i) for i in indices]
        u, normals = self.image_draws(split, indices)
        return self._render(u, normals, np.array([self.label_of(i) for i in indices]))

    def draw_identities(self, split: str, indices: list[int] | np.ndarray, views: int) -> list[FaceDrawing]:
        """Faces of identities seen ``views`` times each: image ``i`` shows identity ``i // views``, whose face shape
        and colouring (:data:`IDENTITY_DRAWS`) are drawn once; its expression (a label drawn uniformly, whatever the
        identity), pose, light, background and clothes are the image's own."""
        indices = [int(i) for i in indices]
        u, normals = self.image_draws(split, indices)
        people = self.identity_draws(split, [i // views for i in indices])
        for k, name in enumerate(IDENTITY_DRAWS):
            u[name] = people[:, k]
        labels = np.array([np.random.default_rng([self.seed, SPLIT_CODES[split], _IDENTITY_STREAM + 1, i]).integers(
            NUM_CLASSES) for i in indices])
        return self._render(u, normals, labels)

    def _render(self, u: dict[str, np.ndarray], normals: np.ndarray, labels: np.ndarray) -> list[FaceDrawing]:
        """The faces of a batch of draws: expression, identity, pose, drawing, photometry."""

        intensity = _lerp(u["intensity"], 0.8, 1.0)
        aus = _PROTO[labels] * intensity[:, None]
        blend = (u["blend"] < 0.1)[:, None] * _lerp(u["blend_intensity"], 0.0, 0.25)[:, None]
        aus += _PROTO[(u["blend_label"] * NUM_CLASSES).astype(int)] * blend
        aus = np.clip(aus + np.abs(0.05 * normals[:, : len(ACTION_UNITS)]), 0.0, 1.0)

        face = apply_action_units(self._identity(u), EXPRESSIVENESS * aus)
        matrix, centre = self._pose(u)
        face[..., 0] += _lerp(u["yaw"], -0.15, 0.15)[:, None] * _DEPTH
        face[..., 1] += _lerp(u["pitch"], -0.06, 0.06)[:, None] * _DEPTH
        canvases = self._draw(face, matrix, centre, aus, u, normals[:, len(ACTION_UNITS) :])
        images = self._photometric(np.stack(canvases), u)
        landmarks = (np.einsum("bij,bkj->bki", matrix, face) + centre[:, None] + 0.5) / self.ss - 0.5
        return [
            FaceDrawing(images[b], landmarks[b].astype(np.float32), int(labels[b]), float(intensity[b]), aus[b])
            for b in range(len(labels))
        ]

    # -- geometry (batched) ----------------------------------------------------------------------
    def _identity(self, u: dict[str, np.ndarray]) -> np.ndarray:
        p = np.broadcast_to(self._template, (len(u["jaw_w"]),) + self._template.shape).copy()
        col = lambda name, lo, hi: _lerp(u[name], lo, hi)[:, None]  # noqa: E731
        p[:, JAW, 0] *= col("jaw_w", 0.86, 1.08)
        p[:, JAW, 1] = -0.12 + (p[:, JAW, 1] + 0.12) * col("jaw_h", 0.9, 1.1)
        eyes = np.r_[RIGHT_EYE, LEFT_EYE]
        centre = np.where(self._template[eyes, 0] < 0, -0.40, 0.40)
        p[:, eyes, 0] = centre + (p[:, eyes, 0] - centre) * col("eye_scale", 0.85, 1.15)
        p[:, eyes, 0] += np.sign(centre) * col("eye_shift", -0.05, 0.05)
        p[:, eyes, 1] = -0.30 + (p[:, eyes, 1] + 0.30) * col("eye_h", 0.8, 1.25)
        p[:, 17:27, 1] += col("brow_dy", -0.06, 0.05)
        p[:, 27:36, 1] *= col("nose_len", 0.9, 1.12)
        p[:, 31:36, 0] *= col("nose_w", 0.85, 1.2)
        mouth = np.r_[OUTER_LIPS, INNER_LIPS]
        p[:, mouth, 0] *= col("mouth_w", 0.85, 1.15)
        p[:, mouth, 1] = 0.52 + (p[:, mouth, 1] - 0.52) * col("mouth_h", 0.7, 1.35) + col("mouth_dy", -0.04, 0.04)
        return p

    def _pose(self, u: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Per-image 2 x 2 face-to-canvas matrices (rotation x scale) and canvas centres."""
        side = self.size * self.ss
        angle = np.deg2rad(_lerp(u["roll"], -6, 6))
        scale = side * _lerp(u["scale"], 0.30, 0.34)
        cos, sin = np.cos(angle) * scale, np.sin(angle) * scale
        matrix = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], 1)
        centre = side * np.stack([0.5 + _lerp(u["cx"], -0.05, 0.05), 0.47 + _lerp(u["cy"], -0.04, 0.04)], -1)
        return matrix, centre

    # -- drawing: every point and colour is computed for the batch, only OpenCV calls run per image ----
    def _construction(self, face: np.ndarray, u: dict[str, np.ndarray], aus: np.ndarray):
        """All points to draw (face frame, B x P x 2), the slices naming them, and per-image values."""
        b = len(face)
        a = {name: aus[:, i] for name, i in _AU.items()}
        style = (u["style"] * 4).astype(int)  # 0 bald, 1 short, 2 long, 3 medium
        hairline = np.where(style == 0, -1.08, _lerp(u["hairline"], -0.92, -0.72))
        t = np.linspace(0, np.pi, 15)[1:-1]
        half_w = np.abs(face[:, [0, 16], 0]).mean(axis=1)
        forehead = np.stack([half_w[:, None] * np.cos(t), -0.12 + (hairline[:, None] + 0.12) * np.sin(t)], -1)
        cheek = a["AU6"] * 0.6 + a["AU12"] * 0.4
        cheeks = np.stack([np.stack([s * 0.45 + 0 * cheek, 0.02 - 0.05 * cheek], -1) for s in (-1, 1)], 1)
        folds = []
        for wing, corner, sign in ((31, 48, -1), (35, 54, 1)):
            w, k = face[:, wing], face[:, corner]
            folds += [w + [sign * 0.07, -0.02], (w + k) / 2 + [sign * 0.12, 0.0], k + [sign * 0.07, 0.03]]
        eyes = [face[:, RIGHT_EYE], face[:, LEFT_EYE]]
        widths = np.stack([np.linalg.norm(e[:, 3] - e[:, 0], axis=-1) for e in eyes], 1)  # B x 2
        gaze = np.stack([_lerp(u["gaze_x"], -0.12, 0.12), _lerp(u["gaze_y"], -0.05, 0.05)], -1)
        irises = np.stack([e.mean(axis=1) + gaze * w[:, None] for e, w in zip(eyes, widths.T)], 1)
        lids = []
        for e, w in zip(eyes, widths.T):
            lift = np.stack([np.zeros(b), 0.3 * w], -1)[:, None]
            lids += [e[:, [0, 1, 2, 3]], e[:, [3, 2, 1, 0]] - lift, e[:, [3, 4, 5, 0]], e[:, [0, 5, 4, 3]] + lift]
        thickness = _lerp(u["brow_th"], 0.035, 0.06)[:, None, None]
        brows = []
        for brow, taper in ((RIGHT_BROW, np.linspace(0.6, 1.0, 5)), (LEFT_BROW, np.linspace(1.0, 0.6, 5))):
            offset = np.stack([np.zeros(5), taper], -1) * thickness
            brows += [face[:, brow] - offset, (face[:, brow] + offset)[:, ::-1]]
        opening = np.linalg.norm(face[:, 66] - face[:, 62], axis=-1)
        upper = face[:, [60, 61, 62, 63, 64]]
        teeth = (upper + np.stack([np.zeros(b), np.minimum(opening * 0.45, 0.06)], -1)[:, None])[:, ::-1]
        xs = np.linspace(-0.35, 0.35, 5)
        const = {
            "cloth": [[0, 2.25]],
            "long_hair": [[-1.12, -0.4], [1.12, -0.4], [1.2, 1.5], [-1.2, 1.5]],
            "neck": [[-0.42, 0.7], [0.42, 0.7], [0.46, 1.7], [-0.46, 1.7]],
            "ears": [[-0.95, -0.12], [0.95, -0.12]],
            "hair": [[0, -0.16]],
            "furrows": [[-0.06, -0.58], [-0.05, -0.42], [0.06, -0.58], [0.05, -0.42]],
            "forehead_lines": np.concatenate([np.stack([xs, y + 0.03 * np.cos(xs * 4)], 1) for y in (-0.78, -0.88)]),
            "nose_wrinkles": [[-0.08, -0.2], [0.08, -0.2], [-0.08, -0.12], [0.08, -0.12]],
            "glasses": [[-0.4, -0.3], [0.4, -0.3], [-0.2, -0.32], [0.2, -0.32]],
        }
        parts = {
            "lm": face,
            "forehead": forehead,
            **{k: np.broadcast_to(np.asarray(v, dtype=np.float64), (b, len(v), 2)) for k, v in const.items()},
            "cheeks": cheeks,
            "folds": np.stack(folds, 1),
            "irises": irises,
            "lids": np.concatenate(lids, 1),
            "brows": np.concatenate(brows, 1),
            "nostrils": face[:, [32, 34]] + [0, -0.02],
            "bridge": face[:, [27, 28, 29]] + [0.07, 0],
            "teeth": np.concatenate([upper, teeth], 1),
        }
        layout, start = {}, 0
        for name, value in parts.items():
            layout[name] = slice(start, start + value.shape[1])
            start += value.shape[1]
        values = {
            "style": style, "hairline": hairline, "cheek": cheek, "widths": widths, "opening": opening,
            "fold": np.maximum.reduce([a["AU6"], a["AU12"], a["AU9"], a["AU10"]]), "raise": a["AU1"] + a["AU2"],
            "AU4": a["AU4"], "AU9": a["AU9"],
        }
        return np.concatenate(list(parts.values()), axis=1), layout, values

    def _colours(self, u: dict[str, np.ndarray], v: dict[str, np.ndarray]) -> dict[str, list]:
        """Every colour of the batch as lists of [r, g, b] ints (what OpenCV wants)."""
        rgb = lambda name: np.stack([u[f"{name}_r"], u[f"{name}_g"], u[f"{name}_b"]], -1)  # noqa: E731
        skin = np.clip(_SKIN[(u["skin"] * len(_SKIN)).astype(int)] * _lerp(rgb("skin"), 0.92, 1.08), 0, 255)
        shade = skin * 0.78
        hair = _HAIR[(u["hair"] * len(_HAIR)).astype(int)] * _lerp(u["hair_gain"], 0.85, 1.15)[:, None]
        lips = skin * np.array([0.85, 0.55, 0.55]) + _lerp(rgb("lip"), -10, 10)

        def mix(t: np.ndarray) -> np.ndarray:
            return skin + (shade - skin) * np.clip(t, 0.0, 1.0)[:, None]

        colours = {
            "skin": skin, "shade": shade, "neck": skin * 0.85, "ears": skin * 0.9, "lower_lid": skin * 0.7,
            "hair": hair, "brows": hair * 0.9, "lips": lips, "lip_line": lips * 0.55, "nostrils": shade * 0.6,
            "cloth": 255 * rgb("cloth"), "frame": 120 * rgb("frame"),
            "iris": _IRIS[(u["iris"] * len(_IRIS)).astype(int)],
            "blush": skin + (np.array([230, 120, 110]) - skin) * 0.25 * v["cheek"][:, None],
            "folds": mix(v["fold"]), "furrows": mix(v["AU4"]), "nose_wrinkles": mix(v["AU9"]),
            "forehead_line0": mix(0.5 * v["raise"]), "forehead_line1": mix(0.5 * v["raise"] - 0.2),
            "bridge": mix(np.full(len(skin), 0.5)),
            "top": 255 * rgb("top"), "bottom": 255 * rgb("bottom"),
        }
        return {k: np.clip(c, 0, 255).astype(int).tolist() for k, c in colours.items()}

    def _draw(self, face, matrix, centre, aus, u, bg_normals) -> list[np.ndarray]:
        points, at, v = self._construction(face, u, aus)
        fixed = np.round((np.einsum("bij,bkj->bki", matrix, points) + centre[:, None]) * _ONE).astype(np.int32)
        colours = self._colours(u, v)
        scales = np.hypot(matrix[:, 0, 0], matrix[:, 1, 0])
        angles = np.degrees(np.arctan2(matrix[:, 1, 0], matrix[:, 0, 0])).tolist()
        side, lw = self.size * self.ss, self.ss
        ramp = np.linspace(0.0, 1.0, _BG_GRID)[None, :, None, None]
        top, bottom = np.array(colours["top"])[:, None, None], np.array(colours["bottom"])[:, None, None]
        backgrounds = top * (1 - ramp) + bottom * ramp + 25 * bg_normals.reshape(-1, _BG_GRID, _BG_GRID, 3)
        backgrounds = np.clip(backgrounds, 0, 255).astype(np.uint8)
        out = []
        for b in range(len(face)):
            p, col, scale, angle = fixed[b], {k: c[b] for k, c in colours.items()}, scales[b], angles[b]
            canvas = cv2.resize(backgrounds[b], (side, side), interpolation=cv2.INTER_LINEAR)

            def poly(pts, colour, canvas=canvas) -> None:
                cv2.fillPoly(canvas, [pts.reshape(-1, 1, 2)], colour, cv2.LINE_AA, _SHIFT)

            def line(pts, colour, thickness=lw, canvas=canvas) -> None:
                cv2.polylines(canvas, [pts.reshape(-1, 1, 2)], False, colour, thickness, cv2.LINE_AA, _SHIFT)

            def ellipse(pt, axes, colour, thickness=-1, canvas=canvas, scale=scale, angle=angle) -> None:
                axes = (int(axes[0] * scale * _ONE), int(axes[1] * scale * _ONE))
                cv2.ellipse(canvas, (int(pt[0]), int(pt[1])), axes, angle, 0, 360, colour, thickness, cv2.LINE_AA,
                            _SHIFT)

            lm = p[at["lm"]]
            style = v["style"][b]
            # Clothes, long hair behind the head, neck, ears, hair, face.
            ellipse(p[at["cloth"]][0], (1.9, 0.95), col["cloth"])
            if style == 2:
                poly(p[at["long_hair"]], col["hair"])
            poly(p[at["neck"]], col["neck"])
            for ear in p[at["ears"]]:
                ellipse(ear, (0.12, 0.21), col["ears"])
            if style:
                ellipse(p[at["hair"]][0], (1.04, 1.04 + 0.05 * style), col["hair"])
            poly(np.concatenate([lm[JAW], p[at["forehead"]]]), col["skin"])
            # Cheeks, folds and wrinkles, each as strong as the AUs that cause it.
            if v["cheek"][b] > 0.15:
                for cheek in p[at["cheeks"]]:
                    ellipse(cheek, (0.2, 0.12), col["blush"])
            if v["fold"][b] > 0.25:
                folds = p[at["folds"]]
                line(folds[:3], col["folds"])
                line(folds[3:], col["folds"])
            if v["AU4"][b] > 0.35:
                furrows = p[at["furrows"]]
                line(furrows[:2], col["furrows"])
                line(furrows[2:], col["furrows"])
            if v["raise"][b] > 0.9:
                lines = p[at["forehead_lines"]]
                for k, y in enumerate((-0.78, -0.88)):
                    if y > v["hairline"][b] + 0.04:
                        line(lines[5 * k : 5 * k + 5], col[f"forehead_line{k}"])
            if v["AU9"][b] > 0.35:
                wrinkles = p[at["nose_wrinkles"]]
                line(wrinkles[:2], col["nose_wrinkles"])
                line(wrinkles[2:], col["nose_wrinkles"])
            # Eyes: sclera, iris, then the lids' skin redrawn over the iris outside the opening.
            lids = p[at["lids"]]
            for k, (eye, iris) in enumerate(zip((RIGHT_EYE, LEFT_EYE), p[at["irises"]])):
                width = v["widths"][b, k]
                poly(lm[eye], (238, 236, 230))
                ellipse(iris, (0.23 * width, 0.23 * width), col["iris"])
                ellipse(iris, (0.1 * width, 0.1 * width), (15, 15, 15))
                eye_lids = lids[16 * k : 16 * k + 16]
                poly(eye_lids[:8], col["skin"])
                poly(eye_lids[8:], col["skin"])
                line(eye_lids[:4], (30, 22, 20), lw + 1)
                line(eye_lids[8:12], col["lower_lid"], max(1, lw - 1))
            brows = p[at["brows"]]
            poly(brows[:10], col["brows"])
            poly(brows[10:], col["brows"])
            if u["glasses"][b] < 0.15:
                glasses = p[at["glasses"]]
                ellipse(glasses[0], (0.2, 0.14), col["frame"], lw)
                ellipse(glasses[1], (0.2, 0.14), col["frame"], lw)
                line(glasses[2:], col["frame"])
            # Nose.
            line(lm[31:36], col["shade"])
            for nostril in p[at["nostrils"]]:
                ellipse(nostril, (0.035, 0.02), col["nostrils"])
            line(p[at["bridge"]], col["bridge"])
            # Mouth: lips, then the opening with the upper teeth.
            poly(lm[OUTER_LIPS], col["lips"])
            if v["opening"][b] > 0.05:
                poly(lm[INNER_LIPS], (70, 25, 30))
                poly(p[at["teeth"]], (235, 232, 220))
            else:
                line(lm[[60, 61, 62, 63, 64]], col["lip_line"])
            out.append(cv2.resize(canvas, (self.size, self.size), interpolation=cv2.INTER_AREA))
        return out

    # -- photometry ---------------------------------------------------------------------------------
    def _photometric(self, images: np.ndarray, u: dict[str, np.ndarray]) -> np.ndarray:
        """Directional light, exposure and colour cast, slight blur, sensor noise (per image, in place)."""
        angle = _lerp(u["light_angle"], 0, 2 * np.pi)
        strength = _lerp(u["light"], 0.0, 0.6)
        cast = _lerp(np.stack([u["gain_r"], u["gain_g"], u["gain_b"]], -1), 0.9, 1.1)
        gain = (_lerp(u["gain"], 0.65, 1.15)[:, None] * cast).astype(np.float32)
        s = self.size
        for b, image in enumerate(images):
            light = 1.0 + strength[b] * (np.cos(angle[b]) * self._xx + np.sin(angle[b]) * self._yy)
            out = image.astype(np.float32)
            out *= light[:, :, None] * gain[b]
            if u["blur"][b] < 0.5:
                out = cv2.GaussianBlur(out, (0, 0), _lerp(u["blur_sigma"][b], 0.3, 0.9))
            dx, dy = int(u["noise_dx"][b] * 64), int(u["noise_dy"][b] * 64)
            out += self._noise_bank[dy : dy + s, dx : dx + s] * np.float32(_lerp(u["noise"][b], 1.0, 4.0))
            out += 0.5
            np.clip(out, 0, 255, out=out)
            images[b] = out  # truncation after +0.5 rounds
        return images


