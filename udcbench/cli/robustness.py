"""``udcbench robustness``: a trained model behind every panel at every severity (UDC-C)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from udcbench.cli._common import (
    DATASET_OPTIONS,
    JSON_OPTION,
    Preset,
    add_command,
    check_device,
    parse_options,
    print_json,
    resolve_dataset,
    stdout,
)
from udcbench.progress import stderr
from udcbench.workspace import load_workspace

PANEL = "Training"
PRECISIONS = ("run", "fp32", "bf16")


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def robustness_cmd(
    model: Path = typer.Argument(..., help="A run folder, a checkpoint, a model folder, or an exported model "
                                           "(.pt TorchScript, .pt2 torch.export, .onnx) with its FILE.json sidecar."),
    data: str = typer.Option(..., "--data", help="The clean dataset (folder or name) whose test split is degraded."),
    dataset: str | None = typer.Option(None, "--dataset", "-d", help="Dataset adapter if not detected."),
    panels: str = typer.Option("toled,poled,lowlight", help="Comma-separated presets or recipe files (.yaml)."),
    severities: str = typer.Option("1-5", help="Severity levels, e.g. 1-5 or 1,3,5 (3 is the preset as shipped)."),
    seed: int = typer.Option(0, help="Seed of the per-image degradation parameters (synth's)."),
    reference: Path | None = typer.Option(None, "--reference", help="The reference run for CE/mCE (default: the "
                                          "ResNet-18 control trained clean on this dataset and budget, found in "
                                          "the runs folder or trained)."),
    train_reference: bool = typer.Option(True, "--train-reference/--no-train-reference",
                                         help="Train the reference when none is found."),
    budget: Preset = typer.Option(Preset.cpu, help="The reference's budget for a model without one (exported)."),
    precision: str = typer.Option("run", help="run (the run's own: what its test number used), fp32 or bf16."),
    limit: int | None = typer.Option(None, min=1, help="Score the first N test images (class-stratified) only."),
    workers: int | None = typer.Option(None, min=1, help="Synthesis processes (default: every core)."),
    device: str | None = typer.Option(None, help="cpu or cuda (synthesis runs there too)."),
    runs: Path | None = typer.Option(None, "--runs", help="Runs folder (default: runs/)."),
    option: list[str] | None = DATASET_OPTIONS,
    as_json: bool = JSON_OPTION,
) -> None:
    """Score a trained FER model behind display panels, ImageNet-C style: accuracy on the clean test split and
    under each panel at severities 1-5, the relative drop, and CE / mCE against the ResNet-18 control.

    Each degraded test set is synthesised once (as `udcbench synth` makes it) and cached for every later model.
    Severities: docs/robustness.md.

    Examples: udcbench robustness runs/ferplus/resnet18-cpu-s0 --data ferplus ;
    udcbench robustness resnet18.onnx --data ferplus --panels toled,my-panel.yaml --severities 1,3,5 --json
    """
    from udcbench.engine.data import decode_workers
    from udcbench.errors import UdcbenchError
    from udcbench.robustness import load_panels, parse_severities, score_model

    check_device(device)
    if precision not in PRECISIONS:
        raise UdcbenchError(f"--precision is {', '.join(PRECISIONS)}, not '{precision}'")
    levels = parse_severities(severities)
    recipes = load_panels([p for p in panels.split(",") if p.strip()])
    adapter = resolve_dataset(data, dataset, parse_options(option), folder="pass --data FOLDER")
    workspace = load_workspace()
    record = score_model(model, adapter, runs or workspace.runs, workspace.cache, recipes, levels, seed,
                         workers or decode_workers(), device, precision, reference, train_reference, budget.value,
                         limit)
    if as_json:
        print_json(record)
        return
    table = Table(title=f"{record['method']} on {record['dataset']} ({record['test_split']}, {record['images']} "
                        "images): accuracy %", title_justify="left")
    table.add_column("panel")
    for level in record["severities"]:
        table.add_column(f"s{level}", justify="right")
    table.add_column("CE", justify="right")
    table.add_column("rel. CE", justify="right")
    mce = record["mce"] or {}
    clean = record["cells"][0]["accuracy"]
    for panel in [p["name"] for p in record["panels"]]:
        by_level = {c["severity"]: c["accuracy"] for c in record["cells"] if c["panel"] == panel}
        table.add_row(panel, *[_fmt(by_level.get(s)) for s in record["severities"]],
                      _fmt((mce.get("per_panel") or {}).get(panel)),
                      _fmt((mce.get("relative_per_panel") or {}).get(panel)))
    stdout.print(table)
    stdout.print(f"clean {clean:.2f} %; mCE {_fmt(mce.get('overall'))}, relative mCE "
                 f"{_fmt(mce.get('relative_overall'))} (100 = the reference, {REFERENCE_SAID}); "
                 f"record: {record['record_file']}", highlight=False)
    stderr.print(f"{record['synthesised']} degraded set(s) synthesised, the rest from the cache; "
                 f"{record['seconds']['total']:.0f} s", highlight=False)


REFERENCE_SAID = "the ResNet-18 control trained clean"


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    add_command(app, robustness_cmd, "robustness", panel=PANEL)
