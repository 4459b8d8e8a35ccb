"""``udcbench synth``: synthesise UDC (or low-light) versions of a dataset."""

from __future__ import annotations

import hashlib
from pathlib import Path

import typer

from degradations import RecipeError, load_recipe, parse_recipe_override
from degradations.recipe import MAX_KERNEL_PX
from udcbench.cli._common import (
    DATASET_OPTIONS,
    JSON_OPTION,
    OLD_PRESET,
    Panel,
    add_command,
    fail,
    parse_options,
    print_json,
    renamed,
    resolve_dataset,
    stdout,
)
from udcbench.datasets import dataset_names, get_adapter_class
from udcbench.errors import UdcbenchError
from udcbench.progress import progress_bar, stderr
from udcbench.workspace import condition_folder, load_workspace

PANEL = "Synthesis"


def synth_cmd(
    dataset: str = typer.Argument(..., help=f"Source dataset: {', '.join(dataset_names())}."),
    out: Path | None = typer.Option(None, "--out", help="Output folder (default: data/udc-DATASET)."),
    src: Path | None = typer.Option(None, "--src", help="Source folder (default: data/DATASET)."),
    preset: Panel | None = typer.Option(None, "--panel", help="Degradation panel: toled (default), poled or "
                                                              "lowlight."),
    old_preset: Panel | None = OLD_PRESET,
    recipe: Path | None = typer.Option(None, help="Recipe file (YAML/JSON) instead of a preset."),
    psf_scale: float | None = typer.Option(None, help="Dataset pixels per capture pixel (overrides face_px)."),
    seed: int = typer.Option(0, help="Seed of the per-image parameters."),
    workers: int = typer.Option(1, help="Processes; the output does not depend on it."),
    shard: str | None = typer.Option(None, help="Process only shard i/n of the images (e.g. 0/4)."),
    resume: bool = typer.Option(False, help="Continue an interrupted run into the same --out."),
    overwrite: bool = typer.Option(False, help="Replace a non-empty --out."),
    export: str | None = typer.Option(None, help="Also export the result: 'hf' writes a DatasetDict to OUT-hf."),
    option: list[str] | None = DATASET_OPTIONS,
    as_json: bool = JSON_OPTION,
) -> None:
    """Write a degraded copy of a dataset, in the source's own layout, with a manifest and a preview.

    Examples: udcbench synth rafdb --out data/udc-rafdb ; udcbench synth ferplus --panel poled --workers 2 ;
    udcbench synth synthetic (draws the built-in faces first) ; udcbench synth kdef --resume
    """
    preset = renamed(preset, old_preset, "--panel", Panel.toled)
    from udcbench.synthesis import Shard, synthesize

    get_adapter_class(dataset)
    if export not in (None, "hf"):
        raise UdcbenchError(f"--export supports 'hf', not '{export}'")
    try:
        chosen = load_recipe(recipe if recipe is not None else preset.value)
        if psf_scale is not None:
            chosen = parse_recipe_override(chosen, psf_scale=psf_scale)
    except RecipeError as exc:
        raise UdcbenchError(str(exc)) from None
    workspace = load_workspace()
    if dataset == "synthetic" and src is None:
        from udcbench.datasets.generate import generate_synthetic

        src = workspace.dataset_dir("synthetic")
        if not src.is_dir() or not any(src.iterdir()):  # a draw already there (the user's own too) is used as it is
            generate_synthetic(src)
            stderr.print(f"drew the built-in synthetic faces into {src}")
    adapter_name = "imagefolder" if dataset == "synthetic" else dataset
    adapter = resolve_dataset(str(src) if src is not None else None, adapter_name, parse_options(option),
                              folder="pass --src FOLDER")
    if hasattr(adapter, "as_image_folder"):  # a saved HF dataset: synth reads image files, written once to the cache
        from udcbench.datasets import create_dataset

        adapter = create_dataset("imagefolder", adapter.as_image_folder(workspace.cache / "hf-images"))
    if out is None:
        out = workspace.dataset_dir(condition_folder(dataset, chosen.name))
    report = synthesize(adapter, out, chosen, seed=seed, workers=workers, shard=Shard.parse(shard), resume=resume,
                        overwrite=overwrite, cache_dir=workspace.cache)
    for problem in adapter.problems:  # e.g. listed images missing: as `udcbench info` says
        stderr.print(f"[yellow]warning:[/] {problem}", highlight=False)
    rate = report.written / report.seconds if report.seconds else 0.0
    preview, hf_out = out / "preview.png", None
    if report.complete and export == "hf":
        from udcbench.datasets import create_dataset
        from udcbench.datasets.export import export_hf

        hf_out = out.with_name(out.name + "-hf")
        export_hf(create_dataset(adapter_name, out, **adapter.options), hf_out, overwrite=True)
    if as_json:
        print_json({"out": str(out), "recipe": chosen.name, "written": report.written,
                    "already_done": report.already_done, "skipped": report.skipped, "not_copied": report.not_copied,
                    "complete": report.complete, "seconds": report.seconds,
                    "manifest": str(out / "manifest.json") if report.complete else None,
                    "preview": str(preview) if preview.is_file() else None,
                    "hf_export": str(hf_out) if hf_out else None})
    else:
        stdout.print(f"{chosen.name}: wrote {report.written} images to {out} ({report.already_done} already done, "
                     f"{len(report.skipped)} skipped) in {report.seconds:.1f} s ({rate:.0f} images/s)")
        if report.complete:
            stdout.print(f"manifest: {out / 'manifest.json'}"
                         + (f"; preview: {preview}" if preview.is_file() else " (no preview: no image was written)"))
        else:
            stdout.print(f"shard {shard} done; other shards remain (run them, or --resume without --shard)")
        if hf_out:
            stdout.print(f"HuggingFace DatasetDict: {hf_out}")
    if report.not_copied:
        stderr.print(f"[yellow]warning:[/] {len(report.not_copied)} file(s) link outside the dataset and were not "
                     f"copied (listed in the manifest as not_copied), e.g. {report.not_copied[0]}", highlight=False)
    if report.skipped:
        first = report.skipped[0]
        fail(f"{len(report.skipped)} unreadable images skipped (listed in the manifest), e.g. "
             f"{first['file']}: {first['error']}", code=3)


