"""``udcbench calibrate`` on a capture-size pair synthesised from a preset: seconds on this machine (target:
under 2 minutes for 2048 x 1024 on 2 CPU cores) and how well the parameters come back.

    python benchmarks/calibrate_speed.py [--preset toled] [--steps 150]

The clean scene is the built-in synthetic faces tiled and resized to 2048 x 1024; the capture is the preset's
degradation of it at capture scale (every range at its mean, noise on). Writes
``benchmarks/results/calibrate_speed.csv``.
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np
import torch

from degradations import build_degradation, load_recipe
from degradations.recipe import parse_recipe
from udcbench.calibration import fit_pair, quality, render
from udcbench.datasets import create_dataset

from _common import report

SIZE = (1024, 2048)


def scene() -> torch.Tensor:
    ds = create_dataset("synthetic", n_train=40, n_test=4, size=128)
    tiles = [ds.load_image(r) for r in ds.records("train")[:32]]
    rows = [np.concatenate(tiles[i : i + 8], axis=1) for i in range(0, 32, 8)]
    image = cv2.resize(np.concatenate(rows, axis=0), SIZE[::-1], interpolation=cv2.INTER_CUBIC)
    return torch.from_numpy(image).permute(2, 0, 1)[None].double() / 255


def rms_sigmas(components) -> str:
    """The halo's weighted RMS sigma along x and y (components can trade weight and width)."""
    c = np.array(components, dtype=float)
    w = c[:, 0] / c[:, 0].sum()
    return f"{np.sqrt((w * c[:, 1] ** 2).sum()):.2f} {np.sqrt((w * c[:, 2] ** 2).sum()):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="toled")
    parser.add_argument("--steps", type=int, default=150)
    args = parser.parse_args()
    base = load_recipe(args.preset)
    raw = base.raw
    truth = parse_recipe({**raw, "name": "truth", "stripes": raw.get("stripes"),
                          "gains": {c: [sum(raw["gains"][c]) / 2] * 2 for c in "rgb"},
                          "scatter": {**raw["scatter"], "fraction": [sum(raw["scatter"]["fraction"]) / 2] * 2},
                          "veil": [sum(raw["veil"]) / 2] * 2})
    clean = scene()
    udc = build_degradation(truth).capture(clean.float(), generator=torch.Generator().manual_seed(1)).double()
    udc = torch.round(udc * 255) / 255
    start = time.perf_counter()
    fit = fit_pair(clean, udc, base, steps=args.steps)
    seconds = time.perf_counter() - start
    true_psnr = quality(render(truth, clean), udc)[0]
    rows = [{"preset": args.preset, "size": f"{SIZE[1]} x {SIZE[0]}", "steps": args.steps, "seconds": seconds,
             "threads": torch.get_num_threads(),
             "gains": " ".join(f"{g:.4f}" for g in fit.gains),
             "gains_true": " ".join(f"{v[0]:.4f}" for v in truth.raw["gains"].values()),
             "fraction": fit.fraction, "fraction_true": truth.raw["scatter"]["fraction"][0],
             "veil": fit.veil, "veil_true": truth.raw["veil"][0],
             "halo_rms_sigma_xy": rms_sigmas(fit.components), "halo_rms_sigma_xy_true": rms_sigmas(
                 raw["scatter"]["components"]),
             "photons": fit.photons, "photons_true_range": str(raw["photons"]),
             "psnr_fit": fit.psnr_fit, "psnr_true_recipe": true_psnr, "psnr_clean": fit.psnr_clean}]
    report("calibrate_speed", "udcbench calibrate on a capture-size pair", rows)


if __name__ == "__main__":
    main()
