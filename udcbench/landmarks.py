"""One interface to 68-point facial landmarks, whatever their source.

Sources, tried in this order by ``source="auto"``:

- ``ground_truth``: landmarks that come with the data (the synthetic faces, an image folder's
  ``landmarks.npz``);
- ``dlib``: dlib's HOG face detector and 68-point shape predictor (``pip install
  'udcbench[landmarks]'``; the predictor file ships in ``face-recognition-models``, so this
  works offline). Small crops are upsampled first. On face crops where the detector finds no
  face, the whole crop is used as the face box (recorded as ``dlib_cropbox``);
- ``mean_shape``: the mean face placed in the crop, when neither of the above is available or
  detection fails on a full frame.

The method used is recorded per image. Results are cached per dataset (``.udcbench-cache/``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from udcbench.errors import UdcbenchError, unknown_name
from udcbench.face_template import NUM_LANDMARKS, mean_shape_in_box
from udcbench.files import write_atomic

SOURCES = ("auto", "ground_truth", "dlib", "mean_shape")
METHODS = ("ground_truth", "dlib", "dlib_cropbox", "mean_shape")
DLIB_MIN_SIDE = 192  # upsample small crops (FERPlus is 48 x 48) to at least this before dlib
_CACHE_FORMAT = 1
#: From this many images on, dlib runs in one process per core (a FERPlus split: minutes in one process).
PARALLEL_MIN_IMAGES = 256


def _predictor_file() -> Path | None:
    spec = importlib.util.find_spec("face_recognition_models")  # not imported: it needs pkg_resources
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / "shape_predictor_68_face_landmarks.dat"
    return path if path.is_file() else None


def dlib_available() -> bool:
    """Whether dlib and its 68-point predictor file are installed."""
    return importlib.util.find_spec("dlib") is not None and _predictor_file() is not None


@lru_cache(maxsize=1)
def dlib_models():
    if not dlib_available():
        raise UdcbenchError(
            "dlib landmarks need the 'landmarks' extra: pip install 'udcbench[landmarks]' "
            "(dlib-bin and face-recognition-models, which ships shape_predictor_68_face_landmarks.dat)"
        )
    import dlib

    return dlib.get_frontal_face_detector(), dlib.shape_predictor(str(_predictor_file()))


def detect_landmarks_dlib(image: np.ndarray, assume_cropped: bool = False) -> np.ndarray | None:
    """dlib landmarks of the largest face (68 x 2 float32), or None when no face is found and
    ``assume_cropped`` is False."""
    points, _method = _dlib_landmarks(image, assume_cropped)
    return points


def _dlib_landmarks(image: np.ndarray, assume_cropped: bool) -> tuple[np.ndarray | None, str]:
    import dlib

    detector, predictor = dlib_models()
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    factor = max(1.0, DLIB_MIN_SIDE / min(gray.shape))
    if factor > 1:
        gray = cv2.resize(gray, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC)
    boxes = detector(gray, 0)
    if len(boxes):
        box, method = max(boxes, key=lambda r: r.width() * r.height()), "dlib"
    elif assume_cropped:
        h, w = gray.shape
        box, method = dlib.rectangle(0, 0, w - 1, h - 1), "dlib_cropbox"
    else:
        return None, "none"
    shape = predictor(gray, box)
    points = np.array([(shape.part(i).x, shape.part(i).y) for i in range(NUM_LANDMARKS)], dtype=np.float32)
    return points / factor, method


class LandmarkExtractor:
    """``extractor(image, ground_truth=None) -> (68 x 2 points, method)``."""

    def __init__(self, source: str = "auto", assume_cropped: bool = True):
        if source not in SOURCES:
            raise unknown_name("landmark source", source, SOURCES)
        if source == "dlib":
            dlib_models()  # fail now, with the install hint, rather than per image
        self.source = source
        self.assume_cropped = assume_cropped
        self.use_dlib = source == "dlib" or (source == "auto" and dlib_available())

    def __call__(self, image: np.ndarray, ground_truth: np.ndarray | None = None) -> tuple[np.ndarray, str]:
        if ground_truth is not None and self.source in ("auto", "ground_truth"):
            return np.asarray(ground_truth, dtype=np.float32), "ground_truth"
        if self.source == "ground_truth":
            raise UdcbenchError("this dataset has no ground-truth landmarks; use --source auto, dlib or mean_shape")
        if self.use_dlib:
            points, method = _dlib_landmarks(image, self.assume_cropped)
            if points is not None:
                return points, method
        h, w = image.shape[:2]
        return mean_shape_in_box(w, h), "mean_shape"


@dataclass
class LandmarkSet:
    """Landmarks of many images: ``points[i]`` belongs to ``ids[i]`` and was found by ``methods[i]``."""

    ids: list[str]
    points: np.ndarray  # N x 68 x 2 float32
    methods: np.ndarray  # N strings from METHODS
    seconds: float = 0.0  # time spent computing them (0 when read from the cache)
    cached: bool = False

    def __post_init__(self):
        self._index = {id_: i for i, id_ in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)

    def get(self, image_id: str) -> np.ndarray:
        return self.points[self._index[image_id]]

    def counts(self) -> dict[str, int]:
        return {m: int((self.methods == m).sum()) for m in METHODS if (self.methods == m).any()}

    def save(self, path: Path) -> None:
        """Atomically (a temporary file per process, then a rename): concurrent writers never tear the cache."""
        buffer = io.BytesIO()
        np.savez_compressed(buffer, ids=np.array(self.ids), points=self.points, methods=self.methods.astype(str))
        write_atomic(path, buffer.getvalue())

    @classmethod
    def load(cls, path: Path) -> LandmarkSet:
        from udcbench.files import check_array_file

        check_array_file(path)
        with np.load(path, allow_pickle=False) as data:
            return cls(data["ids"].tolist(), data["points"], data["methods"], cached=True)


def cache_path(adapter, split: str | None, source: str, cache_dir: Path) -> Path:
    """Cache file for one dataset, split and source; the key covers everything that changes the result."""
    records = adapter.records(split)
    key = json.dumps(
        {
            "dataset": adapter.name,
            "root": str(adapter.root.resolve()) if adapter.root is not None else None,
            "options": adapter.options,
            "split": split,
            "source": source,
            "dlib": source != "mean_shape" and dlib_available(),
            "count": len(records),
            "ends": [records[0].id, records[-1].id] if records else [],
            "format": _CACHE_FORMAT,
        },
        sort_keys=True,
        default=str,
    )
    digest = hashlib.sha1(key.encode(errors="surrogateescape")).hexdigest()[:12]
    return Path(cache_dir) / "landmarks" / f"{adapter.name}-{split or 'all'}-{source}-{digest}.npz"


def _landmarks_of(adapter, records: list, source: str, assume_cropped: bool, progress: bool = False,
                  description: str = "") -> tuple[np.ndarray, list[str]]:
    from udcbench.progress import track

    extractor = LandmarkExtractor(source, assume_cropped=assume_cropped)
    points = np.zeros((len(records), NUM_LANDMARKS, 2), dtype=np.float32)
    methods = []
    for i, record in enumerate(track(records, description=description) if progress else records):
        points[i], method = extractor(adapter.load_image(record), adapter.ground_truth_landmarks(record))
        methods.append(method)
    return points, methods


def _landmark_chunk(name: str, root: str | None, options: dict, records: list, source: str,
                    assume_cropped: bool) -> tuple[np.ndarray, list[str]]:
    """A worker's share of :func:`compute_landmarks` (the dataset opened again in the worker)."""
    from udcbench.datasets import create_dataset

    return _landmarks_of(create_dataset(name, Path(root) if root else None, **options), records, source,
                         assume_cropped)