def calibrate_cmd(
    clean: Path = typer.Option(..., "--clean", help="The clean image of the scene (PNG / TIFF, 8 or 16 bit)."),
    udc: Path = typer.Option(..., "--udc", help="The capture of the same scene through the panel (aligned here: "
                                              "shift, rotation and scale)."),
    out: Path = typer.Option(..., "--out", help="The recipe to write (.yaml)."),
    panel_mask: Path | None = typer.Option(None, "--panel-mask",
                                           help="An image of one cell of the panel's openings (white = open)."),
    preset: Panel | None = typer.Option(None, "--panel", help="Base panel (default toled): its optics (and cell, "
                                                              "without --panel-mask)."),
    old_preset: Panel | None = OLD_PRESET,
    halo_px: int | None = typer.Option(None, help="Side of the scatter halo at capture scale (odd; default: the "
                                                  "preset's, else 127)."),
    steps: int = typer.Option(150, min=1, max=100_000, help="Optimiser steps of the fit."),
    overwrite: bool = typer.Option(False, help="Replace an existing --out."),
    json_out: bool = JSON_OPTION,
) -> None:
    """Fit a UDC recipe to your own aligned pair: gains and veil, the scatter halo beside the panel's
    diffraction PSF, and the noise; prints PSNR / SSIM of the fitted simulation and of the clean image against
    the capture, and writes a recipe that `udcbench synth --recipe` uses.

    Examples: udcbench calibrate --clean gt.png --udc toled.png --out my_panel.yaml ;
    udcbench calibrate --clean gt.png --udc capture.png --panel-mask cell.png --panel poled --out panel.yaml
    """
    preset = renamed(preset, old_preset, "--panel", Panel.toled)
    import yaml

    from udcbench.calibration import fit_pair, read_image
    from udcbench.files import write_atomic

    if out.exists() and not overwrite:
        raise UdcbenchError(f"{out} exists (pass --overwrite to replace it)")
    if halo_px is not None and not (3 <= halo_px <= MAX_KERNEL_PX and halo_px % 2):
        raise UdcbenchError(f"--halo-px must be an odd integer from 3 to {MAX_KERNEL_PX}, got {halo_px}")
    for path in (clean, udc, *([panel_mask] if panel_mask else [])):
        if not path.is_file():
            raise UdcbenchError(f"no such file: {path}")
    try:
        base = load_recipe(preset.value)
        if base.kind != "udc":
            raise UdcbenchError(f"calibrate fits a UDC panel: --panel {preset.value} is a {base.kind} recipe")
        if panel_mask is not None:
            base = parse_recipe_override(base, psf={**base.raw["psf"], "mask": str(panel_mask.resolve())})
    except RecipeError as exc:
        raise UdcbenchError(str(exc)) from None
    pair = read_image(clean), read_image(udc)
    with progress_bar() as bar:
        task = bar.add_task("fitting", total=steps)
        def show(i: int, n: int, loss: float) -> None:
            bar.update(task, completed=i, description=f"fitting (mse {loss:.2e})")

        fit = fit_pair(*pair, base, kernel_px=halo_px, steps=steps, progress=show)
    name = out.stem if out.stem and out.stem[0].isalnum() else "my_panel"
    provenance = {"clean": clean.name, "udc": udc.name, "clean_sha256": hashlib.sha256(clean.read_bytes()).hexdigest(),
                  "udc_sha256": hashlib.sha256(udc.read_bytes()).hexdigest()}
    recipe = fit.recipe(base, "".join(c if c.isalnum() or c in "._+-" else "-" for c in name), provenance)
    write_atomic(out, "# Written by udcbench calibrate.\n" + yaml.safe_dump(recipe, sort_keys=False))
    summary = {"out": str(out), "gains": fit.gains, "scatter_fraction": fit.fraction, "components": fit.components,
               "veil": fit.veil, "photons": fit.photons, "read_noise": fit.read_noise, "shift_px": fit.shift_px,
               "rotation_deg": fit.rotation_deg, "scale": fit.scale,
               "psnr_fit": fit.psnr_fit, "ssim_fit": fit.ssim_fit, "psnr_clean": fit.psnr_clean,
               "ssim_clean": fit.ssim_clean, "seconds": fit.seconds}
    if json_out:
        print_json(summary)
        return
    stdout.print(f"gains {', '.join(f'{g:.4f}' for g in fit.gains)}; scatter {fit.fraction:.3f} of the light in "
                 f"{fit.components}; veil {fit.veil:.4f}; noise: {fit.photons:.0f} photons at full scale, read "
                 f"noise {fit.read_noise:.2f} e; aligned: shift ({fit.shift_px[0]:.2f}, {fit.shift_px[1]:.2f}) px, "
                 f"rotation {fit.rotation_deg:.3f} deg, scale {fit.scale:.4f}")
    stdout.print(f"fitted simulation vs capture: PSNR {fit.psnr_fit:.2f} dB, SSIM {fit.ssim_fit:.4f} "
                 f"(clean vs capture: {fit.psnr_clean:.2f} dB, {fit.ssim_clean:.4f}); {fit.seconds:.0f} s")
    stdout.print(f"wrote {out}: udcbench synth DATASET --recipe {out}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    add_command(app, synth_cmd, "synth", panel=PANEL)
    add_command(app, calibrate_cmd, "calibrate", panel=PANEL)
