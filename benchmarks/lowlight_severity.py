"""How harsh a synthesised low-light dataset is (darkening, brightness, captions, ResNet-18's accuracy drop).

The darkening its manifest recorded, the images' brightness before and after, the share of each LLDif
caption, and the plain ResNet-18's accuracy clean and low-light:

    python benchmarks/lowlight_severity.py --data ../bench/data/ll-ferplus [--split FER2013Valid]

Reads the dataset's ``manifest.jsonl`` (per-image ``darken`` factor, in linear light, and shot / read noise)
and its images beside the clean source's (``manifest.json`` names the source folder); the accuracies are the
``resnet18`` rows of ``benchmarks/results/fer_accuracy.csv`` (``fer_accuracy.py --methods resnet18
--conditions clean lowlight``). Writes ``benchmarks/results/lowlight_severity.csv``: one row per statistic.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import cv2
import numpy as np

from lrdif.lldif import CAPTION_LUMA, CAPTIONS
from udcbench.synthesis import MANIFEST, read_journals

from _common import read_rows, report

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
COLUMNS = ("statistic", "n", "mean", "std", "min", *(f"p{round(100 * q)}" for q in QUANTILES), "max")


def row(statistic: str, n: int, **values: float) -> dict:
    """One result row with every column (blank where a statistic has no such value)."""
    return {key: "" for key in COLUMNS} | {"statistic": statistic, "n": n} | values


def mean_luma(path: Path) -> float:
    """Mean Rec. 601 luma (0-1) of an image file, grey or colour."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)  # grey PNGs come back as three equal channels
    if image is None:
        raise SystemExit(f"cannot read the image {path}")
    b, g, r = (image[..., i].astype(np.float64) / 255 for i in range(3))
    return float((0.299 * r + 0.587 * g + 0.114 * b).mean())


def spread(name: str, values: list[float]) -> dict:
    q = np.quantile(values, QUANTILES)
    return row(name, len(values), mean=float(np.mean(values)), std=float(np.std(values, ddof=1)),
               min=float(np.min(values)), **{f"p{round(100 * p)}": float(v) for p, v in zip(QUANTILES, q)},
               max=float(np.max(values)))


def accuracy(condition: str) -> dict:
    runs = [float(r["accuracy"]) for r in read_rows("fer_accuracy")
            if r["method"] == "resnet18" and r["condition"] == condition]
    name = f"resnet18 accuracy % ({condition})"
    if not runs:
        return row(name, 0)
    spread_of_seeds = {"std": statistics.stdev(runs)} if len(runs) > 1 else {}  # one seed has no spread
    return row(name, len(runs), mean=statistics.mean(runs), min=min(runs), max=max(runs), **spread_of_seeds)


def main() -> None:
    example = "example: python benchmarks/lowlight_severity.py --data ../bench/data/ll-ferplus"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=example)
    parser.add_argument("--data", type=Path, required=True, help="a low-light dataset written by udcbench synth")
    parser.add_argument("--split", default="FER2013Valid", help="folder whose images are measured")
    args = parser.parse_args()
    if not (args.data / MANIFEST).is_file():
        raise SystemExit(f"{args.data} has no {MANIFEST}: give a folder that `udcbench synth --preset lowlight` wrote")
    manifest = json.loads((args.data / MANIFEST).read_text())
    source = Path(manifest["source"])
    entries = [e for e in read_journals(args.data).values() if "error" not in e]  # skipped images have no params
    if not entries or "darken" not in entries[0]["params"]:
        raise SystemExit(f"{args.data} is not a low-light dataset (its manifest records no darkening)")
    split = [e for e in entries if e["file"].startswith(args.split + "/")]
    before = [mean_luma(source / e["file"]) for e in split]
    after = [mean_luma(args.data / e["file"]) for e in split]
    buckets = np.bincount(np.searchsorted(CAPTION_LUMA, after, side="right"), minlength=len(CAPTIONS))
    rows = [spread("darken factor (linear light, all images)", [e["params"]["darken"] for e in entries]),
            spread(f"mean luma, clean ({args.split})", before),
            spread(f"mean luma, low light ({args.split})", after),
            spread(f"luma ratio low / clean ({args.split})", [a / max(b, 1e-6) for a, b in zip(after, before)]),
            *(row(f"caption share: {c}", len(after), mean=float(k / len(after))) for c, k in zip(CAPTIONS, buckets)),
            accuracy("clean"), accuracy("lowlight")]
    report("lowlight_severity", f"Low-light severity of {args.data.name} ({manifest['recipe_name']})", rows)


if __name__ == "__main__":
    main()