def compute_landmarks(adapter, split: str | None = None, source: str = "auto", cache_dir: Path | None = None,
                      progress: bool = True, workers: int | None = None) -> LandmarkSet:
    """Landmarks for every image of a split (or all), computed once and cached under ``cache_dir``. dlib's
    detector runs in ``workers`` processes (default: every core, from :data:`PARALLEL_MIN_IMAGES` images on);
    the result does not depend on their number."""
    from udcbench.engine.data import decode_workers
    from udcbench.progress import progress_bar
    from udcbench.workers import worker_pool

    path = cache_path(adapter, split, source, cache_dir) if cache_dir is not None else None
    if path is not None and path.is_file():
        return LandmarkSet.load(path)
    assume_cropped = getattr(adapter, "face_cropped", True)
    use_dlib = LandmarkExtractor(source, assume_cropped).use_dlib
    records = adapter.records(split)
    if workers is None:
        workers = decode_workers() if use_dlib and len(records) >= PARALLEL_MIN_IMAGES else 1
    start = time.perf_counter()
    description = f"landmarks ({source})"
    if workers > 1 and len(records) > 1:
        chunk = -(-len(records) // (4 * workers))
        root = None if adapter.root is None else str(adapter.root)
        parts = []
        with worker_pool(workers) as pool, progress_bar(transient=not progress) as bar:
            task = bar.add_task(description, total=len(records), visible=progress)
            futures = [pool.submit(_landmark_chunk, adapter.name, root, dict(adapter.options), records[i : i + chunk],
                                   source, assume_cropped) for i in range(0, len(records), chunk)]
            for future in futures:
                parts.append(future.result())
                bar.advance(task, len(parts[-1][1]))
        points = np.concatenate([p for p, _ in parts])
        methods = [m for _, found in parts for m in found]
    else:
        points, methods = _landmarks_of(adapter, records, source, assume_cropped, progress, description)
    result = LandmarkSet([r.id for r in records], points, np.array(methods), seconds=time.perf_counter() - start)
    if path is not None:
        result.save(path)
    return result


__all__ = [
    "LandmarkExtractor",
    "LandmarkSet",
    "compute_landmarks",
    "detect_landmarks_dlib",
    "dlib_available",
    "METHODS",
    "SOURCES",
]
