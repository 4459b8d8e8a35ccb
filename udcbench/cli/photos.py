"""Your own photos and models elsewhere: degrade, predict, export-model."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from udcbench.cli._common import JSON_OPTION, add_command, check_device, choices, print_json, stdout
from udcbench.errors import UdcbenchError
from udcbench.progress import stderr
from udcbench.workspace import load_workspace

PANEL = "Your photos"
Detector = choices("Detector", ("haar", "dlib"))


def _recipe(panel: str):
    from degradations import RecipeError, load_recipe

    try:
        return load_recipe(panel)
    except RecipeError as exc:
        raise UdcbenchError(str(exc)) from None


def degrade_cmd(
    photos: list[Path] = typer.Argument(..., help="Image files, or folders of them (any size, no layout)."),
    panel: str = typer.Option("toled", "--panel", help="toled, poled, lowlight or a recipe file (.yaml)."),
    face_px: float | None = typer.Option(None, "--face-px", help="The face's width in the photo, in pixels "
                                         "(default: detected; none found: the photo is taken as a capture frame)."),
    seed: int = typer.Option(0, help="Seed of the noise and the per-image parameters (the same seed, the same "
                                     "pixels)."),
    out: Path | None = typer.Option(None, "--out", help="Output folder (default: results/degraded/)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace files in --out that udcbench did not write."),
    as_json: bool = JSON_OPTION,
) -> None:
    """See what a panel does to your own photo: a degraded copy at the photo's size, at the face scale the panel
    is calibrated for, and a side-by-side figure large enough to judge the blur.

    Examples: udcbench degrade me.jpg ; udcbench degrade photos/ --panel poled --out degraded/ ;
    udcbench degrade me.jpg --panel my_panel.yaml --face-px 300
    """
    from udcbench.photos import degrade_files, photo_files

    recipe = _recipe(panel)
    files = photo_files(photos)
    out = out or load_workspace().results / "degraded"
    rows = degrade_files(files, recipe, out, seed=seed, face_px=face_px, overwrite=overwrite)
    if as_json:
        print_json(rows)
        return
    for row in rows:
        stdout.print(f"{row['photo']}: {recipe.name} at psf_scale {row['psf_scale']:.3f} ({row['scale_from']}) -> "
                     f"{row['degraded']}; side by side: {row['figure']}", highlight=False)


def predict_cmd(
    model: Path = typer.Argument(..., help="A run folder (its best.pt) or a checkpoint file of one."),
    photos: list[Path] = typer.Argument(..., help="Image files, or folders of them."),
    panel: str | None = typer.Option(None, "--panel", help="Also predict the photo degraded by this panel (toled, "
                                                            "poled, lowlight or a recipe file), side by side."),
    crop: str = typer.Option("detect", help="detect: find the face and crop it as the training data was; none: "
                                            "each image is a face crop already (a dataset's own images)."),
    detector: Detector = typer.Option(Detector.haar, help="haar (OpenCV's, always there) or dlib (the landmarks "
                                                          "extra)."),
    seed: int = typer.Option(0, help="Seed of --panel's degradation."),
    batch: int = typer.Option(64, min=1, max=4096, help="Images per forward pass."),
    device: str | None = typer.Option(None, help="cpu or cuda (default: cuda when present)."),
    csv_out: Path | None = typer.Option(None, "--csv", help="Also write the rows as CSV here."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Run a trained model on your photos: per photo the face found (box), the class probabilities and the
    predicted class, with the run's own preprocessing. Nothing enters the results store.

    Examples: udcbench predict runs/udc-ferplus/resnet18-cpu-s0 me.jpg ;
    udcbench predict runs/synthetic/lrdif-quick-s0 photos/ --panel toled --csv predictions.csv
    """
    from udcbench.photos import photo_files
    from udcbench.predict import Predictor, predict_files

    check_device(device)
    recipe = _recipe(panel) if panel else None
    files = photo_files(photos)
    predictor = Predictor.load(model, device)
    if predictor.drawn:
        stderr.print("[yellow]note:[/] this run learnt udcbench's drawn faces, not real ones: on a photo its answers "
                     "say little", highlight=False)
    predictor.detector = detector.value
    rows = predict_files(predictor, files, crop=crop, recipe=recipe, seed=seed, batch=batch)
    if csv_out is not None:
        _write_csv(rows, predictor.classes, csv_out)
    if as_json:
        print_json(rows)
    else:
        table = Table(title=f"{predictor.config.method} ({predictor.source})", title_justify="left")
        for column in ("photo", "face", "predicted", "p") + (("with " + recipe.name, "p") if recipe else ()):
            table.add_column(column)
        for row in rows:
            cells = [Path(row["file"]).name, "-" if row["box"] is None and row["face"] != "whole image" else
                     row["face"] if row["box"] is None else "x{} y{} {}x{}".format(*row["box"])]
            for key in ("", "panel_") if recipe else ("",):
                predicted = row.get(f"{key}predicted")
                missing = "unreadable" if row["face"] == "unreadable" else "no face"
                cells += [predicted or missing, f"{row[f'{key}probabilities'][predicted]:.3f}" if predicted else ""]
            table.add_row(*cells)
        stdout.print(table)
    for row in rows:
        if row["face"] == "unreadable":
            stderr.print(f"[yellow]unreadable: {escape(row['file'])}[/] ({escape(row['error'])})", highlight=False)
    missing = [row["file"] for row in rows if row["face"] == "none found"]
    for name in missing:
        stderr.print(f"[yellow]no face found in {name}[/] (--crop none takes the whole image as the face)",
                     highlight=False, soft_wrap=True)


