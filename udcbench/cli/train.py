"""Training commands: train, eval, methods, runs."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from udcbench.cli._common import (
    DATASET_OPTIONS,
    JSON_OPTION,
    OLD_PRESET,
    Preset,
    add_command,
    check_device,
    choices,
    parse_options,
    print_json,
    renamed,
    resolve_dataset,
    stdout,
)
from udcbench.config import PRESETS
from udcbench.engine.runs import STORE, execute, resolve_run
from udcbench.errors import UdcbenchError
from udcbench.files import read_json
from udcbench.methods import get_method, is_first_stage, method_names
from udcbench.methods.base import clip_override
from udcbench.pretrain import PRETRAINED, FacePretraining
from udcbench.progress import stderr
from udcbench.workspace import load_workspace

PANEL = "Training"
Checkpoint = choices("Checkpoint", ("best", "last"))


def default_training_data() -> str:
    """data/udc-rafdb when present, else the built-in synthetic faces (said on stderr)."""
    candidate = load_workspace().dataset_dir("udc-rafdb")
    if candidate.is_dir():
        return str(candidate)
    stderr.print("no --data given and data/udc-rafdb not found: training on the built-in synthetic faces")
    return "synthetic"


def _percent(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def train_cmd(
    method: str = typer.Argument(..., help=f"Method: {', '.join(method_names())}."),
    data: str | None = typer.Option(None, "--data", help="Dataset folder or name (default: data/udc-rafdb, "
                                       "else the built-in synthetic faces)."),
    dataset: str | None = typer.Option(None, "--dataset", "-d", help="Dataset adapter if not detected."),
    preset: Preset | None = typer.Option(None, "--budget", help="Training budget: smoke, quick, cpu (default) or "
                                                                "paper (the official recipes)."),
    old_preset: Preset | None = OLD_PRESET,
    seed: int = typer.Option(0, help="Seed (split, initialisation, order, augmentation)."),
    out: Path | None = typer.Option(None, "--out", help="Runs folder (default: runs/)."),
    weights: Path | None = typer.Option(None, help="MS-Celeb-1M ResNet-18 checkpoint (local file)."),
    clip: Path | None = typer.Option(None, "--clip", help="LRDif / LLDif: a local open_clip checkpoint for the CLIP "
                                     "encoders (the paper preset's model needs one; nothing is downloaded)."),
    set_: list[str] | None = typer.Option(None, "--set", help="Override a config field: KEY=VALUE."),
    resume: bool = typer.Option(False, help="Continue the run from its last checkpoint."),
    overwrite: bool = typer.Option(False, help="Replace an existing run folder."),
    device: str | None = typer.Option(None, help="cpu or cuda (default: cuda when present)."),
    option: list[str] | None = DATASET_OPTIONS,
    stage: int | None = typer.Option(None, help="Two-stage methods (LRDif): run only stage 1 or 2."),
    from_run: Path | None = typer.Option(None, "--from", help="Stage 2: the stage-1 run folder to start from."),
    tag: str = typer.Option("", help="Suffix of the run folder, for runs that differ only by --set "
                                     "(e.g. --set method_args.steps=8 --tag T8)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Train and evaluate a method; records land in runs/<data>/<method>-<preset>-s<seed>/.

    Two-stage methods (lrdif and its Table 5 variants lrdif-s2-v1, -v2, -v4) train their stage 1
    (lrdif-s1, shared by all variants) first unless --from names one.

    The paper preset of lrdif is the paper's model (CLIP encoders, --clip FILE); the other presets train the fair
    model on the baselines' trunk.

    Examples: udcbench train resnet18 --data data/ferplus ; udcbench train scn --data data/udc-ferplus --budget cpu ;
    udcbench train dan --budget paper --weights msceleb_resnet18.pth ; udcbench train eac --data data/ferplus --resume ;
    udcbench train lrdif --data data/udc-ferplus --budget paper --clip open_clip_pytorch_model.bin
    """
    preset = renamed(preset, old_preset, "--budget", Preset.cpu)
    spec = get_method(method)
    check_device(device)
    set_ = [*(set_ or []), *clip_override(spec, clip)]
    if stage not in (None, 1, 2) or (stage is not None and spec.stage1 is None and not is_first_stage(spec.name)):
        raise UdcbenchError("--stage is 1 or 2, for two-stage methods (lrdif) only")
    if stage == 1 and spec.stage1:
        method, spec = spec.stage1, get_method(spec.stage1)
    if stage == 2 and from_run is None:
        raise UdcbenchError("--stage 2 needs --from RUN (the stage-1 run folder)")
    adapter = resolve_dataset(data or default_training_data(), dataset, parse_options(option),
                              folder="pass --data FOLDER")
    workspace = load_workspace()
    run = resolve_run(method, adapter, out or workspace.runs, preset=preset.value, seed=seed, overrides=set_,
                      weights=weights, tag=tag, resume=resume, overwrite=overwrite, from_run=from_run)
    record = execute(run, device=device, cache_dir=workspace.cache, log=stderr.print)
    if as_json:
        print_json(record)
        return
    best, last = record["test_at_best"], record["test_at_last"]
    stdout.print(
        f"{method} on {record['dataset']} ({record['condition']}), {record['test_split']} split: accuracy "
        f"{_percent(best['accuracy'])} % at epoch {record['best_epoch']} (chosen on validation), "
        f"{_percent(last['accuracy'])} % at the last epoch; "
        f"mean class accuracy {_percent(best['mean_class_accuracy'])} %; "
        f"{record['minutes']:.1f} min; init {record['init']}"
    )


