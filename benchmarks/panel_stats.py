"""A UDC recipe's panel statistics at capture scale, beside those measured on real captures; and the fit of
the scatter parameters that brings a recipe's statistics to them.

    python benchmarks/panel_stats.py [--recipes toled poled my_panel.yaml] [--tag before]
    python benchmarks/panel_stats.py --fit toled      # prints the scatter / veil / gains that fit the targets
    python benchmarks/panel_stats.py --speed          # seconds per 2048 x 1024 frame at capture scale

Everything comes from the recipe itself, at psf_scale 1 (the capture's pixels), noise off, every range at
its mean: the green channel's MTF along x and y and its encircled energy, from the recipe's PSF (the
diffraction PSF mixed with the scatter halo, and the veil, the share of the light spread evenly over a
2048 x 1024 frame); the linear gains through the origin and with an offset, by least squares of the
degraded against the clean of a synthetic test chart (random grey-level patches of mean linear brightness
0.18, mid grey, on a 2048 x 1024 frame). The targets were measured on a real aligned triplet of the UDC 2020
challenge data (Zhou et al., CVPR 2021: ground truth, T-OLED and P-OLED captures of one scene; the issue
that asked for this script gives them). Writes ``benchmarks/results/panel_stats[-TAG].csv``.

``--fit`` minimises the squared error of the PSF statistics over the scatter share, the anisotropic Gaussian
halo components (two for T-OLED, three for P-OLED) and the veil share (Adam on their logarithms, in float64),
then prints the gains that would give the chart the captures' gains through the origin, and its slopes and
offsets then (they depend on the scene's structure: the chart's patches are smaller than a scene's regions, so
a wide halo acts on them as an offset; the presets take the captures' gains as the panel's throughput).
"""

from __future__ import annotations

import argparse
import math

import torch

from degradations import build_degradation, load_recipe
from degradations import functional as Fd
from degradations.recipe import Recipe, parse_recipe
from udcbench.calibration import render

from _common import report

FRAME = (1024, 2048)  # the captures' height and width
CHART_MEAN = 0.18

#: Statistics of the real captures (green channel, capture pixels).
TARGETS: dict[str, dict] = {
    "toled": {"mtf_x": {0.03: 0.65, 0.05: 0.21, 0.10: 0.00}, "mtf_y": {0.05: 0.72, 0.10: 0.59, 0.20: 0.37},
              "ee": {0: 0.027, 2: 0.175, 5: 0.50}, "gains": (0.964, 0.962, 0.961)},
    "poled": {"mtf_x": {0.016: 0.165, 0.05: 0.165, 0.10: 0.165, 0.15: 0.165},
              "mtf_y": {0.016: 0.165, 0.05: 0.165, 0.10: 0.165, 0.15: 0.165},
              "ee": {15: 0.18, 100: 0.46}, "gains": (0.239, 0.214, 0.070),
              "slopes": (0.167, 0.151, 0.047), "offsets": (0.0062, 0.0068, 0.0039)},
}


def line_mtf(psf: torch.Tensor, frequency: float, axis: str) -> torch.Tensor:
    """Modulation transfer of a 2-D PSF along ``axis`` at ``frequency`` (cycles/px), differentiable."""
    line = psf.sum(dim=0 if axis == "x" else 1)
    position = torch.arange(line.numel(), dtype=psf.dtype) - line.numel() // 2
    phase = 2 * math.pi * frequency * position
    return torch.hypot((line * torch.cos(phase)).sum(), (line * torch.sin(phase)).sum()) / line.sum()


def encircled(psf: torch.Tensor, radius: float) -> torch.Tensor:
    """Share of a 2-D PSF's energy within ``radius`` px of its centre (radius 0: the centre pixel)."""
    n = psf.shape[-1]
    r = torch.arange(n, dtype=psf.dtype) - n // 2
    inside = (r[:, None] ** 2 + r[None, :] ** 2) <= radius**2
    return (psf * inside).sum() / psf.sum()


def mixed_psf(diffraction: torch.Tensor, halo: torch.Tensor | None, fraction: float | torch.Tensor) -> torch.Tensor:
    """``(1 - f) diffraction + f halo`` on the larger of the two grids (2-D, one channel)."""
    if halo is None:
        return diffraction
    k, big = diffraction.shape[-1], halo.shape[-1]
    if k > big:
        return mixed_psf(halo, diffraction, 1 - fraction)
    lo = (big - k) // 2
    out = fraction * halo
    return out + torch.nn.functional.pad((1 - fraction) * diffraction, (lo, lo, lo, lo))


