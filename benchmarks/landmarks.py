"""Landmark extraction speed and detection rate on the real FERPlus valid split.

    python benchmarks/landmarks.py [--split valid]

Runs every source (ground truth does not apply to FERPlus) without the cache and reports
images/s and the share of images where dlib's detector found the face (the rest use the whole
48 x 48 crop as the face box); dlib in one process and in one per core (``workers``), whose results must be
equal.
"""

from __future__ import annotations

import argparse

import numpy as np

from udcbench.datasets import create_dataset
from udcbench.engine.data import decode_workers
from udcbench.landmarks import compute_landmarks, dlib_available

from _common import FERPLUS, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="valid")
    parser.add_argument("--src", default=str(FERPLUS))
    args = parser.parse_args()
    ds = create_dataset("ferplus", args.src)
    rows = []
    runs = [("mean_shape", 1)]
    if dlib_available():
        runs = [("dlib", 1), ("dlib", decode_workers())] + runs
    first = {}
    for source, workers in runs:
        result = compute_landmarks(ds, args.split, source, cache_dir=None, workers=workers)
        same = first.setdefault(source, result)
        if not (np.array_equal(same.points, result.points) and list(same.methods) == list(result.methods)):
            raise SystemExit(f"{source} in {workers} processes found other landmarks than in one")
        counts = result.counts()
        rows.append({
            "source": source,
            "workers": workers,
            "images": len(result),
            "images_per_s": len(result) / result.seconds,
            "detected": counts.get("dlib", 0),
            "crop_box": counts.get("dlib_cropbox", 0),
            "detection_rate": counts.get("dlib", 0) / len(result),
        })
    report("landmarks_ferplus", f"Landmarks on FERPlus {args.split}", rows)


if __name__ == "__main__":
    main()
