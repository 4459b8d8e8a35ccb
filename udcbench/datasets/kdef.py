"""KDEF: the official release layout ``KDEF/AF01/AF01ANS.JPG``.

File code: session (A/B), gender (F/M), subject (01-35), expression (AF afraid, AN angry,
DI disgusted, HA happy, NE neutral, SA sad, SU surprised), angle (S straight, HL/HR half
left/right, FL/FR full left/right). 70 subjects x 2 sessions x 7 expressions x 5 angles =
4,900 images; frontal (``S``) alone is 980.

The split is subject-disjoint and frozen in ``udcbench/data/kdef_split.txt`` (14 of the 70
subjects in test, both sessions): 3,920 / 980 images over all angles, as in the LRDif paper.
KDEF frames are 562 x 762 portraits; faces are cropped (Haar cascade by default) and resized.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import numpy as np

from udcbench.datasets.base import DatasetAdapter, DatasetSpec, Option, Record, read_image, register_dataset
from udcbench.errors import DatasetLayoutError
from udcbench.faces import CROP_METHODS, crop_face
from udcbench.labels import KDEF_TO_CANONICAL

NAME = re.compile(r"^([AB])([FM])(\d\d)([A-Z]{2})(S|HL|HR|FL|FR)$", re.IGNORECASE)
FOLDER = re.compile(r"^[AB][FM]\d\d$", re.IGNORECASE)
ANGLES = ("S", "HL", "HR", "FL", "FR")


def kdef_split() -> dict[str, str]:
    """Subject (``F01``..``M35``) to split, from the packaged list file."""
    text = resources.files("udcbench.data").joinpath("kdef_split.txt").read_text()
    pairs = (line.split() for line in text.splitlines() if line.strip() and not line.startswith("#"))
    return {subject: split for subject, split in pairs}


def _kdef_root(root: Path) -> Path:
    for candidate in (root / "KDEF", root / "KDEF_and_AKDEF" / "KDEF", root):
        if candidate.is_dir() and any(FOLDER.match(p.name) for p in candidate.iterdir() if p.is_dir()):
            return candidate
    return root


@register_dataset
class Kdef(DatasetAdapter):
    spec = DatasetSpec(
        name="kdef",
        title="KDEF",
        num_classes=7,
        splits=("train", "test"),
        layout="KDEF/<AF01..BM35>/<code>.JPG, e.g. KDEF/AF01/AF01ANS.JPG",
        licence="Free for non-commercial research; register at kdef.se and accept its terms.",
        url="https://kdef.se",
        citation=(
            "@techreport{lundqvist1998kdef, title={The Karolinska Directed Emotional Faces - KDEF}, "
            "author={Lundqvist, Daniel and Flykt, Anders and {\\\"O}hman, Arne}, "
            "institution={Karolinska Institutet}, year={1998}}"
        ),
        options={
            "angles": Option("frontal", "frontal (S only) or all five angles", ("frontal", "all")),
            "crop": Option("haar", "face crop: haar cascade, landmarks (dlib), or none", CROP_METHODS),
            "size": Option(100, "side of the square face crop in pixels"),
        },
    )

    @classmethod
    def detect(cls, root: Path) -> bool:
        base = _kdef_root(root)
        return any(FOLDER.match(p.name) for p in base.iterdir() if p.is_dir())

    def __init__(self, root=None, **options):
        super().__init__(root, **options)
        #: How each loaded image's face was found: haar, landmarks, fallback or none.
        self.crop_methods: dict[str, str] = {}

    @property
    def face_cropped(self) -> bool:
        return self.options["crop"] != "none"

    def _scan(self) -> list[Record]:
        base = _kdef_root(self.root)
        folders = [p for p in sorted(base.iterdir()) if p.is_dir() and FOLDER.match(p.name)]
        if not folders:
            raise DatasetLayoutError(f"KDEF at {self.root}: no subject folders like AF01/. {self.where_to_get()}")
        split_of = kdef_split()
        angles = ANGLES if self.options["angles"] == "all" else ("S",)
        records, skipped = [], []
        for folder in folders:
            for path in sorted(folder.iterdir()):
                if path.suffix.lower() not in (".jpg", ".jpeg"):
                    continue
                match = NAME.match(path.stem)
                if match is None or match.group(4).upper() not in KDEF_TO_CANONICAL:
                    skipped.append(path.name)
                    continue
                _session, gender, number, expression, angle = (g.upper() for g in match.groups())
                if angle not in angles:
                    continue
                records.append(
                    Record(
                        id=path.stem.upper(),
                        split=split_of[f"{gender}{number}"],
                        label=KDEF_TO_CANONICAL[expression],
                        path=path,
                    )
                )
        if skipped:
            self.problems.append(f"{len(skipped)} files with unrecognised KDEF codes skipped (e.g. {skipped[0]})")
        return records

    def load_image(self, record: Record) -> np.ndarray:
        crop, how = crop_face(read_image(record.path), self.options["size"], self.options["crop"])
        self.crop_methods[record.id] = how
        return crop
