"""The training input pipeline, the one before issue 33 beside today's, measured in one run.

    python benchmarks/loader_speed.py [--data ../shared/data/ferplus] [--images 2048] [--steps 20] [--skip-memory]

Three comparisons, each old beside new:

- **host work per training image**, one core (torch and OpenCV on one thread), at 112 and 224 px. Old: what the
  trainer's process did per image: albumentations' flip, affine jitter, normalisation and erasing on a uint8 image,
  then a float32 CHW copy. New: what the host still does: gather the batch's uint8 rows from the memory-mapped cache
  and draw the augmentation's parameters (the augmentation itself runs on the device; on a CPU-only run it runs on
  the host too, measured as ``new, augmented on this CPU``). Images/s per core.
- **decoding and resident memory**, FERPlus train at 224 px (``--skip-memory`` leaves it out: it decodes the whole
  train split twice, about 4 GB each). Old: decoded in one process into an array that the trainer then copied
  (two copies, private memory). New: decoded on every core into the cache on disk, then mapped: each DDP rank maps
  the same file, so the set is in memory once, in the page cache (``RssFile``), not per rank (``RssAnon``). Each
  measured in a fresh process: its peak resident memory (VmHWM) and its private memory after loading.
- **CPU training speed** of ``resnet18`` at the ``cpu`` preset (64 px, batch 128, the engine's precision), old
  loader and augmentation against new, alternating rounds of ``--steps`` steps; images/s at the median round.

Writes ``benchmarks/results/loader_speed.csv``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch

from udcbench.config import TrainConfig
from udcbench.datasets import create_dataset
from udcbench.engine.augment import augment, draw_params
from udcbench.engine.data import batch_loader, epoch_batches, load_images

from _common import FERPLUS, REPO, report


# -- the pipeline before issue 33 (the reference being measured) ------------------------------------------------
def legacy_transform(config: TrainConfig) -> A.Compose:
    """udcbench's albumentations augmentation before issue 33 (engine/data.py's train_transform)."""
    steps = [A.HorizontalFlip(p=0.5)] if config.flip else []
    if config.affine:
        steps.append(A.Affine(scale=(0.9, 1.1), translate_percent=(-0.06, 0.06), rotate=(-10, 10), p=0.5,
                              border_mode=cv2.BORDER_REFLECT_101))
    steps.append(A.Normalize(mean=config.mean, std=config.std))
    if config.erasing > 0:
        steps.append(A.Erasing(p=config.erasing, scale=(0.02, 0.25)))
    return A.Compose(steps, seed=config.seed)


class LegacyTrainImages(torch.utils.data.Dataset):
    """The trainer's dataset before issue 33: one image at a time, augmented in the loading process."""

    def __init__(self, images: np.ndarray, config: TrainConfig):
        self.images, self.transform, self.seed, self.epoch = images, legacy_transform(config), config.seed, 0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        self.transform.set_random_seed(zlib.crc32(f"{self.seed}:{self.epoch}:{i}".encode()))
        image = self.transform(image=self.images[i])["image"]
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), i


# -- measurements -------------------------------------------------------------------------------------------------
def _rate(fn, images: int, repeats: int = 3) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return images / statistics.median(times)


def host_rates(images: np.ndarray, size: int, batch: int) -> dict[str, float]:
    """Images/s on one core: the old per-image augmentation, the new host work, and the new augmentation on the
    CPU."""
    config = TrainConfig(input_size=size)  # the cpu preset's augmentation: flip, affine, erasing 0.25
    legacy = LegacyTrainImages(images, config)
    n = min(len(images), 4 * batch)

    def old():
        for i in range(n):
            legacy[i]

    batches = epoch_batches(len(images), batch, n // batch, config.seed, 0, 0, 1)

    def host():
        for index in batches:
            torch.from_numpy(np.ascontiguousarray(images[index]))
            draw_params(torch.tensor(index), size, config, 0)

    def on_cpu():
        for index in batches:
            rows = torch.from_numpy(np.ascontiguousarray(images[index]))
            augment(rows, draw_params(torch.tensor(index), size, config, 0), config.mean, config.std)

    return {"old": _rate(old, n), "new (host work)": _rate(host, n), "new, augmented on this CPU": _rate(on_cpu, n)}


MEMORY_PROBE = r"""
import json, sys, numpy as np
from pathlib import Path
from udcbench.datasets import create_dataset
from udcbench.engine.data import load_images
mode, root, cache = sys.argv[1], sys.argv[2], sys.argv[3]
adapter = create_dataset("ferplus", Path(root))
records = adapter.records("train")
if mode == "old":  # decoded in this process, then the trainer's copy (load_images returned a copy)
    images = load_images(adapter, records, 224, "decoding").copy()
else:
    images = load_images(adapter, records, 224, "decoding", cache_dir=Path(cache))
total = int(sum(int(images[i : i + 4096].sum(dtype=np.uint64) & 1) for i in range(0, len(images), 4096)))
status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
kb = lambda key: int(status[key].split()[0]) / 2**20
print(json.dumps({"images": len(images), "peak_gb": kb("VmHWM"), "anon_gb": kb("RssAnon"), "file_gb": kb("RssFile"),
                  "gb": images.nbytes / 2**30}))
"""


def memory_rows(root: Path, cache: Path) -> list[dict]:
    """Decode FERPlus train at 224 px old and new, each in a fresh process (the new twice: the second maps the
    cache as a second rank would)."""
    rows = []
    env = {**os.environ, "UDCBENCH_QUIET": "1", "PYTHONPATH": str(REPO)}
    for mode, label in (("old", "old: decoded in one process, then copied"),
                        ("new", "new: decoded on every core into the cache, mapped"),
                        ("new", "new: a second rank maps the same cache")):
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, mode, str(root), str(cache)], env=env,
                             capture_output=True, text=True, check=True)
        seconds = time.perf_counter() - start
        probe = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append({"measure": "FERPlus train at 224 px", "pipeline": label, "size_px": 224,
                     "images_per_second": probe["images"] / seconds, "set_gb": probe["gb"],
                     "peak_rss_gb": probe["peak_gb"], "private_gb": probe["anon_gb"],
                     "shared_file_gb": probe["file_gb"], "seconds": seconds})
    return rows


