"""Saved Hugging Face datasets (``DatasetDict.save_to_disk``, as ``udcbench export`` and ``synth --export hf``
write them) read as a dataset: every command that takes a dataset folder takes one (``info``, ``train --data``,
``eval``, ``synth``).

Columns: ``image`` (an Image feature: encoded bytes), ``label`` (a ClassLabel in udcbench's canonical order)
and, where present, ``id`` and ``soft_label``. Records keep the export's ids and order, so a dataset exported
and read back plans the same splits and trains the same way as its source; the export's ``manifest.json`` (its
source's, where it had one) keeps its origin and condition.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np

from udcbench.datasets.base import DatasetAdapter, DatasetSpec, Record, register_dataset
from udcbench.errors import DatasetLayoutError, UdcbenchError, UnreadableImageError
from udcbench.files import check_name
from udcbench.labels import CANONICAL_LABELS

MARKER = "dataset_dict.json"


def file_stem(id_: str) -> str:
    """A file name for a record's id: the id itself where it is a plain name; else its plain characters and a digest
    of the whole id (ids ``p/face`` and ``q/face`` stay two files; ``.`` and ``..`` are no hidden files)."""
    import hashlib
    import re

    try:
        return check_name(id_, "id")
    except UdcbenchError:
        plain = re.sub(r"[^A-Za-z0-9_+-]+", "_", id_).strip("_")[:100] or "image"
        return f"{plain}-{hashlib.sha256(id_.encode(errors='surrogateescape')).hexdigest()[:10]}"


@register_dataset
class SavedHF(DatasetAdapter):
    spec = DatasetSpec(
        name="hf",
        title="Saved Hugging Face dataset",
        num_classes=7,
        splits=("train", "valid", "test"),
        layout=f"a datasets.DatasetDict saved with save_to_disk ({MARKER}; columns image, label[, id, soft_label])",
        licence="whatever the images' own licence is (see the dataset's README.md)",
    )

    @classmethod
    def detect(cls, root: Path) -> bool:
        return (Path(root) / MARKER).is_file()

    @cached_property
    def _data(self):
        import datasets

        try:
            data = datasets.load_from_disk(str(self.root))
        except (OSError, ValueError, FileNotFoundError) as exc:
            raise DatasetLayoutError(f"{self.root}: not a readable saved dataset ({exc})") from None
        if not isinstance(data, datasets.DatasetDict):
            raise DatasetLayoutError(f"{self.root}: a single Dataset, not a DatasetDict of splits")
        for split, part in data.items():
            try:  # a split's name becomes a folder name (synth, export): never a path
                check_name(split, f"{self.root}/{MARKER} split")
            except UdcbenchError as exc:
                raise DatasetLayoutError(str(exc)) from None
            missing = {"image", "label"} - set(part.column_names)
            if missing:
                raise DatasetLayoutError(f"{self.root}: split '{split}' lacks the column(s) {sorted(missing)}")
            names = getattr(part.features["label"], "names", None)
            if names is not None and list(names) != list(CANONICAL_LABELS[: len(names)]):
                raise DatasetLayoutError(f"{self.root}: labels {names} are not udcbench's canonical order "
                                         f"{list(CANONICAL_LABELS[: len(names)])}")
        return {split: part.cast_column("image", datasets.Image(decode=False)) for split, part in data.items()}

    def _scan(self) -> list[Record]:
        aliases = {"validation": "valid", "val": "valid"}
        records, self._rows = [], {}
        for split, part in self._data.items():
            canonical = aliases.get(split, split)
            ids = part["id"] if "id" in part.column_names else [f"{split}_{i:06d}" for i in range(len(part))]
            soft = part["soft_label"] if "soft_label" in part.column_names else [None] * len(part)
            classes = len(getattr(part.features["label"], "names", None) or CANONICAL_LABELS)
            for i, (id_, label, votes) in enumerate(zip(ids, part["label"], soft)):
                if not isinstance(label, int) or not 0 <= label < classes:  # -1: "missing" in HF's ClassLabel
                    raise DatasetLayoutError(f"{self.root}: split '{split}' row {i} has label {label!r}, not one of "
                                             f"the {classes} classes (0-{classes - 1}): label or drop it first")
                id_ = str(id_)
                if id_ in self._rows:
                    id_ = f"{split}/{id_}"  # unique ids: they key caches and the records
                self._rows[id_] = (split, i)
                records.append(Record(id=id_, split=canonical, label=int(label),
                                      soft=tuple(votes) if votes is not None else None))
        return records

    @property
    def num_classes(self) -> int:
        names = [getattr(part.features["label"], "names", None) for part in self._data.values()]
        return max((len(n) for n in names if n), default=max(r.label for r in self.records()) + 1)

    def load_image(self, record: Record) -> np.ndarray:
        from udcbench.images import ImageTooLarge, decode

        self.records()
        split, index = self._rows[record.id]
        cell = self._data[split][index]["image"]
        where = self.root / split / f"#{index}"
        data = cell.get("bytes") or (self._file_cell(cell["path"], where) if cell.get("path") else b"")
        try:
            image = decode(np.frombuffer(data, np.uint8)) if data else None
        except ImageTooLarge as exc:
            raise UnreadableImageError(where, str(exc)) from None
        if image is None:
            raise UnreadableImageError(where, "not a decodable image")
        import cv2

        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)

    def _file_cell(self, name: str, where: Path) -> bytes:
        """An image cell that names a file instead of holding its bytes: read only a regular file inside the dataset's
        folder, within the image size budget (a cell naming /dev/zero, a FIFO or a photo elsewhere is refused)."""
        from udcbench.images import MAX_FILE_BYTES

        path = (self.root / name).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise UnreadableImageError(where, f"its image cell names a file outside the dataset ({name})")
        if not path.is_file():  # a FIFO, a device or a folder is no image
            raise UnreadableImageError(where, f"its image cell names no regular file ({name})")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise UnreadableImageError(where, f"its image file is over {MAX_FILE_BYTES >> 20} MB")
        return path.read_bytes()

    def as_image_folder(self, folder: Path) -> Path:
        """The dataset written as an image folder (``split/class/<id>.png``, its manifest beside) under ``folder``,
        once per content (a later call finds it complete): for the commands that read image files (synth)."""
        import hashlib

        from udcbench.files import write_atomic
        from udcbench.photos import write_image

        # keyed by content: the splits' fingerprints (a dataset replaced by another of the same size and path is
        # another cache), the manifest and the records
        content = [f"{split}:{part._fingerprint}:{len(part)}" for split, part in self._data.items()]
        digest = hashlib.sha256(f"{self.root.resolve()}:{self.manifest_sha256}:{content}".encode(
            errors="surrogateescape")).hexdigest()[:16]
        out = Path(folder) / digest
        done = out / ".complete"
        if done.is_file():
            return out
        for record in self.records():
            name = file_stem(record.id)
            write_image(self.load_image(record), out / record.split / CANONICAL_LABELS[record.label] / f"{name}.png")
        if self.manifest:
            write_atomic(out / "manifest.json", (self.root / "manifest.json").read_bytes())
        write_atomic(done, "")
        return out
