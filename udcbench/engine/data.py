"""Training data: split planning (validation never taken from the test split), images decoded once into a uint8
cache (on disk and memory-mapped when the run has a cache folder: shared by the ranks of a DDP run and by later
runs, decoded on all cores), and the loader that hands uint8 batches to the device, where
:mod:`udcbench.engine.augment` augments them."""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from baselines import distributed
from udcbench.config import TrainConfig
from udcbench.datasets.base import DatasetAdapter, Record, class_counts
from udcbench.errors import UdcbenchError, UnreadableImageError
from udcbench.files import open_reserved_array, write_json
from udcbench.progress import progress_bar
from udcbench.workers import worker_pool
from udcbench.workspace import CACHE_HINT


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
        if not val:
            raise UdcbenchError(
                f"{adapter.describe()}: no validation part to choose the epoch on ({source} is empty, and the dataset "
                f"has no separate valid split); selection never looks at the test split: pass --set "
                f"val_fraction=0.1 (with at least two training images per class)")
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


#: Decoded images kept in this process when a run has no cache folder (tests), so that the runs of one study decode
#: each split once.
_DECODED: OrderedDict[tuple, tuple[np.ndarray, list[int]]] = OrderedDict()
_DECODED_MAX_BYTES = 2 << 30
#: Bump when decoding changes (interpolation, colour order): every cached array is decoded again.
DECODE_VERSION = 1
#: Below this many images the decoding runs in this process (a worker pool costs more than it saves).
PARALLEL_MIN_IMAGES = 512


def forget_decoded() -> None:
    """Empty the process's cache of decoded images (benchmarks that time decoding)."""
    _DECODED.clear()


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """``image`` as ``size`` x ``size``: area averaging to shrink, bicubic to enlarge."""
    interpolation = cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_CUBIC
    return cv2.resize(image, (size, size), interpolation=interpolation)


def _decode_into(adapter: DatasetAdapter, records: list[Record], size: int, out: np.ndarray, start: int,
                 advance=None) -> list[int]:
    widths = []
    for i, record in enumerate(records):
        try:
            image = adapter.load_image(record)
        except UnreadableImageError:  # left out afterwards (:func:`drop_unreadable`), listed as synth lists it
            widths.append(UNREADABLE)
        else:
            widths.append(image.shape[1])
            out[start + i] = resize_image(image, size)
        if advance is not None:
            advance()
    return widths


#: The width recorded for an image that did not decode.
UNREADABLE = -1


def drop_unreadable(records: list[Record], images: np.ndarray, widths: list[int]
                    ) -> tuple[list[Record], np.ndarray, list[int], list[str]]:
    """The records, images and widths without the images that did not decode, and those images' files."""
    bad = [i for i, w in enumerate(widths) if w == UNREADABLE]
    if not bad:
        return records, images, widths, []
    skipped = set(bad)
    keep = [i for i in range(len(records)) if i not in skipped]
    return ([records[i] for i in keep], images[keep], [widths[i] for i in keep],
            [str(records[i].path or records[i].id) for i in bad])


def _decode_chunk(name: str, root: str | None, options: dict, records: list[Record], size: int, path: str,
                  start: int) -> list[int]:
    """A worker's share: decode ``records`` into rows ``start...`` of the memory-mapped array at ``path``."""
    from udcbench.datasets import create_dataset

    out = np.load(path, mmap_mode="r+")
    widths = _decode_into(create_dataset(name, Path(root) if root else None, **options), records, size, out, start)
    out.flush()
    return widths


def decode_key(adapter: DatasetAdapter, records: list[Record], size: int) -> str:
    """What the decoded array depends on: the dataset (name, folder, options, manifest), the records (ids, and
    each file's size and modification time, so that a changed image is decoded again) and the size."""
    h = hashlib.sha256()
    root = None if adapter.root is None else str(Path(adapter.root).resolve())
    h.update(json.dumps([DECODE_VERSION, adapter.name, root, sorted(map(str, adapter.options.items())), size,
                         adapter.manifest_sha256]).encode(errors="surrogateescape"))
    for r in records:
        stat = r.path.stat() if r.path is not None and r.path.exists() else None
        line = f"{r.id}\0{stat.st_size if stat else ''}\0{stat.st_mtime_ns if stat else ''}\n"
        h.update(line.encode(errors="surrogateescape"))
    return h.hexdigest()[:24]