def training_rates(images: np.ndarray, labels: np.ndarray, steps: int, rounds: int = 3) -> dict[str, float]:
    """resnet18 at the cpu preset: images/s of the old loader and augmentation against the new, alternating."""
    from baselines.base import Batch
    from udcbench.engine.runtime import runtime
    from udcbench.methods import create_method, get_method

    config = get_method("resnet18").config("cpu")
    rt = runtime("cpu")
    model = rt.place(create_method("resnet18", 8, config)).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    labels_t = torch.from_numpy(labels)
    b = config.batch_size

    def step(x, index):
        with rt.autocast(config.amp):
            out = model.training_step(Batch(x, labels_t[index], index), 0)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()

    def old():
        legacy = LegacyTrainImages(images, config)
        order = [i % len(images) for i in range(steps * b)]
        loader = torch.utils.data.DataLoader(legacy, batch_size=b, sampler=order, drop_last=True)
        for x, index in loader:
            step(x.contiguous(memory_format=torch.channels_last), index)

    def new():
        for rows, index in batch_loader(images, epoch_batches(len(images), b, steps, 0, 0, 0, 1), 0, False):
            step(augment(rows, draw_params(index, config.input_size, config, 0), config.mean, config.std), index)

    times: dict[str, list[float]] = {"old": [], "new": []}
    old()  # warm-up (oneDNN's kernels for these shapes)
    for _ in range(rounds):
        for name, fn in (("old", old), ("new", new)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: steps * b / statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=FERPLUS, help="FERPlus folder (else the built-in faces)")
    parser.add_argument("--images", type=int, default=2048, help="images for the host and training measurements")
    parser.add_argument("--steps", type=int, default=12, help="training steps per round")
    parser.add_argument("--skip-memory", action="store_true", help="leave out the decoding and memory rows")
    args = parser.parse_args()
    os.environ.setdefault("UDCBENCH_QUIET", "1")
    real = (args.data / "FER2013Train").is_dir()
    adapter = create_dataset("ferplus", args.data) if real else create_dataset("synthetic", n_train=args.images,
                                                                               n_test=70, size=100)
    records = adapter.records("train")[: args.images]
    dataset = "FERPlus train" if real else "built-in faces"
    rows = []
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory(dir=REPO.parent) as tmp:
        for size in (112, 224):
            images = load_images(adapter, records, size, f"decoding at {size} px", cache_dir=Path(tmp))
            rates = host_rates(images, size, 128)
            for name, rate in rates.items():
                rows.append({"measure": f"host work per training image, one core ({dataset})", "pipeline": name,
                             "size_px": size, "images_per_second": rate, "vs_old": rate / rates["old"]})
        torch.set_num_threads(os.cpu_count() or 1)
        cv2.setNumThreads(0)
        images = load_images(adapter, records, 64, "decoding at 64 px", cache_dir=Path(tmp))
        labels = np.array([r.label for r in records], dtype=np.int64)
        rates = training_rates(images, labels, min(args.steps, len(images) // 128))
        for name, rate in rates.items():
            rows.append({"measure": f"resnet18 training, cpu preset ({dataset}, {os.cpu_count()} cores)",
                         "pipeline": name, "size_px": 64, "images_per_second": rate, "vs_old": rate / rates["old"]})
        if real and not args.skip_memory:
            rows += memory_rows(args.data, Path(tmp))
    report("loader_speed", "Input pipeline: before issue 33 against now", rows)


if __name__ == "__main__":
    main()
