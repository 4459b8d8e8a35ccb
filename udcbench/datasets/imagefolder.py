"""Generic ``root/split/class/*.png`` folders, and the built-in synthetic faces written to disk.

Split folders: ``train``, ``valid`` (or ``val``), ``test``. Class folders: the canonical
names (``neutral``, ``happiness``, ...) or common aliases (``happy``, ``angry``, ``sad``, ...).
An optional ``landmarks.npz`` at the root (arrays ``ids`` and ``points``, N x 68 x 2) provides
ground-truth landmarks; ids are ``split/class/stem``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from udcbench.datasets.base import (
    IMAGE_SUFFIXES,
    DatasetAdapter,
    DatasetSpec,
    Record,
    register_dataset,
)
from udcbench.errors import DatasetLayoutError, UdcbenchError
from udcbench.files import check_array_file
from udcbench.labels import CANONICAL_LABELS, LABEL_INDEX

SPLIT_ALIASES = {"train": "train", "training": "train", "valid": "valid", "val": "valid",
                 "validation": "valid", "test": "test", "testing": "test"}
CLASS_ALIASES = {
    **LABEL_INDEX,
    "happy": 1, "surprised": 2, "surprise": 2, "sad": 3, "angry": 4, "disgusted": 5,
    "fearful": 6, "afraid": 6, "scared": 6,
}
LANDMARKS_FILE = "landmarks.npz"


@register_dataset
class ImageFolder(DatasetAdapter):
    spec = DatasetSpec(
        name="imagefolder",
        title="Image folder",
        num_classes=7,
        splits=("train", "test"),
        layout="root/<train|valid|test>/<class name>/*.png|jpg (valid optional), optional landmarks.npz",
        licence="whatever the images' own licence is",
    )

    @classmethod
    def detect(cls, root: Path) -> bool:
        return any(p.is_dir() and p.name.lower() in SPLIT_ALIASES for p in root.iterdir())

    def _scan(self) -> list[Record]:
        split_dirs = [p for p in sorted(self.root.iterdir()) if p.is_dir() and p.name.lower() in SPLIT_ALIASES]
        if not split_dirs:
            raise DatasetLayoutError(
                f"{self.root}: no split folders (expected {', '.join(sorted(set(SPLIT_ALIASES)))})"
            )
        records = []
        for split_dir in split_dirs:
            split = SPLIT_ALIASES[split_dir.name.lower()]
            class_dirs = [p for p in sorted(split_dir.iterdir()) if p.is_dir()]
            if not class_dirs:
                self.problems.append(f"split folder {split_dir.name}/ is empty")
            for class_dir in class_dirs:
                label = CLASS_ALIASES.get(class_dir.name.lower())
                if label is None:
                    raise DatasetLayoutError(
                        f"{class_dir}: unknown class folder '{class_dir.name}'; use one of "
                        f"{', '.join(CANONICAL_LABELS)}"
                    )
                for path in sorted(class_dir.iterdir()):  # hidden names (temporaries of a killed write) are not images
                    if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
                        rel = path.relative_to(self.root).with_suffix("")
                        records.append(Record(id=rel.as_posix(), split=split, label=label, path=path))
        return records

    @property
    def num_classes(self) -> int:
        uses_contempt = any(r.label == 7 for r in self.records())
        return 8 if uses_contempt else 7

    def ground_truth_landmarks(self, record: Record) -> np.ndarray | None:
        table = self._landmark_table()
        return None if table is None else table.get(record.id)

    def _landmark_table(self) -> dict[str, np.ndarray] | None:
        if not hasattr(self, "_landmarks"):
            path = self.root / LANDMARKS_FILE
            self._landmarks = None
            if path.is_file():
                try:
                    check_array_file(path)
                    with np.load(path, allow_pickle=False) as data:
                        self._landmarks = dict(zip(data["ids"].tolist(), data["points"].astype(np.float32)))
                except (OSError, ValueError, KeyError, UdcbenchError) as exc:  # a pickled object array: refused
                    raise DatasetLayoutError(f"{path}: not a landmarks file of arrays ids and points ({exc})") from None
        return self._landmarks
