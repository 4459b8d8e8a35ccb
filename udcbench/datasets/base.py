"""The dataset adapter interface: records, samples, options and the adapter registry."""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np

from udcbench.errors import DatasetLayoutError, DatasetNotFoundError, UdcbenchError, UnreadableImageError, unknown_name
from udcbench.files import check_name
from udcbench.images import ImageTooLarge, decode
from udcbench.labels import label_names

#: Canonical split names; adapters map their own names onto these.
SPLITS: tuple[str, ...] = ("train", "valid", "test")
IMAGE_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})


@dataclass(frozen=True)
class Record:
    """One image of a dataset, before decoding."""

    id: str
    split: str
    label: int
    path: Path | None = None
    #: Vote distribution over the dataset's classes (FERPlus ``probability`` mode).
    soft: tuple[float, ...] | None = None


@dataclass
class Sample:
    """A decoded image with its label: what every adapter yields."""

    image: np.ndarray  # H x W x 3, uint8, RGB
    label: int
    split: str
    id: str
    landmarks: np.ndarray | None = None  # 68 x 2 float32 pixel (x, y), when the source has them
    soft: np.ndarray | None = None


@dataclass(frozen=True)
class Option:
    """A dataset option (``-o key=value`` on the command line)."""

    default: Any
    help: str
    choices: tuple[Any, ...] | None = None

    def parse(self, key: str, value: Any) -> Any:
        if isinstance(value, str) and not isinstance(self.default, str):
            kind = type(self.default)
            try:
                value = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
            except ValueError:
                raise UdcbenchError(f"option {key}: expected {kind.__name__}, got '{value}'") from None
        if self.choices is not None and value not in self.choices:
            raise UdcbenchError(
                f"option {key}: '{value}' is not one of {', '.join(map(str, self.choices))}"
            )
        return value


@dataclass(frozen=True)
class DatasetSpec:
    """What a user needs to know about a dataset: shown by ``udcbench datasets``."""

    name: str
    title: str
    num_classes: int
    splits: tuple[str, ...]
    layout: str
    licence: str
    url: str = ""
    citation: str = ""
    needs_source: bool = True
    options: dict[str, Option] = field(default_factory=dict)
    #: How a face found in a photo becomes an image like this dataset's (``udcbench predict``): the square crop's
    #: margin around the detected box (a share of its side on each side), and whether the images are grayscale.
    face_margin: float = 0.25
    grayscale: bool = False
    #: Whether its faces are aligned (eyes level): ``predict`` then levels a photo's face by its eyes (dlib's
    #: landmarks, the ``landmarks`` extra) before cropping.
    aligned: bool = False

    @property
    def classes(self) -> tuple[str, ...]:
        return label_names(self.num_classes)


class DatasetAdapter(ABC):
    """Reads one dataset layout. Never writes into the source folder.

    Subclasses set ``spec`` and implement ``_scan`` (list the records without decoding) and,
    when images are not plain files, ``load_image``.
    """

    spec: ClassVar[DatasetSpec]

    def __init__(self, root: Path | str | None = None, **options: Any):
        if self.spec.needs_source:
            if root is None:
                raise UdcbenchError(f"{self.spec.title} needs a source folder (--src)")
            root = Path(root)
            if not root.exists():
                raise DatasetNotFoundError(f"{self.spec.title} not found at {root}. {self.where_to_get()}")
            if not root.is_dir():
                raise DatasetNotFoundError(f"{root} is not a folder")
        self.root = Path(root) if root is not None else None
        unknown = set(options) - set(self.spec.options)
        if unknown:
            known = ", ".join(self.spec.options) or "none"
            raise UdcbenchError(f"{self.spec.name}: unknown option(s) {sorted(unknown)}; options: {known}")
        self.options = {
            key: opt.parse(key, options.get(key, opt.default)) for key, opt in self.spec.options.items()
        }
        #: Non-fatal problems found while scanning (skipped files, ...), reported by ``udcbench info``.
        self.problems: list[str] = []
        self._records: list[Record] | None = None

    # -- what subclasses provide ------------------------------------------------------------
    @abstractmethod
    def _scan(self) -> list[Record]:
        """List every record of the dataset (all splits)."""

    def load_image(self, record: Record) -> np.ndarray:
        """Decode one image as H x W x 3 uint8 RGB."""
        if record.path is None:
            raise NotImplementedError(f"{type(self).__name__} must implement load_image")
        return read_image(record.path)

    def ground_truth_landmarks(self, record: Record) -> np.ndarray | None:
        """68 x 2 landmarks that come with the dataset, or None."""
        return None

    @classmethod
    def detect(cls, root: Path) -> bool:
        """Whether ``root`` looks like this dataset's layout."""
        return False

    @classmethod
    def where_to_get(cls) -> str:
        """One sentence on where to get the data and where to put it."""
        spec = cls.spec
        if not spec.url:
            return f"Expected layout: {spec.layout}."
        return (
            f"It is licence-gated: request it at {spec.url} and unpack it to data/{spec.name} "
            f"(layout: {spec.layout})."
        )

    # -- shared behaviour -----------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def manifest(self) -> dict[str, Any]:
        """The folder's manifest.json (written by ``udcbench synth`` and ``udcbench generate``), or {}."""
        path = self.root / "manifest.json" if self.root is not None else None
        try:
            return json.loads(path.read_text()) if path is not None else {}
        except (OSError, ValueError):
            return {}

    @property
    def manifest_sha256(self) -> str | None:
        """sha256 of the folder's manifest.json (the data's identity in run records), or None without one."""
        path = self.root / "manifest.json" if self.root is not None else None
        return hashlib.sha256(path.read_bytes()).hexdigest() if path is not None and path.is_file() else None

    @property
    def origin(self) -> str:
        """The dataset the images come from: the manifest's name for a synthesised or generated copy
        (``data/udc-synthetic`` read as an image folder is still ``synthetic``), else the adapter's name."""
        name = self.manifest.get("dataset") or self.name
        return check_name(name, f"{self.root}/manifest.json dataset") if name != self.name else name

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    @property
    def face_cropped(self) -> bool:
        """Whether images are face crops (landmark detection may then use the whole image as the box)."""
        return True

    @property
    def classes(self) -> tuple[str, ...]:
        return label_names(self.num_classes)

    def records(self, split: str | None = None) -> list[Record]:
        """Records of one split (or all), scanned once and cached."""
        if self._records is None:
            if self.manifest.get("complete") is False:
                raise DatasetLayoutError(f"{self.root} is incomplete (its manifest says complete: false: a generate or "
                                         "synth that was stopped); run the command that made it again to finish it")
            self._records = self._scan()
            if not self._records:
                raise UdcbenchError(f"{self.spec.title} at {self.root}: no images found ({self.spec.layout})")
        if split is None:
            return list(self._records)
        if split not in SPLITS:
            raise unknown_name("split", split, SPLITS)
        return [r for r in self._records if r.split == split]

    def splits(self) -> list[str]:
        """The canonical splits present, in canonical order."""
        present = {r.split for r in self.records()}
        return [s for s in SPLITS if s in present]

    def sample(self, record: Record) -> Sample:
        """Decode a record into a Sample."""
        soft = None if record.soft is None else np.asarray(record.soft, dtype=np.float32)
        return Sample(
            image=self.load_image(record),
            label=record.label,
            split=record.split,
            id=record.id,
            landmarks=self.ground_truth_landmarks(record),
            soft=soft,
        )

    def samples(self, split: str | None = None) -> Iterator[Sample]:
        """Decode and yield every sample of a split (or all)."""
        for record in self.records(split):
            yield self.sample(record)

    def __iter__(self) -> Iterator[Sample]:
        return self.samples()

    def __len__(self) -> int:
        return len(self.records())

    def describe(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.options.items())
        where = str(self.root) if self.root is not None else "built-in"
        return f"{self.spec.title} ({where}{'; ' + opts if opts else ''})"


