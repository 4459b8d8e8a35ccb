"""Training data: split planning (validation never taken from the test split), in-memory images,
and albumentations augmentation seeded per (seed, epoch, image) so that any epoch replays exactly."""

from __future__ import annotations

import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch

from udcbench.config import TrainConfig
from udcbench.datasets.base import DatasetAdapter, Record, class_counts
from udcbench.errors import UdcbenchError
from udcbench.progress import track


@dataclass
class SplitPlan:
    train: list[Record]
    val: list[Record]
    test: list[Record]
    val_source: str  # how the validation part was chosen
    test_split: str


def plan_splits(adapter: DatasetAdapter, val_fraction: float, seed: int) -> SplitPlan:
    """Train, validation and test records. Test is the dataset's ``test`` split (``valid`` when it has
    none, as for FERPlus without FER2013Test). Validation is the ``valid`` split when that is not the
    test split, else a stratified ``val_fraction`` of train chosen by ``seed``."""
    splits = adapter.splits()
    if "train" not in splits:
        raise UdcbenchError(f"{adapter.describe()} has no train split")
    test_split = "test" if "test" in splits else "valid" if "valid" in splits else None
    if test_split is None:
        raise UdcbenchError(f"{adapter.describe()} has no test (or valid) split to evaluate on")
    train = adapter.records("train")
    if "valid" in splits and test_split == "test":
        val, source = adapter.records("valid"), "the dataset's valid split"
    else:
        rng = np.random.default_rng(seed)
        by_class: dict[int, list[int]] = {}
        for i, r in enumerate(train):
            by_class.setdefault(r.label, []).append(i)
        held = set()
        for indices in by_class.values():
            n = int(round(val_fraction * len(indices))) if len(indices) > 1 else 0
            held.update(rng.permutation(indices)[: max(n, 1 if len(indices) > 1 and val_fraction > 0 else 0)].tolist())
        val = [r for i, r in enumerate(train) if i in held]
        train = [r for i, r in enumerate(train) if i not in held]
        source = f"a stratified {val_fraction:.0%} of train (seed {seed})"
    plan = SplitPlan(train, val, adapter.records(test_split), source, test_split)
    check_labels(plan, adapter.num_classes)
    return plan


def check_labels(plan: SplitPlan, num_classes: int) -> None:
    """Refuse labels outside the class count, and classes missing from train or test."""
    for name in ("train", "val", "test"):
        records = getattr(plan, name)
        bad = [r for r in records if not 0 <= r.label < num_classes]
        if bad:
            raise UdcbenchError(f"{name}: label {bad[0].label} of {bad[0].id} is outside the {num_classes} classes")
    for name in ("train", "test"):
        counts = class_counts(getattr(plan, name), num_classes)
        missing = [i for i, c in enumerate(counts) if c == 0]
        if missing:
            raise UdcbenchError(f"the {name} split has no image of class(es) {missing}; every class needs some")


#: Decoded images kept in this process, so that the runs of one study (``reproduce``) decode each split once.
_DECODED: OrderedDict[tuple, tuple[np.ndarray, list[int]]] = OrderedDict()
_DECODED_MAX_BYTES = 2 << 30


def forget_decoded() -> None:
    """Empty the process's cache of decoded images (benchmarks that time decoding)."""
    _DECODED.clear()


def load_images(adapter: DatasetAdapter, records: list[Record], size: int, description: str,
                sizes: list[int] | None = None) -> np.ndarray:
    """Decode and resize every image once: N x size x size x 3 uint8 (original widths into ``sizes``).

    The same records of the same dataset at the same size are decoded once per process (a copy is returned).
    """
    root = None if adapter.root is None else str(Path(adapter.root).resolve())
    key = (adapter.name, root, repr(sorted(adapter.options.items())), size, tuple(r.id for r in records))
    if key not in _DECODED:
        out = np.empty((len(records), size, size, 3), dtype=np.uint8)
        widths = []
        for i, record in enumerate(track(records, description=description)):
            image = adapter.load_image(record)
            widths.append(image.shape[1])
            interpolation = cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_CUBIC
            out[i] = cv2.resize(image, (size, size), interpolation=interpolation)
        _DECODED[key] = (out, widths)
        while sum(images.nbytes for images, _ in _DECODED.values()) > _DECODED_MAX_BYTES and len(_DECODED) > 1:
            _DECODED.popitem(last=False)
    _DECODED.move_to_end(key)
    images, widths = _DECODED[key]
    if sizes is not None:
        sizes.extend(widths)
    return images.copy()


def train_transform(config: TrainConfig) -> A.Compose:
    steps = []
    if config.flip:
        steps.append(A.HorizontalFlip(p=0.5))
    if config.affine:
        steps.append(A.Affine(scale=(0.9, 1.1), translate_percent=(-0.06, 0.06), rotate=(-10, 10), p=0.5,
                              border_mode=cv2.BORDER_REFLECT_101))
    steps.append(A.Normalize(mean=config.mean, std=config.std))
    if config.erasing > 0:
        steps.append(A.Erasing(p=config.erasing, scale=(0.02, 0.25)))
    return A.Compose(steps, seed=config.seed)


class TrainImages(torch.utils.data.Dataset):
    """Augmented training images; yields (image tensor, position). Labels stay with the trainer so that
    relabelling (SCN) works with any number of loader workers."""

    def __init__(self, images: np.ndarray, config: TrainConfig):
        self.images = images
        self.transform = train_transform(config)
        self.seed = config.seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        self.transform.set_random_seed(zlib.crc32(f"{self.seed}:{self.epoch}:{i}".encode()))
        image = self.transform(image=self.images[i])["image"]
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), i


def normalise(images: np.ndarray, config: TrainConfig) -> torch.Tensor:
    """Evaluation input: N x 3 x H x W float, normalised (no augmentation)."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(config.mean).view(1, 3, 1, 1)
    std = torch.tensor(config.std).view(1, 3, 1, 1)
    return (x - mean) / std