def _write_csv(rows: list[dict], classes: tuple[str, ...], path: Path) -> None:
    from udcbench.files import write_atomic

    panel = any("panel_predicted" in row for row in rows)
    fields = ["file", "face", "box", "predicted", *(f"p_{c}" for c in classes)]
    if panel:
        fields += ["panel_predicted", *(f"panel_p_{c}" for c in classes)]
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=fields, restval="")
    writer.writeheader()
    for row in rows:
        flat = {"file": row["file"], "face": row["face"], "box": " ".join(map(str, row["box"] or [])),
                "predicted": row.get("predicted", "")}
        for key in ("", "panel_"):
            flat.update({f"{key}p_{c}": v for c, v in (row.get(f"{key}probabilities") or {}).items()})
        flat["panel_predicted"] = row.get("panel_predicted", "")
        writer.writerow({k: v for k, v in flat.items() if k in fields})
    write_atomic(path, buffer.getvalue())


def export_model_cmd(
    model: Path = typer.Argument(..., help="A run folder (its best.pt) or a checkpoint file of one."),
    fmt: str = typer.Option("torchscript", "--format", help="torchscript, torch.export (a .pt2 ExportedProgram) or "
                                                             "onnx (pip install 'udcbench[onnx]')."),
    out: Path = typer.Option(..., "--out", help="The file to write; FILE.json beside it holds the labels, input "
                                               "size and preprocessing."),
    overwrite: bool = typer.Option(False, help="Replace an existing --out."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Take a trained model elsewhere: a TorchScript or ONNX file that runs without udcbench (input: N x 3 x S x S
    RGB in [0, 1], the normalisation inside; output: logits), checked against the PyTorch model after writing.

    Examples: udcbench export-model runs/udc-ferplus/resnet18-cpu-s0 --out resnet18.pt ;
    udcbench export-model runs/udc-ferplus/resnet18-cpu-s0 --format onnx --out resnet18.onnx
    """
    from udcbench.export_model import export_model

    for written in (out, out.with_name(out.name + ".json")):  # the model and its sidecar
        if written.exists() and not overwrite:
            raise UdcbenchError(f"{written} exists (pass --overwrite to replace it)")
    record = export_model(model, fmt, out)
    if as_json:
        print_json(record)
        return
    check = record["check"]
    said = (f"max logit difference {check['max_abs_difference']:.1e} on {check['images']} images"
            if check.get("compared") else f"not compared ({check['why']})")
    stdout.print(f"wrote {out} ({record['format']}, {record['method']}, {record['input_size']} px, labels "
                 f"{', '.join(record['labels'])}) and {out}.json; check: {said}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    add_command(app, degrade_cmd, "degrade", panel=PANEL)
    add_command(app, predict_cmd, "predict", panel=PANEL)
    add_command(app, export_model_cmd, "export-model", panel=PANEL)