def _decode_to_disk(adapter: DatasetAdapter, records: list[Record], size: int, path: Path, description: str,
                    workers: int) -> None:
    """Decode into ``path`` (a .npy) and its widths beside it, written under temporary names, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    out = open_reserved_array(partial, (len(records), size, size, 3), hint=CACHE_HINT)
    try:
        if workers > 1 and len(records) >= PARALLEL_MIN_IMAGES:
            chunk = -(-len(records) // (4 * workers))
            with worker_pool(workers) as pool, progress_bar() as bar:
                task = bar.add_task(description, total=len(records))
                futures = [pool.submit(_decode_chunk, adapter.name, None if adapter.root is None else str(adapter.root),
                                       dict(adapter.options), records[i : i + chunk], size, str(partial), i)
                           for i in range(0, len(records), chunk)]
                widths = []
                for future, i in zip(futures, range(0, len(records), chunk)):
                    widths += future.result()
                    bar.advance(task, min(chunk, len(records) - i))
        else:
            widths = _decode_tracked(adapter, records, size, out, description)
        out.flush()
        del out
        write_json(path.with_suffix(".widths.json"), widths)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def decode_workers() -> int:
    """Decoding processes: every core this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def load_images(adapter: DatasetAdapter, records: list[Record], size: int, description: str,
                sizes: list[int] | None = None, cache_dir: Path | None = None) -> np.ndarray:
    """Every image decoded and resized once: N x size x size x 3 uint8, read-only (original widths into ``sizes``).

    With ``cache_dir`` the array lives in ``cache_dir/decoded/`` as a memory-mapped .npy, decoded once on all cores
    (by each machine's local rank 0 under DDP; the other ranks wait and map the same file, so the set is in memory
    once, in the page cache) and reused by later runs until the data changes (:func:`decode_key`). Without, it is
    decoded in this process and kept for the process's later runs (``reproduce``)."""
    if cache_dir is not None:
        path = Path(cache_dir) / "decoded" / f"{adapter.name}-{size}px-{decode_key(adapter, records, size)}.npy"
        # decoded once per machine (its local rank 0: node-local disks), the others wait at the barrier
        if distributed.local_rank() == 0 and not (path.is_file() and path.with_suffix(".widths.json").is_file()):
            _decode_to_disk(adapter, records, size, path, description, decode_workers())
        distributed.barrier()
        images = np.load(path, mmap_mode="r")
        widths = json.loads(path.with_suffix(".widths.json").read_text())
    else:
        root = None if adapter.root is None else str(Path(adapter.root).resolve())
        key = (adapter.name, root, repr(sorted(adapter.options.items())), size, tuple(r.id for r in records))
        if key not in _DECODED:
            out = np.empty((len(records), size, size, 3), dtype=np.uint8)
            widths = _decode_tracked(adapter, records, size, out, description)
            out.flags.writeable = False
            _DECODED[key] = (out, widths)
            while sum(images.nbytes for images, _ in _DECODED.values()) > _DECODED_MAX_BYTES and len(_DECODED) > 1:
                _DECODED.popitem(last=False)
        _DECODED.move_to_end(key)
        images, widths = _DECODED[key]
    if sizes is not None:
        sizes.extend(widths)
    return images


def _decode_tracked(adapter: DatasetAdapter, records: list[Record], size: int, out: np.ndarray,
                    description: str) -> list[int]:
    with progress_bar() as bar:
        task = bar.add_task(description, total=len(records))
        return _decode_into(adapter, records, size, out, 0, lambda: bar.advance(task))


class Batches(torch.utils.data.Dataset):
    """The uint8 batches of one epoch for this rank: item k is (B x S x S x 3 uint8 tensor, B positions). Holds
    the image array, or the path of its memory map, which a loader worker maps again (never a copy)."""

    def __init__(self, images: np.ndarray, batches: list[list[int]]):
        self.batches = batches
        self._images: np.ndarray | None = images
        self._path = images.filename if isinstance(images, np.memmap) else None

    def __len__(self) -> int:
        return len(self.batches)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if self._path is not None:
            state["_images"] = None  # a worker maps the file again
        return state

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._images is None:
            self._images = np.load(self._path, mmap_mode="r")
        index = self.batches[k]
        return torch.from_numpy(np.ascontiguousarray(self._images[index])), torch.tensor(index, dtype=torch.int64)


def epoch_batches(n: int, batch_size: int, steps: int, seed: int, epoch: int, rank: int, world: int
                  ) -> list[list[int]]:
    """This rank's positions for each step of ``epoch``: step s of the global batch is the s-th slice of
    ``batch_size`` positions of one permutation (seeded by seed and epoch), and rank r takes its r-th share,
    so that the global batches are those one process would train on."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch)).tolist()
    share = batch_size // world
    return [order[s * batch_size + rank * share : s * batch_size + (rank + 1) * share] for s in range(steps)]


def resolve_workers(num_workers: int, cuda: bool, world: int) -> int:
    """Loader worker processes: as set, or (-1, automatic) none on a CPU run (the loader only slices the cache)
    and up to 4 per GPU otherwise."""
    if num_workers >= 0:
        return num_workers
    return min(4, max(0, decode_workers() // max(world, 1) - 1)) if cuda else 0


def batch_loader(images: np.ndarray, batches: list[list[int]], workers: int, pin: bool
                 ) -> torch.utils.data.DataLoader:
    """uint8 batches in step order, from ``workers`` processes (0: this one), pinned for non-blocking copies."""
    return torch.utils.data.DataLoader(Batches(images, batches), batch_size=None, shuffle=False, num_workers=workers,
                                       pin_memory=pin, prefetch_factor=4 if workers else None,
                                       persistent_workers=False)


def normalise(images: np.ndarray, config: TrainConfig) -> torch.Tensor:
    """Evaluation input: N x 3 x H x W float, normalised (no augmentation; a five-crop recipe's centre crop)."""
    from udcbench.engine.augment import eval_input

    return eval_input(torch.from_numpy(np.array(images)), config)
