"""Data commands: datasets, info, generate, export, landmarks."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from udcbench.cli._common import (
    DATASET_OPTIONS,
    JSON_OPTION,
    add_command,
    parse_options,
    print_json,
    resolve_dataset,
    stdout,
)
from udcbench.datasets import dataset_names, get_adapter_class
from udcbench.datasets.summary import summarize
from udcbench.progress import stderr
from udcbench.workspace import load_workspace

PANEL = "Data"
#: How `info` and `landmarks` take a folder (their first argument), for the message when a named dataset is absent.
FOLDER_ARG = "give its folder as the first argument"
DatasetArg = typer.Option(None, "--dataset", "-d", help="Dataset adapter, when the layout is not detected.")


def datasets_cmd(as_json: bool = JSON_OPTION) -> None:
    """List the supported datasets: classes, splits, expected layout, options.

    Example: udcbench datasets --json
    """
    workspace = load_workspace()
    rows = []
    for name in dataset_names():
        spec = get_adapter_class(name).spec
        rows.append({
            "name": name,
            "title": spec.title,
            "classes": list(spec.classes),
            "splits": list(spec.splits),
            "layout": spec.layout,
            "default_location": str(workspace.dataset_dir(name)) if spec.needs_source else "built-in",
            "licence": spec.licence,
            "url": spec.url,
            "options": {k: {"default": o.default, "help": o.help} for k, o in spec.options.items()},
        })
    if as_json:
        print_json(rows)
        return
    table = Table(title="Supported datasets (labels in canonical order: udcbench.labels)", show_lines=True)
    for column in ("name", "classes", "splits", "layout / location", "options"):
        table.add_column(column, overflow="fold")
    for row in rows:
        options = "\n".join(f"{k}={o['default']}: {o['help']}" for k, o in row["options"].items())
        table.add_row(
            f"[bold]{row['name']}[/]\n{row['title']}",
            f"{len(row['classes'])}: {', '.join(row['classes'])}",
            ", ".join(row["splits"]),
            f"{row['layout']}\n[dim]{row['default_location']}[/]",
            options or "-",
        )
    stdout.print(table)


def print_summary(summary: dict) -> None:
    """The per-split, per-class count table of ``udcbench info``."""
    splits = list(summary["splits"])
    where = summary["root"] or "built-in"
    opts = ", ".join(f"{k}={v}" for k, v in summary["options"].items())
    table = Table(title=f"{summary['title']} at {where}" + (f" ({opts})" if opts else ""))
    table.add_column("class")
    for split in splits:
        table.add_column(split, justify="right")
    table.add_column("total", justify="right")
    for i, name in enumerate(summary["classes"]):
        counts = [summary["splits"][s][name] for s in splits]
        table.add_row(f"{i} {name}", *map(str, counts), str(sum(counts)))
    table.add_row("[bold]total", *(f"[bold]{summary['split_totals'][s]}" for s in splits),
                  f"[bold]{summary['total']}")
    stdout.print(table)
    for split in summary["absent_splits"]:
        stderr.print(f"[yellow]note:[/] split '{split}' is absent")
    for problem in summary["problems"]:
        stderr.print(f"[yellow]warning:[/] {problem}")


def info_cmd(
    target: str = typer.Argument(..., help="Dataset folder, or a dataset name (its folder under data/)."),
    dataset: str | None = DatasetArg,
    option: list[str] | None = DATASET_OPTIONS,
    quick: bool = typer.Option(False, "--quick", help="Skip decoding every image (counts and layout only)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Summarise a dataset: images per split and class, absent splits, problems found (every image is decoded:
    missing, empty, corrupt and truncated files are listed; --quick skips that).

    Examples: udcbench info data/ferplus ; udcbench info data/ferplus --quick ;
    udcbench info ../ferplus -o label_mode=majority7 ; udcbench info synthetic
    """
    adapter = resolve_dataset(target, dataset, parse_options(option), folder=FOLDER_ARG)
    summary = summarize(adapter, check_images=not quick and adapter.root is not None)
    if as_json:
        print_json(summary)
    else:
        print_summary(summary)