def pretrain_cmd(
    out: Path | None = typer.Option(None, "--out", help="Folder for trunk.pt and record.json (default: "
                                    "runs/pretrained/faces-identity-8v-<size>px-s<seed>)."),
    images: int = typer.Option(FacePretraining.images, help="Built-in faces to draw (apart from the study's)."),
    views: int = typer.Option(FacePretraining.views, help="Images of each identity (pose, light and expression "
                              "drawn per image)."),
    task: str = typer.Option(FacePretraining.task, help="identity (the MS-Celeb stand-in) or landmarks (a "
                             "comparison only: on drawn faces the landmarks encode the expression)."),
    epochs: int = typer.Option(FacePretraining.epochs, help="Epochs of training."),
    input_size: int = typer.Option(FacePretraining.input_size, help="Image side in pixels (the runs' input size)."),
    seed: int = typer.Option(FacePretraining.seed, help="Seed of the faces and the training."),
    device: str | None = typer.Option(None, help="cpu or cuda (default: cuda when present)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Pre-train a ResNet-18 trunk to tell built-in people apart, for --weights (no expression seen in the target).

    The quick study's stand-in for an MS-Celeb-1M checkpoint (face identities, independent of expression);
    reproduce --study quick makes its own.

    Example: udcbench pretrain && udcbench train dan --budget quick --weights
    runs/pretrained/faces-identity-8v-48px-s0/trunk.pt
    """
    from udcbench.pretrain import pretrained_trunk

    check_device(device)
    recipe = FacePretraining(images=images, epochs=epochs, input_size=input_size, seed=seed, task=task, views=views)
    recipe.validate()
    folder = out or load_workspace().runs / PRETRAINED / recipe.folder_name()
    trunk = pretrained_trunk(folder, recipe, device, log=stderr.print)
    if as_json:
        print_json({"weights": str(trunk), **read_json(folder / "record.json")})
        return
    stdout.print(f"face pre-training: {trunk} (pass it as --weights)")


def eval_cmd(
    run_dir: Path = typer.Argument(..., help="A run folder made by udcbench train."),
    data: str = typer.Option(..., "--data", help="Dataset folder or name to evaluate on."),
    dataset: str | None = typer.Option(None, "--dataset", "-d", help="Dataset adapter if not detected."),
    checkpoint: Checkpoint = typer.Option(Checkpoint.best, help="best (chosen on validation) or last."),
    device: str | None = typer.Option(None, help="cpu or cuda."),
    option: list[str] | None = DATASET_OPTIONS,
    as_json: bool = JSON_OPTION,
) -> None:
    """Evaluate a trained run on any dataset or condition (e.g. trained clean, tested on UDC).

    Example: udcbench eval runs/ferplus/resnet18-cpu-s0 --data data/udc-ferplus
    """
    from udcbench.engine.evaluation import evaluate_run

    check_device(device)
    adapter = resolve_dataset(data, dataset, parse_options(option), folder="pass --data FOLDER")
    runs = Path(run_dir).resolve().parent.parent  # runs/<data>/<run>: a runs folder is the one with a store
    store = runs / STORE if runs == load_workspace().runs.resolve() or (runs / STORE).is_file() else None
    if store is None:
        stderr.print(f"{run_dir} lies outside a runs folder: its evaluation goes into the run folder only "
                     "(eval-*.json), not into a results store")
    record = evaluate_run(run_dir, adapter, store=store, checkpoint=checkpoint.value, device=device)
    if as_json:
        print_json(record)
        return
    m = record["test_at_best"]
    stdout.print(f"{record['method']} ({record['checkpoint']}) on {record['dataset']} ({record['condition']}), "
                 f"{record['test_split']} split: accuracy {_percent(m['accuracy'])} %, mean class accuracy "
                 f"{_percent(m['mean_class_accuracy'])} %, macro-F1 {_percent(m['macro_f1'])} %")


def _constants(paper: dict, cpu: dict) -> str:
    """``beta=0.7, relabel_start=0.1429 (cpu 0.8)``: a method's constants, with what the cpu budget changes."""
    value = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    return ", ".join(f"{k}={value(v)}" + (f" (cpu {value(cpu[k])})" if k in cpu and cpu[k] != v else "")
                     for k, v in paper.items()) or "-"


def methods_cmd(
    details: bool = typer.Option(False, "--details", help="Every setting of each method's paper preset and where "
                                                         "it is known to differ from the authors' code."),
    as_json: bool = JSON_OPTION,
) -> None:
    """List the registered methods with their paper and their presets' main settings.

    Examples: udcbench methods ; udcbench methods --details ; udcbench methods --json
    """
    rows = []
    for name in method_names():
        spec = get_method(name)
        presets = {p: {k: getattr(spec.config(p), k) for k in ("input_size", "optimizer", "lr", "schedule", "epochs",
                                                              "batch_size")} for p in PRESETS}
        rows.append({"name": name, "title": spec.title, "paper": spec.paper, "backbone": spec.backbone,
                     "description": spec.description, "method_args": spec.method_args,
                     "cpu_method_args": spec.cpu_method_args, "presets": presets,
                     "departures": None if spec.departures is None else list(spec.departures)})
    if as_json:
        print_json(rows)
        return
    if details:
        for name in method_names():
            spec, paper = get_method(name), get_method(name).config("paper").to_json()
            settings = ", ".join(f"{k}={v}" for k, v in paper.items() if k not in ("method", "preset", "weights"))
            known = ("\n".join(f"  - {d}" for d in spec.departures) if spec.departures
                     else "  none found (checked against the authors' code)" if spec.departures is not None
                     else "  none recorded (not a check that there is none)")
            stdout.print(f"[bold]{name}[/] ({spec.paper})\n  paper preset: {settings}\n  departures from the "
                         f"authors' code:\n{known}\n", highlight=False)
        return
    table = Table(title="Registered methods", show_lines=True)
    for column in ("name", "paper", "paper preset", "cpu preset", "constants"):
        table.add_column(column, overflow="fold")
    for row in rows:
        fmt = lambda p: "{input_size}px {optimizer} lr {lr} {schedule}, {epochs} ep, batch {batch_size}".format(**p)  # noqa: E731
        table.add_row(f"[bold]{row['name']}[/]\n{row['description']}", row["paper"], fmt(row["presets"]["paper"]),
                      fmt(row["presets"]["cpu"]), _constants(row["method_args"], row["cpu_method_args"]))
    stdout.print(table)


def runs_cmd(
    out: Path | None = typer.Option(None, "--out", help="Runs folder (default: runs/)."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Set the store aside and rebuild it from the run folders."),
    wide: bool = typer.Option(False, "--wide", help="Every column (init, kind, last-epoch and mean class "
                                                    "accuracy, minutes), for a wide terminal."),
    as_json: bool = JSON_OPTION,
) -> None:
    """List the results store: every training and evaluation record (the columns that fit 80 characters;
    --wide or --json for all).

    The run folders are the source of truth: --rebuild sets results.sqlite aside and rebuilds it from them
    (a damaged store is rebuilt so on its own). Accuracies are in percent, --json included.

    Examples: udcbench runs ; udcbench runs --wide ; udcbench runs --json ; udcbench runs --rebuild
    """
    from udcbench.engine.store import load_results
    from udcbench.engine.store import rebuild as rebuild_store

    store = (out or load_workspace().runs) / STORE
    if rebuild:
        stderr.print(f"rebuilt {store} from {rebuild_store(store)} run records")
    rows = load_results(store)
    if as_json:  # accuracies in percent, as every table and line shows them
        scores = ("accuracy", "accuracy_last", "mean_class_accuracy", "macro_f1")
        print_json([{k: (None if v is None else round(100 * v, 4)) if k in scores else v
                     for k, v in r.items() if k != "record"} for r in rows])
        return
    table = Table(title=f"Runs ({len(rows)})")
    if wide:
        columns = ("method", "dataset", "condition", "preset", "init", "seed", "kind", "accuracy %", "last %",
                   "MCA %", "min", "run")
    else:  # what fits 80 columns: the run folder says the rest (and --wide or --json all of it)
        columns = ("method", "data", "preset", "seed", "acc %", "run")
    for column in columns:
        table.add_column(column, overflow="fold" if wide else "ellipsis", no_wrap=not wide)
    for r in rows:
        if wide:
            table.add_row(r["method"], r["dataset"], r["condition"], r["preset"], str(r["init"]), str(r["seed"]),
                          r["kind"], _percent(r["accuracy"]), _percent(r["accuracy_last"]),
                          _percent(r["mean_class_accuracy"]), f"{r['minutes']:.1f}" if r["minutes"] else "-",
                          "/".join(Path(r["run_dir"]).parts[-2:]))
        else:
            data = r["dataset"] if r["condition"] == "clean" else f"{r['dataset']}/{r['condition']}"
            table.add_row(r["method"], data + (" (eval)" if r["kind"] != "train" else ""), r["preset"],
                          str(r["seed"]), _percent(r["accuracy"]), Path(r["run_dir"]).name)
    stdout.print(table)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    add_command(app, train_cmd, "train", panel=PANEL)
    add_command(app, eval_cmd, "eval", panel=PANEL)
    add_command(app, pretrain_cmd, "pretrain", panel=PANEL)
    add_command(app, methods_cmd, "methods", panel=PANEL)
    add_command(app, runs_cmd, "runs", panel=PANEL)
