"""Landmark extraction speed and detection rate on the real FERPlus valid split.

    python benchmarks/landmarks.py [--split valid]

Runs every source (ground truth does not apply to FERPlus) without the cache and reports
images/s and the share of images where dlib's detector found the face (the rest use the whole
48 x 48 crop as the face box).
"""

from __future__ import annotations

import argparse

from udcbench.datasets import create_dataset
from udcbench.landmarks import compute_landmarks, dlib_available

from _common import FERPLUS, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="valid")
    parser.add_argument("--src", default=str(FERPLUS))
    args = parser.parse_args()
    ds = create_dataset("ferplus", args.src)
    rows = []
    for source in ("dlib", "mean_shape") if dlib_available() else ("mean_shape",):
        result = compute_landmarks(ds, args.split, source, cache_dir=None)
        counts = result.counts()
        rows.append({
            "source": source,
            "images": len(result),
            "images_per_s": len(result) / result.seconds,
            "detected": counts.get("dlib", 0),
            "crop_box": counts.get("dlib_cropbox", 0),
            "detection_rate": counts.get("dlib", 0) / len(result),
        })
    report("landmarks_ferplus", f"Landmarks on FERPlus {args.split}", rows)


if __name__ == "__main__":
    main()