def generate_cmd(
    out: Path | None = typer.Argument(None, help="Output folder (default: data/synthetic)."),
    n_train: int = typer.Option(2800, help="Training images (balanced over the 7 classes)."),
    n_test: int = typer.Option(700, help="Test images."),
    seed: int = typer.Option(0, help="Generator seed."),
    size: int = typer.Option(100, help="Image side in pixels (100 like RAF-DB's aligned crops)."),
    workers: int = typer.Option(1, help="Processes; the images do not depend on it."),
    overwrite: bool = typer.Option(False, help="Replace a non-empty output folder."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Draw the built-in synthetic faces to disk and print their summary.

    Writes an image folder (split/class/*.png) with landmarks.npz and manifest.json. No download:
    the default dataset for demos, tests and pipeline checks (not a FER benchmark).

    Example: udcbench generate data/synthetic --n-train 2800 --n-test 700 --workers 2
    """
    from udcbench.datasets import create_dataset
    from udcbench.datasets.generate import generate_synthetic

    out = out if out is not None else load_workspace().dataset_dir("synthetic")
    stats = generate_synthetic(out, n_train, n_test, seed, size, workers, overwrite)
    if stats["skipped"]:
        stderr.print(f"{out} already holds these {stats['images']} faces (same seed, size and counts): nothing to do")
    else:
        stderr.print(f"wrote {stats['images']} images to {out} in {stats['seconds']:.1f} s "
                     f"({stats['images_per_second']:.0f} images/s)")
    summary = summarize(create_dataset("imagefolder", out))
    if as_json:
        print_json({**summary, "generation": stats})
    else:
        print_summary(summary)


def export_cmd(
    name: str = typer.Argument(..., help=f"Dataset adapter: {', '.join(dataset_names())}."),
    out: Path = typer.Option(..., "--out", help="Output folder for the DatasetDict."),
    src: Path | None = typer.Option(None, "--src", help="Source folder (default: data/NAME)."),
    option: list[str] | None = DATASET_OPTIONS,
    overwrite: bool = typer.Option(False, help="Replace a non-empty output folder."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Export a dataset as a HuggingFace DatasetDict (save_to_disk) with a dataset card.

    Example: udcbench export ferplus --src data/ferplus --out data/hf/ferplus
    Load it back with datasets.load_from_disk("data/hf/ferplus").
    """
    from udcbench.datasets.export import export_hf

    adapter = resolve_dataset(str(src) if src is not None else None, name, parse_options(option),
                              folder="pass --src FOLDER")
    dataset = export_hf(adapter, out, overwrite=overwrite)
    if as_json:
        print_json({"out": str(out), "source": adapter.describe(), "counts": {k: len(v) for k, v in dataset.items()}})
        return
    counts = ", ".join(f"{split} {len(ds)}" for split, ds in dataset.items())
    stdout.print(f"exported {adapter.describe()} to {out}: {counts}")


def landmarks_cmd(
    target: str = typer.Argument(..., help="Dataset folder or name."),
    split: str | None = typer.Option(None, help="Only this split (train, valid, test)."),
    source: str = typer.Option("auto", help="auto, ground_truth, dlib or mean_shape."),
    dataset: str | None = DatasetArg,
    option: list[str] | None = DATASET_OPTIONS,
    cache: bool = typer.Option(True, help="Read and write the landmark cache."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Compute and cache 68-point landmarks; report the method per image and the speed.

    Example: udcbench landmarks data/ferplus --split valid
    """
    from udcbench.landmarks import compute_landmarks

    adapter = resolve_dataset(target, dataset, parse_options(option), folder=FOLDER_ARG)
    cache_dir = load_workspace().cache if cache else None
    result = compute_landmarks(adapter, split, source, cache_dir)
    counts = result.counts()
    report = {
        "dataset": adapter.describe(),
        "split": split or "all",
        "images": len(result),
        "methods": counts,
        "detection_rate": counts.get("dlib", 0) / max(len(result), 1),
        "seconds": result.seconds,
        "images_per_second": len(result) / result.seconds if result.seconds else None,
        "cached": result.cached,
    }
    if as_json:
        print_json(report)
        return
    table = Table(title=f"Landmarks: {report['dataset']}, split {report['split']}")
    table.add_column("method")
    table.add_column("images", justify="right")
    table.add_column("share", justify="right")
    for method, n in counts.items():
        table.add_row(method, str(n), f"{n / len(result):.1%}")
    stdout.print(table)
    speed = "read from cache" if result.cached else f"{report['images_per_second']:.1f} images/s"
    stdout.print(f"face detection rate (dlib detector): {report['detection_rate']:.1%}; {speed}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    add_command(app, datasets_cmd, "datasets", panel=PANEL)
    add_command(app, info_cmd, "info", panel=PANEL)
    add_command(app, generate_cmd, "generate", panel=PANEL)
    add_command(app, export_cmd, "export", panel=PANEL)
    add_command(app, landmarks_cmd, "landmarks", panel=PANEL)
