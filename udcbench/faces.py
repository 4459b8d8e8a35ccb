"""Face cropping for full-frame datasets (KDEF): OpenCV's bundled Haar cascades, offline."""

from __future__ import annotations

from functools import cache

import cv2
import numpy as np

from udcbench.errors import UdcbenchError

CROP_METHODS = ("haar", "landmarks", "none")


@cache
def _cascade(name: str) -> cv2.CascadeClassifier:
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + name)
    if cascade.empty():  # pragma: no cover - broken OpenCV install
        raise RuntimeError(f"OpenCV's Haar cascade {name} could not be loaded")
    return cascade


def detect_face_haar(image: np.ndarray) -> tuple[int, int, int, int] | None:
    """Largest face box (x, y, w, h) from the frontal, then the profile cascade (both directions)."""
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    scale = 320.0 / max(gray.shape)
    small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else gray
    scale = min(scale, 1.0)
    min_size = (max(small.shape) // 8,) * 2
    for name in ("haarcascade_frontalface_default.xml", "haarcascade_profileface.xml"):
        for flip in (False, True):
            view = cv2.flip(small, 1) if flip else small
            boxes = _cascade(name).detectMultiScale(view, scaleFactor=1.1, minNeighbors=5, minSize=min_size)
            if len(boxes):
                x, y, w, h = max(boxes, key=lambda b: b[2] * b[3])
                if flip:
                    x = view.shape[1] - x - w
                return tuple(int(round(v / scale)) for v in (x, y, w, h))
            if name.startswith("haarcascade_frontal"):
                break  # the frontal cascade is symmetric: no need to flip
    return None


DETECTORS = ("haar", "dlib")


def detect_face(image: np.ndarray, detector: str = "haar") -> tuple[int, int, int, int] | None:
    """The largest face's box (x, y, w, h): OpenCV's bundled Haar cascades, or dlib's HOG detector where the
    ``landmarks`` extra is installed; None when none is found."""
    if detector == "haar":
        return detect_face_haar(image)
    if detector != "dlib":
        raise UdcbenchError(f"--detector is {' or '.join(DETECTORS)}, not '{detector}'")
    from udcbench.landmarks import dlib_models

    boxes = dlib_models()[0](cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), 1)
    if not len(boxes):
        return None
    box = max(boxes, key=lambda r: r.width() * r.height())
    return int(box.left()), int(box.top()), int(box.width()), int(box.height())


def square_crop(
    image: np.ndarray, box: tuple[float, float, float, float], size: int, margin: float = 0.25
) -> np.ndarray:
    """Square crop around ``box`` (x, y, w, h) grown by ``margin``, resized to ``size``; pads by replication."""
    x, y, w, h = box
    side = max(w, h) * (1 + 2 * margin)
    cx, cy = x + w / 2, y + h / 2
    src = np.float32([[cx - side / 2, cy - side / 2], [cx + side / 2, cy - side / 2], [cx - side / 2, cy + side / 2]])
    dst = np.float32([[0, 0], [size, 0], [0, size]])
    matrix = cv2.getAffineTransform(src, dst)
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)


def fallback_box(image: np.ndarray) -> tuple[int, int, int, int]:
    """A centred box covering the middle of a portrait frame, used when no face is found."""
    h, w = image.shape[:2]
    side = min(w, h) * 0.6
    return int((w - side) / 2), int(h * 0.45 - side / 2), int(side), int(side)


def crop_face(image: np.ndarray, size: int, method: str = "haar") -> tuple[np.ndarray, str]:
    """Crop the face of a full frame. Returns the crop and how it was found (``haar``, ``landmarks``,
    ``fallback`` or ``none``)."""
    if method == "none":
        return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA), "none"
    if method == "landmarks":
        from udcbench.landmarks import detect_landmarks_dlib

        points = detect_landmarks_dlib(image)
        if points is not None:
            x0, y0 = points.min(axis=0)
            x1, y1 = points.max(axis=0)
            return square_crop(image, (x0, y0, x1 - x0, y1 - y0), size, margin=0.2), "landmarks"
    elif method != "haar":
        raise ValueError(f"unknown crop method '{method}' (use one of {CROP_METHODS})")
    box = detect_face_haar(image)
    if box is None:
        return square_crop(image, fallback_box(image), size, margin=0.0), "fallback"
    return square_crop(image, box, size), "haar"