def read_image(path: Path | str) -> np.ndarray:
    """Decode an image file as H x W x 3 uint8 RGB (grayscale is replicated)."""
    path = Path(path)
    if not path.is_file():
        raise UnreadableImageError(path, "file not found")
    data = np.fromfile(path, dtype=np.uint8)
    if not data.size:
        raise UnreadableImageError(path, "empty file")
    if data[:2].tobytes() == b"\xff\xd8" and b"\xff\xd9" not in data[-64:].tobytes():
        raise UnreadableImageError(path, "truncated JPEG (no end-of-image marker)")  # OpenCV would half-decode it
    try:
        image = decode(data, cv2.IMREAD_COLOR)
    except ImageTooLarge as exc:
        raise UnreadableImageError(path, str(exc)) from None
    if image is None:
        raise UnreadableImageError(path, "not a decodable image (corrupt, truncated or unsupported format)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def class_counts(records: list[Record], num_classes: int) -> list[int]:
    """Number of records per class index."""
    counts = Counter(r.label for r in records)
    return [counts.get(i, 0) for i in range(num_classes)]


# -- registry -------------------------------------------------------------------------------
_REGISTRY: dict[str, type[DatasetAdapter]] = {}


def register_dataset(cls: type[DatasetAdapter]) -> type[DatasetAdapter]:
    """Class decorator: make an adapter available by its ``spec.name``."""
    _REGISTRY[cls.spec.name] = cls
    return cls


def dataset_names() -> list[str]:
    return list(_REGISTRY)


def get_adapter_class(name: str) -> type[DatasetAdapter]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise unknown_name("dataset", name, dataset_names()) from None


def create_dataset(name: str, root: Path | str | None = None, **options: Any) -> DatasetAdapter:
    """Instantiate a registered adapter: ``create_dataset("ferplus", "data/ferplus", label_mode="majority7")``.
    A folder given for a dataset drawn on demand (``synthetic``: what ``generate`` or ``synth`` wrote) is read as
    the image folder it is, never replaced by the built-in draw."""
    cls = get_adapter_class(name)
    if root is not None and not cls.spec.needs_source:
        return get_adapter_class("imagefolder")(root, **options)
    return cls(root, **options)


def detect_dataset(root: Path) -> str:
    """Name of the adapter whose layout ``root`` has (``imagefolder`` is tried last)."""
    root = Path(root)
    if root.is_file():
        raise DatasetNotFoundError(f"{root} is a file, not a dataset folder")
    if not root.is_dir():
        raise DatasetNotFoundError(f"{root}: no such folder")
    order = sorted(_REGISTRY.values(), key=lambda c: c.spec.name == "imagefolder")
    for cls in order:
        if cls.spec.needs_source and cls.detect(root):
            return cls.spec.name
    layouts = "; ".join(f"{c.spec.name}: {c.spec.layout}" for c in order if c.spec.needs_source)
    raise UdcbenchError(f"{root}: no known dataset layout found. Expected one of: {layouts}")

