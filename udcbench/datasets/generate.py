"""Write the built-in synthetic faces to disk as an image folder (``udcbench generate``)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np

from udcbench import __version__
from udcbench.datasets.imagefolder import LANDMARKS_FILE
from udcbench.datasets.synthetic_faces import SyntheticFaceGenerator
from udcbench.errors import UdcbenchError
from udcbench.files import read_json, remove_own_output, remove_stale_temporaries, temp_path, write_json
from udcbench.labels import CANONICAL_LABELS
from udcbench.progress import progress_bar
from udcbench.workers import worker_pool

MANIFEST = "manifest.json"
_CHUNK = 250
#: The built-in dataset's size: 400 train and 100 test images per class.
DEFAULT_COUNTS = {"train": 2800, "test": 700}
_generator: SyntheticFaceGenerator | None = None


def _relative_path(split: str, index: int, label: int) -> str:
    return f"{split}/{CANONICAL_LABELS[label]}/{split}_{index:06d}"


def _write_chunk(out: str, split: str, start: int, stop: int, seed: int, size: int) -> tuple[list[str], np.ndarray]:
    global _generator
    if _generator is None or (_generator.seed, _generator.size) != (seed, size):
        _generator = SyntheticFaceGenerator(seed=seed, size=size)
    ids, points = [], []
    for index, face in zip(range(start, stop), _generator.draw_batch(split, range(start, stop))):
        rel = _relative_path(split, index, face.label)
        path = Path(out) / f"{rel}.png"
        tmp = temp_path(path, ".png")
        if not cv2.imwrite(str(tmp), cv2.cvtColor(face.image, cv2.COLOR_RGB2BGR)):
            raise UdcbenchError(f"could not write {path}")
        os.replace(tmp, path)
        ids.append(rel)
        points.append(face.landmarks)
    return ids, np.stack(points)


def generate_synthetic(out: Path, n_train: int = DEFAULT_COUNTS["train"], n_test: int = DEFAULT_COUNTS["test"],
                       seed: int = 0, size: int = 100, workers: int = 1, overwrite: bool = False) -> dict:
    """Draw the synthetic faces into ``out/<split>/<class>/*.png`` with ``landmarks.npz`` and a manifest.

    The images depend only on (seed, size, split, index), never on ``workers``.
    """
    out = Path(out)
    if min(n_train, n_test) < 0 or n_train + n_test == 0:
        raise UdcbenchError("--n-train and --n-test must be >= 0 and not both 0")
    counts = {"train": n_train, "test": n_test}
    remove_stale_temporaries(out)  # what a killed earlier draw left mid-write
    if out.exists() and any(out.iterdir()):
        if not overwrite and _complete(out, seed, size, counts):
            return {"images": n_train + n_test, "seconds": 0.0, "images_per_second": None, "skipped": True}
        if not overwrite and not _stopped(out, seed, size, counts):
            raise UdcbenchError(f"{out} is not empty and holds other data; pass --overwrite to replace it")
        remove_own_output(out, "synthetic faces folder")  # its own: another draw (--overwrite), or this one stopped
    manifest = {
        "dataset": "synthetic",
        "generator": "udcbench.datasets.synthetic_faces.SyntheticFaceGenerator",
        "udcbench_version": __version__,
        "seed": seed,
        "size": size,
        "counts": counts,
        "layout": "imagefolder: <split>/<class>/<split>_<index>.png; landmarks.npz (ids, points N x 68 x 2)",
        "note": "Procedural faces for demos, tests and pipeline checks; not a FER benchmark.",
    }
    write_json(out / MANIFEST, {**manifest, "complete": False})  # first: marks the folder as udcbench's
    for split, n in counts.items():
        for label in range(7 if n else 0):
            (out / split / CANONICAL_LABELS[label]).mkdir(parents=True, exist_ok=True)
    jobs = [(str(out), split, s, min(s + _CHUNK, n), seed, size)
            for split, n in counts.items() for s in range(0, n, _CHUNK)]
    ids, points = [], []
    start = time.perf_counter()
    with progress_bar() as bar:
        task = bar.add_task("drawing faces", total=n_train + n_test)
        if workers > 1:
            with worker_pool(workers) as pool:
                futures = [pool.submit(_write_chunk, *job) for job in jobs]
                for future in futures:
                    chunk_ids, chunk_points = future.result()
                    ids += chunk_ids
                    points.append(chunk_points)
                    bar.advance(task, len(chunk_ids))
        else:
            for job in jobs:
                chunk_ids, chunk_points = _write_chunk(*job)
                ids += chunk_ids
                points.append(chunk_points)
                bar.advance(task, len(chunk_ids))
    seconds = time.perf_counter() - start
    np.savez_compressed(out / LANDMARKS_FILE, ids=np.array(ids), points=np.concatenate(points))
    write_json(out / MANIFEST, {**manifest, "complete": True})
    return {"images": len(ids), "seconds": seconds, "images_per_second": len(ids) / max(seconds, 1e-9),
            "skipped": False}


def _stopped(out: Path, seed: int, size: int, counts: dict[str, int]) -> bool:
    """Whether ``out`` holds this very generation, stopped before its end (its manifest, written first, says
    complete: false): the same command then draws it again, as a half-made output never blocks the re-run."""
    manifest = read_json(out / MANIFEST)
    return (isinstance(manifest, dict) and manifest.get("complete") is False
            and (manifest.get("seed"), manifest.get("size"), manifest.get("counts")) == (seed, size, counts))


def _complete(out: Path, seed: int, size: int, counts: dict[str, int]) -> bool:
    """Whether ``out`` already holds exactly this generation (its manifest is completed last)."""
    manifest = read_json(out / MANIFEST)
    if not isinstance(manifest, dict) or manifest.get("complete") is False:
        return False
    same = (manifest.get("seed"), manifest.get("size"), manifest.get("counts")) == (seed, size, counts)
    return same and sum(1 for _ in out.rglob("*.png")) == sum(counts.values())