def psf_stats(psf: torch.Tensor, veil: float | torch.Tensor, targets: dict) -> dict[str, torch.Tensor]:
    """The statistics of ``targets`` of a green-channel PSF with a veil (MTF scaled by 1 - v; the veil's
    share of the frame within a radius added to the encircled energy)."""
    area = FRAME[0] * FRAME[1]
    out = {}
    for axis in ("x", "y"):
        for f in targets.get(f"mtf_{axis}", {}):
            out[f"mtf_{axis}@{f}"] = (1 - veil) * line_mtf(psf, f, axis)
    for r in targets.get("ee", {}):
        out[f"ee@{r}"] = (1 - veil) * encircled(psf, r) + veil * max(1.0, math.pi * r**2) / area
    return out


def _chart(generator: torch.Generator) -> torch.Tensor:
    """Grey-level patches of 8-128 px (linear brightness log-uniform, mean 0.18), (1, 3, H, W)."""
    h, w = FRAME
    out = torch.empty(1, 3, h, w, dtype=torch.float64)
    y = 0
    while y < h:
        ph = int(torch.randint(8, 129, (), generator=generator))
        x = 0
        while x < w:
            pw = int(torch.randint(8, 129, (), generator=generator))
            out[..., y : y + ph, x : x + pw] = torch.exp(torch.empty(3, 1, 1, dtype=torch.float64).uniform_(
                math.log(0.01), math.log(1.0), generator=generator))
            x += pw
        y += ph
    return out * (CHART_MEAN / out.mean(dim=(2, 3), keepdim=True))


def chart_gains(recipe: Recipe) -> dict[str, float]:
    """Least-squares gains of the degraded chart (linear, noise off) against the clean one, per channel:
    through the origin, and slope + offset."""
    chart = _chart(torch.Generator().manual_seed(0))
    out = render(parse_recipe({**recipe.raw, "domain": "srgb"}), chart)  # the chart is linear already
    stats = {}
    for i, c in enumerate("rgb"):
        x, y = chart[0, i].flatten(), out[0, i].flatten()
        stats[f"gain_{c}"] = float((x * y).sum() / (x * x).sum())
        design = torch.stack([x, torch.ones_like(x)], dim=1)
        slope, offset = torch.linalg.lstsq(design, y[:, None]).solution.flatten().tolist()
        stats[f"slope_{c}"], stats[f"offset_{c}"] = slope, offset
    return stats


def green_psf(recipe: Recipe) -> tuple[torch.Tensor, torch.Tensor | None]:
    module = build_degradation(recipe)
    halo = module.halo(1.0)
    return module.psf(1.0)[1].double(), None if halo is None else halo[1].double()


def recipe_rows(name: str, tag: str) -> list[dict]:
    recipe = load_recipe(name)
    targets = TARGETS.get(recipe.name, TARGETS["toled" if "poled" not in recipe.name else "poled"])
    diffraction, halo = green_psf(recipe)
    fraction = sum(recipe.raw["scatter"]["fraction"]) / 2 if recipe.scatter() else 0.0
    v = sum(recipe.raw["veil"]) / 2 if recipe.raw.get("veil") else 0.0
    stats = {k: float(t) for k, t in psf_stats(mixed_psf(diffraction, halo, fraction), v, targets).items()}
    stats.update(chart_gains(recipe))
    wanted = {f"mtf_{a}@{f}": t for a in "xy" for f, t in targets.get(f"mtf_{a}", {}).items()}
    wanted |= {f"ee@{r}": t for r, t in targets["ee"].items()}
    for key, series in (("gain", "gains"), ("slope", "slopes"), ("offset", "offsets")):
        wanted |= {f"{key}_{c}": t for c, t in zip("rgb", targets.get(series, ()))}
    return [{"recipe": recipe.name, "version": tag, "statistic": k, "ours": v_, "real": wanted.get(k, ""),
             "error": "" if k not in wanted else v_ - wanted[k]} for k, v_ in stats.items()]


