"""``udcbench synth``: synthesise UDC (or low-light) versions of a dataset."""

from __future__ import annotations

from pathlib import Path

import typer

from degradations import RecipeError, load_recipe, parse_recipe_override
from udcbench.cli._common import DATASET_OPTIONS, Panel, add_command, fail, parse_options, resolve_dataset, stdout
from udcbench.datasets import dataset_names, get_adapter_class
from udcbench.errors import UdcbenchError
from udcbench.progress import stderr
from udcbench.synthesis import Shard, synthesize
from udcbench.workspace import condition_folder, load_workspace

PANEL = "Synthesis"


def synth_cmd(
    dataset: str = typer.Argument(..., help=f"Source dataset: {', '.join(dataset_names())}."),
    out: Path | None = typer.Option(None, "--out", help="Output folder (default: data/udc-DATASET)."),
    src: Path | None = typer.Option(None, "--src", help="Source folder (default: data/DATASET)."),
    preset: Panel = typer.Option(Panel.toled, help="Degradation preset."),
    recipe: Path | None = typer.Option(None, help="Recipe file (YAML/JSON) instead of a preset."),
    psf_scale: float | None = typer.Option(None, help="Dataset pixels per capture pixel (overrides face_px)."),
    seed: int = typer.Option(0, help="Seed of the per-image parameters."),
    workers: int = typer.Option(1, help="Processes; the output does not depend on it."),
    shard: str | None = typer.Option(None, help="Process only shard i/n of the images (e.g. 0/4)."),
    resume: bool = typer.Option(False, help="Continue an interrupted run into the same --out."),
    overwrite: bool = typer.Option(False, help="Replace a non-empty --out."),
    export: str | None = typer.Option(None, help="Also export the result: 'hf' writes a DatasetDict to OUT-hf."),
    option: list[str] | None = DATASET_OPTIONS,
) -> None:
    """Write a degraded copy of a dataset, in the source's own layout, with a manifest and a preview.

    Examples: udcbench synth rafdb --out data/udc-rafdb ; udcbench synth ferplus --preset poled --workers 2 ;
    udcbench synth synthetic (draws the built-in faces first) ; udcbench synth kdef --resume
    """
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
        if generate_synthetic(src)["skipped"] is False:
            stderr.print(f"drew the built-in synthetic faces into {src}")
    adapter_name = "imagefolder" if dataset == "synthetic" else dataset
    adapter = resolve_dataset(str(src) if src is not None else None, adapter_name, parse_options(option))
    if out is None:
        out = workspace.dataset_dir(condition_folder(dataset, chosen.name))
    report = synthesize(adapter, out, chosen, seed=seed, workers=workers, shard=Shard.parse(shard), resume=resume,
                        overwrite=overwrite, cache_dir=workspace.cache)
    for problem in adapter.problems:  # e.g. listed images missing: as `udcbench info` says
        stderr.print(f"[yellow]warning:[/] {problem}", highlight=False)
    rate = report.written / report.seconds if report.seconds else 0.0
    stdout.print(f"{chosen.name}: wrote {report.written} images to {out} ({report.already_done} already done, "
                 f"{len(report.skipped)} skipped) in {report.seconds:.1f} s ({rate:.0f} images/s)")
    if report.complete:
        stdout.print(f"manifest: {out / 'manifest.json'}; preview: {out / 'preview.png'}")
        if export == "hf":
            from udcbench.datasets import create_dataset
            from udcbench.datasets.export import export_hf

            hf_out = out.with_name(out.name + "-hf")
            export_hf(create_dataset(adapter_name, out, **adapter.options), hf_out, overwrite=True)
            stdout.print(f"HuggingFace DatasetDict: {hf_out}")
    else:
        stdout.print(f"shard {shard} done; other shards remain (run them, or --resume without --shard)")
    if report.skipped:
        first = report.skipped[0]
        fail(f"{len(report.skipped)} unreadable images skipped (listed in the manifest), e.g. "
             f"{first['file']}: {first['error']}", code=3)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    add_command(app, synth_cmd, "synth", panel=PANEL)
