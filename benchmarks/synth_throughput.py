"""Whole-pipeline throughput of ``udcbench synth`` (decode to write) on the real FERPlus training images.

    python benchmarks/synth_throughput.py [--preset toled] [--naive-images 2000]

Reports, in one run on this machine:
- images/s and seconds for the 28,558 FER2013Train images with 1 and 2 workers (target: < 15 s);
- the time PNG decode + encode alone take, and the share of the synth time spent outside them;
- the naive way (one image at a time, spatial cv2.filter2D per channel) on a subset, as a ratio to
  our per-image path on the same files, and the largest difference between the two before quantisation,
  at the preset's FERPlus scaling and at the capture's own scale (psf_scale 1, a 31 x 31 PSF);
- peak memory (RSS) of a 1-worker run on 2,000 images and on all of them (must not grow).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from degradations import build_degradation, load_recipe, parse_recipe_override
from degradations import functional as Fd
from udcbench.datasets import create_dataset
from udcbench.synthesis import CHUNK, degrade_chunk, image_seed, synthesize

from _common import FERPLUS, report


def link_folder(files: list[Path], dest: Path) -> Path:
    """A FERPlus-layout folder of symbolic links to ``files`` (the train split only)."""
    folder = dest / "FER2013Train"
    folder.mkdir(parents=True)
    for f in files:
        (folder / f.name).symlink_to(f.resolve())
    label = FERPLUS / "FER2013Train" / "label.csv"
    (folder / "label.csv").symlink_to(label.resolve())
    return dest


def decode_encode_seconds(files: list[Path], out: Path) -> float:
    start = time.perf_counter()
    for f in files:
        image = cv2.imdecode(np.frombuffer(f.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
        (out / f.name).write_bytes(cv2.imencode(".png", image)[1].tobytes())
    return time.perf_counter() - start


def naive(files: list[Path], recipe, with_noise: bool, out: Path) -> tuple[float, list[np.ndarray]]:
    """One image at a time, float64 numpy + cv2.filter2D with the full resampled PSF, each written to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    module = build_degradation(recipe)
    outputs = []
    start = time.perf_counter()
    for f in files:
        image = cv2.cvtColor(cv2.imread(str(f), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB).astype(np.float64) / 255
        gen = torch.Generator().manual_seed(image_seed(recipe, 0, f"FER2013Train/{f.name}"))
        params = module.sample(1, [gen])
        linear = np.where(image <= 0.04045, image / 12.92, ((image + 0.055) / 1.055) ** 2.4)
        scaled = linear * params["gains"][0].numpy()
        psf = module.psf(recipe.psf_scale("ferplus", image.shape[1])).double().numpy()  # honours psf_scale
        blurred = np.stack([cv2.filter2D(scaled[..., c], -1, psf[c][::-1, ::-1], borderType=cv2.BORDER_REFLECT_101)
                            for c in range(3)], axis=-1)
        if with_noise:
            tensor = torch.from_numpy(blurred).permute(2, 0, 1)[None].float()
            gens = [torch.Generator().manual_seed(int(params["noise_seed"][0]))]
            blurred = Fd.poisson_gaussian_noise(tensor, params["photons"], gens)[0].permute(1, 2, 0).double().numpy()
        srgb = np.where(blurred <= 0.0031308, 12.92 * blurred, 1.055 * np.clip(blurred, 0, 1) ** (1 / 2.4) - 0.055)
        result = np.round(np.clip(srgb, 0, 1) * 255).astype(np.uint8)
        cv2.imwrite(str(out / f.name), cv2.cvtColor(result, cv2.COLOR_RGB2BGR))
        outputs.append(np.clip(srgb, 0, 1))
    return time.perf_counter() - start, outputs


def ours_chunks(files: list[Path], recipe, out: Path) -> float:
    """Our per-image path (decode, degrade in fixed chunks, encode, write, manifest entry), without the
    once-per-run work (file scan, preview), in this process, on the same files as the naive loop."""
    rels = [f"FER2013Train/{f.name}" for f in files]
    degrade_chunk(str(FERPLUS), str(out), rels[:CHUNK], rels[:CHUNK], recipe, "ferplus", 0, None)  # warm up
    start = time.perf_counter()
    for i in range(0, len(rels), CHUNK):
        degrade_chunk(str(FERPLUS), str(out), rels[i : i + CHUNK], rels[i : i + CHUNK], recipe, "ferplus", 0, None)
    return time.perf_counter() - start


def ours_without_noise(files: list[Path], recipe) -> list[np.ndarray]:
    module = build_degradation(recipe)
    images = [cv2.cvtColor(cv2.imread(str(f), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB) for f in files]
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    gens = [torch.Generator().manual_seed(image_seed(recipe, 0, f"FER2013Train/{f.name}")) for f in files]
    params = module.sample(len(files), gens)
    y = Fd.blur(Fd.channel_scale(Fd.srgb_to_linear(x), params["gains"]), module.psf(recipe.psf_scale("ferplus", 48)))
    return list(Fd.linear_to_srgb(y).permute(0, 2, 3, 1).double().numpy())


def peak_rss_mb(n: int, preset: str) -> float:
    code = (
        "import resource, sys, tempfile, pathlib\n"
        "sys.path.insert(0, 'benchmarks')\n"
        "from synth_throughput import link_folder\n"
        "from _common import FERPLUS\n"
        "from degradations import load_recipe\n"
        "from udcbench.datasets import create_dataset\n"
        "from udcbench.synthesis import synthesize\n"
        f"files = sorted((FERPLUS / 'FER2013Train').glob('*.png'))[:{n}]\n"
        "with tempfile.TemporaryDirectory() as tmp:\n"
        "    src = link_folder(files, pathlib.Path(tmp) / 'src')\n"
        f"    synthesize(create_dataset('ferplus', src), pathlib.Path(tmp) / 'out', load_recipe('{preset}'))\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n"
    )
    env = {**os.environ, "UDCBENCH_QUIET": "1"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True,
                            cwd=Path(__file__).resolve().parents[1])
    return float(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="toled")
    parser.add_argument("--naive-images", type=int, default=2000)
    args = parser.parse_args()
    os.environ.setdefault("UDCBENCH_QUIET", "1")
    files = sorted((FERPLUS / "FER2013Train").glob("*.png"))
    recipe = load_recipe(args.preset)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = link_folder(files, tmp / "src")
        adapter = create_dataset("ferplus", src)
        (tmp / "plain").mkdir()
        codec = decode_encode_seconds(files, tmp / "plain")
        rows.append({"measure": "PNG decode + encode only", "images": len(files), "seconds": codec,
                     "images_per_s": len(files) / codec, "note": ""})
        for workers in (1, 2):
            start = time.perf_counter()
            result = synthesize(adapter, tmp / f"out{workers}", recipe, workers=workers)
            seconds = time.perf_counter() - start
            outside = 1 - codec / workers / seconds
            rows.append({"measure": f"udcbench synth, {workers} worker(s)", "images": result.written,
                         "seconds": seconds, "images_per_s": result.written / seconds,
                         "note": f"{outside:.0%} of the time outside decode/encode"})
        subset = files[: args.naive_images]
        naive_seconds, _ = naive(subset, recipe, with_noise=True, out=tmp / "naive")
        ours_seconds = ours_chunks(subset, recipe, tmp / "ours")
        _, naive_clean = naive(subset[:200], recipe, with_noise=False, out=tmp / "naive-clean")
        difference = max(np.abs(a - b).max() for a, b in zip(naive_clean, ours_without_noise(subset[:200], recipe)))
        rows.append({"measure": "naive: one image at a time, cv2.filter2D", "images": len(subset),
                     "seconds": naive_seconds, "images_per_s": len(subset) / naive_seconds,
                     "note": f"ours (1 worker) is {naive_seconds / ours_seconds:.1f}x faster; max |difference| "
                             f"before quantisation {difference:.1e}"})
        # The same comparison at the capture's own scale (psf_scale 1: a 31 x 31 PSF), where batching matters.
        big = parse_recipe_override(recipe, psf_scale=1.0)
        subset = files[:500]
        naive_seconds, _ = naive(subset, big, with_noise=True, out=tmp / "naive-big")
        ours_seconds = ours_chunks(subset, big, tmp / "ours-big")
        rows.append({"measure": "naive at psf_scale 1 (31 x 31 PSF)", "images": len(subset),
                     "seconds": naive_seconds, "images_per_s": len(subset) / naive_seconds,
                     "note": f"ours (1 worker, {ours_seconds:.1f} s) is {naive_seconds / ours_seconds:.1f}x faster"})
    for n in (2000, len(files)):
        rows.append({"measure": f"peak RSS, 1 worker, {n} images", "images": n, "seconds": float("nan"),
                     "images_per_s": float("nan"), "note": f"{peak_rss_mb(n, args.preset):.0f} MB"})
    report("synth_throughput", f"udcbench synth {args.preset} on FER2013Train", rows)


if __name__ == "__main__":
    main()