def fit(name: str, steps: int = 400) -> None:
    """Fit the scatter share, two halo components and the veil to the PSF targets; print the recipe entries."""
    recipe = load_recipe(name)
    targets = TARGETS[recipe.name]
    diffraction, _ = green_psf(recipe)
    kernel = 127 if recipe.name == "toled" else 511
    # start: a halo of a few px along x and less along y (T-OLED); a sharp core, a halo and a wide haze (P-OLED,
    # whose flat MTF needs a core sharper than its diffraction pattern)
    start = ([[1.0, 6.0, 2.0], [1.0, 15.0, 4.0]] if recipe.name == "toled" else
             [[1.0, 0.5, 0.5], [1.0, 10.0, 10.0], [1.0, 80.0, 80.0]])
    log_c = torch.tensor(start, dtype=torch.float64).log().requires_grad_(True)
    logit_f = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    logit_v = torch.tensor(-3.0, dtype=torch.float64, requires_grad=True)
    wanted = {f"mtf_{a}@{f}": t for a in "xy" for f, t in targets.get(f"mtf_{a}", {}).items()}
    wanted |= {f"ee@{r}": t for r, t in targets["ee"].items()}
    optimizer = torch.optim.Adam([log_c, logit_f, logit_v], lr=0.05)
    for _ in range(steps):
        halo = Fd.gaussian_halo(kernel, log_c.exp())
        stats = psf_stats(mixed_psf(diffraction, halo, torch.sigmoid(logit_f)), torch.sigmoid(logit_v), targets)
        loss = sum((stats[k] - t) ** 2 for k, t in wanted.items())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    components = [[round(v, 3) for v in row] for row in log_c.exp().tolist()]
    f, v = torch.sigmoid(logit_f).item(), torch.sigmoid(logit_v).item()
    print(f"{recipe.name}: loss {loss.item():.5f}; scatter fraction {f:.3f}, kernel_px {kernel}, components "
          f"{components}, veil {v:.4f}")
    for k, t in wanted.items():
        print(f"  {k:12s} fit {stats[k].item():.3f}  real {t:.3f}")
    print_gains(recipe, {"fraction": [f, f], "kernel_px": kernel, "components": components}, v, targets)


def print_gains(recipe: Recipe, scatter: dict, veil: float, targets: dict) -> None:
    """The gains that give the chart the real captures' through-origin gains (a chart's slope and offset depend on
    its structure: a halo wider than its patches acts on them as an offset), and the slopes and offsets then."""
    trial = parse_recipe({**recipe.raw, "scatter": scatter, "veil": [veil, veil],
                          "gains": {c: [1.0, 1.0] for c in "rgb"}})
    unit = chart_gains(trial)
    gains = [t / unit[f"gain_{c}"] for c, t in zip("rgb", targets["gains"])]
    print("  the chart's gains to match (the presets take the captures' through-origin gains as the throughput "
          "instead): " + ", ".join(f"{c} {g:.4f}" for c, g in zip("rgb", gains)))
    for key in ("slopes", "offsets"):
        if key in targets:
            ours = [g * unit[f"{key[:-1]}_{c}"] for c, g in zip("rgb", gains)]
            pairs = zip("rgb", ours, targets[key])
            print(f"  {key} then: " + ", ".join(f"{c} {o:.4f} (real {t})" for c, o, t in pairs))


def speed_rows(names: list[str]) -> list[dict]:
    """Seconds to degrade one 2048 x 1024 RGB frame at capture scale (noise on): the first call builds the PSF
    and the halo at this scale, the second finds them cached."""
    import time

    rows = []
    frame = torch.rand(1, 3, *FRAME, generator=torch.Generator().manual_seed(0))
    for name in names:
        recipe = load_recipe(name)
        module = build_degradation(recipe)
        times = []
        for _ in range(2):
            start = time.perf_counter()
            module.capture(frame, generator=torch.Generator().manual_seed(1))
            times.append(time.perf_counter() - start)
        halo = recipe.scatter()["kernel_px"] if recipe.scatter() else "-"
        rows.append({"recipe": recipe.name, "frame": f"{FRAME[1]} x {FRAME[0]}", "halo_px": halo,
                     "first_s": times[0], "cached_s": times[1], "threads": torch.get_num_threads()})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=["toled", "poled"])
    parser.add_argument("--tag", default="")
    parser.add_argument("--fit", help="fit the scatter parameters of this preset to its targets")
    parser.add_argument("--speed", action="store_true", help="time one capture-size frame per recipe instead")
    args = parser.parse_args()
    if args.speed:
        report("panel_speed", "Degrading one capture-size frame at capture scale", speed_rows(args.recipes))
        return
    if args.fit:
        fit(args.fit)
        return
    rows = [row for name in args.recipes for row in recipe_rows(name, args.tag or "current")]
    report(f"panel_stats{'-' + args.tag if args.tag else ''}", "Panel statistics at capture scale (green channel)",
           rows)


if __name__ == "__main__":
    main()
