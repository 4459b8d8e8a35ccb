"""How much a preset degrades stored faces at each face scale, before any training: SSIM, PSNR and the share of
image gradient left, on real FERPlus faces.

    python benchmarks/face_scale.py [--presets toled poled] [--face-px 96 192 256 384 512] [--images 512]
                                    [--recipe OLD.yaml ...]

The face-size rule (``face_px``, the capture pixels a stored face spans) sets how far the capture-scale PSF
is shrunk onto a dataset's pixels. Its calibration trains a ResNet-18 per scale (``fer_accuracy.py``);
this table says which scales are worth training: one that matches a calibrated recipe's figures is a good
first guess for a refitted one. Noise, gains and quantisation included, each image with its own seed (the
same seeds for every preset and scale). ``--recipe`` adds recipe files (e.g. a preset before a refit, from
git) at their own face scale. Writes benchmarks/results/face_scale.csv.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import kornia
import numpy as np
import torch

from degradations import build_degradation
from degradations.recipe import RecipeError, load_recipe

from _common import FERPLUS, report


def faces(folder: Path, count: int) -> torch.Tensor:
    files = sorted(folder.glob("*.png"))[:count]
    if not files:
        raise SystemExit(f"no PNG faces in {folder} (pass --src)")
    images = [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0


def gradient_energy(x: torch.Tensor) -> float:
    return kornia.filters.spatial_gradient(x.mean(1, keepdim=True)).abs().mean().item()


def measure(recipe, x: torch.Tensor, face_px: float) -> dict:
    module = build_degradation(recipe, None)
    generators = [torch.Generator().manual_seed(i) for i in range(len(x))]
    with torch.no_grad():
        y = (module(x, psf_scale=x.shape[-1] / face_px, generator=generators) * 255).round().clamp(0, 255) / 255
    return {"ssim": kornia.metrics.ssim(y, x, 7).mean().item(), "psnr_db": kornia.metrics.psnr(y, x, 1.0).item(),
            "gradient_left": gradient_energy(y) / gradient_energy(x)}


def main() -> None:
    example = "example: python benchmarks/face_scale.py --presets toled --face-px 128 256 --recipe toled-before.yaml"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=example)
    parser.add_argument("--presets", nargs="+", default=["toled", "poled"])
    parser.add_argument("--face-px", nargs="+", type=float, default=[96, 192, 256, 384, 512])
    parser.add_argument("--recipe", nargs="*", type=Path, default=[], help="recipe files, at their own face_px")
    parser.add_argument("--images", type=int, default=512)
    # training faces: the scale is a choice, and no choice reads the test split (FER2013Valid here)
    parser.add_argument("--src", type=Path, default=FERPLUS / "FER2013Train")
    args = parser.parse_args()
    torch.set_num_threads(2)
    try:
        files = [(str(path), load_recipe(path)) for path in args.recipe]
        presets = [(name, load_recipe(name)) for name in args.presets]
    except RecipeError as error:
        raise SystemExit(f"error: {error}") from None
    x = faces(args.src, args.images)
    on = {"measured_on": args.src.name}
    rows = [{"recipe": name, "face_px": recipe.face_px("ferplus"), **measure(recipe, x, recipe.face_px("ferplus")),
             **on} for name, recipe in files]
    for name, recipe in presets:
        for face_px in args.face_px:
            rows.append({"recipe": name, "face_px": face_px, **measure(recipe, x, face_px), **on})
    report("face_scale", f"degradation of {len(x)} FERPlus faces per face scale", rows)


if __name__ == "__main__":
    main()
