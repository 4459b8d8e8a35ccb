"""RAF-DB (basic): ``EmoLabel/list_patition_label.txt`` + ``Image/aligned/*_aligned.jpg``.

Label ids 1-7 are Surprise, Fear, Disgust, Happiness, Sadness, Anger, Neutral and map into the
canonical order by :data:`udcbench.labels.RAFDB_TO_CANONICAL`. The split is the file-name
prefix (``train_`` / ``test_``): 12,271 train and 3,068 test images.
"""

from __future__ import annotations

from pathlib import Path

from udcbench.datasets.base import DatasetAdapter, DatasetSpec, Option, Record, register_dataset
from udcbench.errors import DatasetLayoutError
from udcbench.labels import RAFDB_TO_CANONICAL

LABEL_FILE = Path("EmoLabel/list_patition_label.txt")


@register_dataset
class RafDb(DatasetAdapter):
    spec = DatasetSpec(
        name="rafdb",
        title="RAF-DB",
        face_margin=0.2,  # the aligned 100-px crops hold the face with some forehead and chin
        aligned=True,
        num_classes=7,
        splits=("train", "test"),
        layout="EmoLabel/list_patition_label.txt + Image/aligned/*_aligned.jpg (or Image/original/*.jpg)",
        licence="Research use only; request access from the authors (non-commercial licence agreement).",
        url="http://www.whdeng.cn/RAF/model1.html",
        citation=(
            "@inproceedings{li2017reliable, title={Reliable Crowdsourcing and Deep Locality-Preserving "
            "Learning for Expression Recognition in the Wild}, author={Li, Shan and Deng, Weihong and "
            "Du, JunPing}, booktitle={CVPR}, year={2017}}"
        ),
        options={
            "images": Option(
                "auto", "which image folder: aligned 100x100 crops, original photos, or auto "
                "(aligned when present)", ("auto", "aligned", "original")
            ),
        },
    )

    @classmethod
    def detect(cls, root: Path) -> bool:
        return (root / LABEL_FILE).is_file()

    @property
    def face_cropped(self) -> bool:
        return self._image_dir()[1]

    def _image_dir(self) -> tuple[Path, bool]:
        aligned, original = self.root / "Image/aligned", self.root / "Image/original"
        choice = self.options["images"]
        if choice == "auto":
            choice = "aligned" if aligned.is_dir() else "original"
        folder = aligned if choice == "aligned" else original
        if not folder.is_dir():
            raise DatasetLayoutError(f"RAF-DB at {self.root}: missing image folder {folder.relative_to(self.root)}")
        return folder, choice == "aligned"

    def _scan(self) -> list[Record]:
        label_file = self.root / LABEL_FILE
        if not label_file.is_file():
            raise DatasetLayoutError(
                f"RAF-DB at {self.root}: missing label file {LABEL_FILE}. {self.where_to_get()}"
            )
        folder, aligned = self._image_dir()
        records, missing = [], 0
        for lineno, line in enumerate(label_file.read_text(encoding="utf-8-sig").splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split()
            where = f"{LABEL_FILE} line {lineno}"
            if len(parts) != 2 or not parts[1].isdigit():
                raise DatasetLayoutError(f"{where}: expected '<image> <label 1-7>', got '{line.strip()}'")
            name, raw = parts[0], int(parts[1])
            if raw not in RAFDB_TO_CANONICAL:
                raise DatasetLayoutError(f"{where}: unknown label id {raw} (RAF-DB basic uses 1-7)")
            if Path(name).name != name or name.startswith("."):
                raise DatasetLayoutError(f"{where}: {name!r} is not a file name in Image/")
            split = name.split("_", 1)[0]
            if split not in ("train", "test"):
                raise DatasetLayoutError(f"{where}: image name '{name}' does not start with train_ or test_")
            stem = Path(name).stem
            path = folder / (f"{stem}_aligned.jpg" if aligned else name)
            if not path.is_file():
                missing += 1
                continue
            records.append(Record(id=stem, split=split, label=RAFDB_TO_CANONICAL[raw], path=path))
        if missing:
            self.problems.append(f"{missing} images listed in {LABEL_FILE} are missing from {folder.name}/")
        return records
