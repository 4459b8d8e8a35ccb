"""FERPlus: ``fer2013new.csv`` (10 votes per image) + ``FER2013Train|Valid|Test/ferNNNNNNN.png``.

Votes come from each folder's ``label.csv`` when present (as FERPlus's own reader does), else
from ``fer2013new.csv``. On the official data the majority rule keeps 25,045 train and 3,191
valid images.

When the PNG folders are absent, images are read from the Kaggle ``fer2013.csv`` (pixels as
text), whose row ``i`` is ``fer{i:07d}.png``. Vote columns: neutral, happiness, surprise,
sadness, anger, disgust, fear, contempt, unknown, NF (not a face); the first eight are the
canonical classes 0-7.

Label modes (the official FERPlus rules):

- ``majority`` (default, 8 classes): drop single votes, keep the winner only if it holds more
  than half of the remaining votes, drop images whose winner is unknown / not-a-face.
- ``majority7``: the same, then drop contempt (7 classes).
- ``probability``: the vote distribution over the top emotions (at most three, covering 75 %
  of the votes), for soft-label training; the hard label is its arg-max.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from udcbench.datasets.base import DatasetAdapter, DatasetSpec, Option, Record, register_dataset
from udcbench.errors import DatasetLayoutError, UnreadableImageError
from udcbench.labels import FERPLUS_COLUMNS

VOTES_FILE = "fer2013new.csv"
KAGGLE_FILE = "fer2013.csv"
FOLDERS = {"train": "FER2013Train", "valid": "FER2013Valid", "test": "FER2013Test"}
USAGE = {"Training": "train", "PublicTest": "valid", "PrivateTest": "test"}
NUM_EMOTIONS = 8  # canonical classes; columns 8 and 9 are unknown and NF


def ferplus_target(votes: np.ndarray | list[float], mode: str = "majority") -> np.ndarray | None:
    """Apply a FERPlus label rule to one image's 10 vote counts.

    Returns the target distribution over the 8 emotions (one-hot for ``majority``), or None
    when the image is discarded (no clear winner, or unknown / not-a-face wins).
    """
    votes = np.asarray(votes, dtype=np.float64).copy()
    if votes.shape != (len(FERPLUS_COLUMNS),):
        raise ValueError(f"expected {len(FERPLUS_COLUMNS)} vote counts, got {votes.shape}")
    votes[votes <= 1] = 0.0  # a single vote is an outlier
    total = votes.sum()
    if total <= 0:
        return None
    target = np.zeros_like(votes)
    if mode in ("majority", "majority7"):
        winner = int(np.argmax(votes))
        if votes[winner] <= 0.5 * total:
            return None
        target[winner] = votes[winner]
    elif mode == "probability":
        remaining, covered, count = votes.copy(), 0.0, 0
        while covered < 0.75 * total and count < 3:
            peak = remaining.max()
            stop = False
            for i in np.flatnonzero(remaining == peak):
                target[i], remaining[i] = peak, 0.0
                covered += peak
                count += 1
                if i >= NUM_EMOTIONS:  # unknown or not-a-face tied at the top
                    if target.sum() > peak:  # emotions came first: drop the non-emotion
                        target[i] = 0.0
                        count -= 1
                    stop = True
                    break
            if stop:
                break
        if target.sum() <= 0.5 * total or count > 3:
            return None
    else:
        raise ValueError(f"unknown FERPlus label mode '{mode}'")
    if int(np.argmax(target)) >= NUM_EMOTIONS:
        return None
    distribution = target[:NUM_EMOTIONS] / target[:NUM_EMOTIONS].sum()
    if mode == "majority7" and distribution[7] > 0:
        return None
    return distribution


@register_dataset
class FerPlus(DatasetAdapter):
    spec = DatasetSpec(
        name="ferplus",
        title="FERPlus",
        face_margin=0.1,  # FER2013's 48-px crops are tight: the face fills the frame, grayscale
        grayscale=True,
        num_classes=8,
        splits=("train", "valid", "test"),
        layout="fer2013new.csv + FER2013Train/ FER2013Valid/ FER2013Test/ (ferNNNNNNN.png), or fer2013.csv",
        licence="FER2013 images: research use (Kaggle ICML 2013 challenge); FERPlus labels: MIT licence.",
        url="https://github.com/microsoft/FERPlus",
        citation=(
            "@inproceedings{barsoum2016training, title={Training Deep Networks for Facial Expression "
            "Recognition with Crowd-Sourced Label Distribution}, author={Barsoum, Emad and Zhang, Cha "
            "and Canton Ferrer, Cristian and Zhang, Zhengyou}, booktitle={ICMI}, year={2016}}"
        ),
        options={
            "label_mode": Option(
                "majority", "majority (8 classes), majority7 (contempt dropped) or probability "
                "(vote distribution)", ("majority", "majority7", "probability")
            ),
        },
    )

    @classmethod
    def detect(cls, root: Path) -> bool:
        return (root / VOTES_FILE).is_file() or any((root / f / "label.csv").is_file() for f in FOLDERS.values())

    @property
    def num_classes(self) -> int:
        return 7 if self.options["label_mode"] == "majority7" else 8

    @classmethod
    def where_to_get(cls) -> str:
        return (
            "Get fer2013new.csv from https://github.com/microsoft/FERPlus and the FER2013 images from the "
            "Kaggle challenge, render the PNG folders with FERPlus's generate_training_data.py (or keep "
            "fer2013.csv beside fer2013new.csv) and put them in data/ferplus."
        )

    def _vote_rows(self) -> list[tuple[str, str, list[float]]]:
        """(split, image name, 10 votes) for every labelled image.

        Each split's own ``FER2013<Split>/label.csv`` is read when present (the files FERPlus's
        reader uses; they differ from ``fer2013new.csv`` in about a thousand rows), and
        ``fer2013new.csv`` supplies the splits that have none (the Kaggle ``fer2013.csv`` case).
        """
        rows, covered = [], set()
        for split, folder in FOLDERS.items():
            label_csv = self.root / folder / "label.csv"
            if not label_csv.is_file():
                continue
            covered.add(split)
            with label_csv.open(newline="", encoding="utf-8-sig") as f:
                for lineno, row in enumerate(csv.reader(f), 1):
                    if row:
                        where = f"{folder}/label.csv line {lineno}"
                        rows.append((split, row[0].strip(), self._parse_votes(row[2:], where)))
        votes_file = self.root / VOTES_FILE
        if votes_file.is_file() and len(covered) < len(FOLDERS):
            with votes_file.open(newline="", encoding="utf-8-sig") as f:
                reader = csv.reader(f)
                next(reader, None)
                for lineno, row in enumerate(reader, 2):
                    if len(row) < 2 or not row[1].strip():
                        continue  # FERPlus leaves the name empty for images it dropped
                    where = f"{VOTES_FILE} line {lineno}"
                    if row[0] not in USAGE:
                        raise DatasetLayoutError(f"{where}: unknown Usage '{row[0]}'")
                    if USAGE[row[0]] not in covered:
                        rows.append((USAGE[row[0]], row[1].strip(), self._parse_votes(row[2:], where)))
        if not rows and not covered:
            raise DatasetLayoutError(f"FERPlus at {self.root}: missing {VOTES_FILE}. {self.where_to_get()}")
        return rows

    @staticmethod
    def _parse_votes(cells: list[str], where: str) -> list[float]:
        if len(cells) != len(FERPLUS_COLUMNS):
            raise DatasetLayoutError(f"{where}: expected {len(FERPLUS_COLUMNS)} vote columns, got {len(cells)}")
        try:
            votes = [float(c) for c in cells]
        except ValueError:
            raise DatasetLayoutError(f"{where}: vote counts must be numbers, got {cells}") from None
        if any(v < 0 for v in votes):
            raise DatasetLayoutError(f"{where}: negative vote count in {cells}")
        return votes

    def _scan(self) -> list[Record]:
        mode = self.options["label_mode"]
        folders = {s: self.root / f for s, f in FOLDERS.items() if (self.root / f).is_dir()}
        kaggle = self.root / KAGGLE_FILE
        if not folders and not kaggle.is_file():
            raise DatasetLayoutError(
                f"FERPlus at {self.root}: neither the PNG folders ({', '.join(FOLDERS.values())}) "
                f"nor {KAGGLE_FILE} found"
            )
        records, dropped, missing = [], 0, 0
        for split, name, votes in self._vote_rows():
            target = ferplus_target(votes, mode)
            if target is None:
                dropped += 1
                continue
            if Path(name).name != name or name.startswith("."):
                raise DatasetLayoutError(f"{split} labels name {name!r}: not a file name in the split's folder")
            stem = Path(name).stem
            if folders:
                if split not in folders:
                    continue  # an absent split (reported by udcbench info), not an error
                path = folders[split] / name
                if not path.is_file():
                    missing += 1
                    continue
            else:
                path = None
            soft = tuple(float(p) for p in target[: self.num_classes]) if mode == "probability" else None
            records.append(Record(id=stem, split=split, label=int(np.argmax(target)), path=path, soft=soft))
        if missing:
            self.problems.append(f"{missing} labelled images are missing from their folders")
        self.dropped = dropped
        return records

    def load_image(self, record: Record) -> np.ndarray:
        if record.path is not None:
            return super().load_image(record)
        pixels = self._kaggle_pixels()
        index = int(record.id[3:])
        if index >= len(pixels):
            raise UnreadableImageError(self.root / KAGGLE_FILE, f"no row {index} for {record.id}")
        try:
            gray = np.array(pixels[index].split(), dtype=np.uint8).reshape(48, 48)
        except ValueError:
            raise UnreadableImageError(self.root / KAGGLE_FILE, f"row {index}: not 48x48 pixel values") from None
        return np.repeat(gray[:, :, None], 3, axis=2)

    def _kaggle_pixels(self) -> list[str]:
        if not hasattr(self, "_pixels"):
            with (self.root / KAGGLE_FILE).open(newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f)
                if reader.fieldnames is None or "pixels" not in reader.fieldnames:
                    raise DatasetLayoutError(f"{KAGGLE_FILE}: no 'pixels' column")
                self._pixels = [row["pixels"] for row in reader]
        return self._pixels
