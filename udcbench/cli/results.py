"""Results commands: table, leaderboard, figure, reproduce."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from udcbench.cli._common import (
    DATASET_OPTIONS,
    JSON_OPTION,
    OLD_PRESET,
    OUT_OPTION,
    RUNS_OPTION,
    Panel,
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
from udcbench.engine.runs import STORE
from udcbench.errors import UdcbenchError
from udcbench.progress import stderr
from udcbench.reproduce import STUDY_PRESETS
from udcbench.workspace import load_workspace

PANEL = "Results"
Study = choices("Study", STUDY_PRESETS)

def _figure_app() -> typer.Typer:
    return typer.Typer(help="Draw the paper's figures (PNG under results/figures/) from datasets and runs.\n\n"
                              "Example: udcbench figure 6 --data data/udc-ferplus --budget cpu",
                       no_args_is_help=True,
                       context_settings={"help_option_names": ["-h", "--help"]})


def _results(runs: Path | None) -> list[dict]:
    from udcbench.engine.store import load_results

    return load_results((runs or load_workspace().runs) / STORE)


def print_table(table) -> None:
    """A built paper table as a rich table on stdout, its fill commands and notes under it."""
    from udcbench.reports.tables import body, header

    shown = Table(title=table.title, caption=table.subtitle, show_lines=False)
    for i, column in enumerate(header(table)):
        shown.add_column(column, overflow="fold", justify="left" if i == 0 else "right")
    for line in body(table):
        shown.add_row(*line)
    # piped output (a log, a file) gets the table's natural width rather than 80 columns
    (stdout if stdout.is_terminal else Console(width=240, soft_wrap=True)).print(shown)
    if table.commands():
        stdout.print("missing cells are filled by:")
        for c in table.commands():
            stdout.print(f"  {c}", highlight=False, markup=False)
    for note in table.notes:
        stdout.print(f"note: {note}", highlight=False, markup=False)


def table_cmd(
    number: str = typer.Argument(..., help="Paper table: 1 (clean), 2-4 (UDC-RAF-DB, -FERPlus, -KDEF), 5 (LRDif "
                                           "ablation); ll, the low-light table (clean and LL-RAF-DB, "
                                           "-FERPlus, -KDEF, every method); or robustness (UDC-C: CE per panel, "
                                           "mCE, from `udcbench robustness` sweeps)."),
    old_preset: Preset | None = OLD_PRESET,
    preset: Preset | None = typer.Option(None, "--budget", help="Runs of this budget only (default: the most "
                                                                "common among the "
                                                    "table's runs)."),
    init: str | None = typer.Option(None, help="scratch, pretrained or a weights file name (default: the most "
                                               "common)."),
    dataset: list[str] | None = typer.Option(None, "--dataset", "-d", help="Dataset column(s) instead of the "
                                                                          "table's own (e.g. synthetic)."),
    condition: Panel = typer.Option(Panel.toled, help="UDC preset for Tables 2-5."),
    draw: str | None = typer.Option(None, help="Runs of this draw of the data only (a prefix of its manifest's "
                                               "sha256, as the table's note shows it)."),
    runs: Path | None = RUNS_OPTION,
    out: Path | None = OUT_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Rebuild a paper table: our mean +- std over seeds beside the paper's number and the difference.

    Writes results/tables/table{N}.csv and .md. Empty cells list the command that fills them.

    Examples: udcbench table 3 ; udcbench table 1 --budget cpu --init scratch ; udcbench table 5 -d ferplus ;
    udcbench table 2 --dataset synthetic --json ; udcbench table ll ; udcbench table robustness -d ferplus
    """
    preset = renamed(preset, old_preset, "--budget")
    from udcbench.reports import table_kind

    workspace = load_workspace()
    kind = table_kind(number)
    table = kind.build(_results(runs), number, {"datasets": dataset, "condition": condition.value,
                                                "preset": preset.value if preset else None, "init": init,
                                                "data_root": workspace.data, "draw": draw})
    paths = kind.write(table, out or workspace.results / "tables")
    if as_json:
        print_json({"title": table.title, "subtitle": table.subtitle, "rows": kind.records(table),
                    "notes": table.notes, "files": [str(p) for p in paths]})
        return
    if kind.paper_layout:  # a rich table with the fill commands and notes under it
        print_table(table)
    else:
        print(kind.markdown(table))
    stderr.print(f"wrote {paths[0]} and {paths[1]}")


def leaderboard_cmd(
    runs: Path | None = RUNS_OPTION,
    out: Path | None = typer.Option(None, "--out", help="Output folder (default: results/)."),
    publish: Path | None = typer.Option(None, help="Also write Hugging Face model cards here (one per method, "
                                                  "preset, init and draw; near-chance results left out)."),
    robustness: bool = typer.Option(False, "--robustness", help="The UDC-C leaderboard instead: models ranked by "
                                                               "mCE (udcbench robustness sweeps)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """One row per (method, init, preset, dataset, condition): mean, std, seeds, drop from clean, rank change.

    Writes results/leaderboard.csv and .md (columns: see docs/results.md); with --robustness,
    results/leaderboard-robustness.csv and .md ranked by mCE.

    Examples: udcbench leaderboard ; udcbench leaderboard --publish cards/ --json ; udcbench leaderboard --robustness
    """
    if robustness:
        _robustness_leaderboard(runs, out, as_json)
        return
    from udcbench.reports.leaderboard import (
        HEADERS,
        NEAR_CHANCE_POINTS,
        RANK_NOTE,
        TERMINAL_COLUMNS,
        build_leaderboard,
        cell,
        write_leaderboard,
    )
    from udcbench.reports.leaderboard import publish as publish_cards
    from udcbench.reports.robustness import mce_by_model

    results = _results(runs)
    rows = build_leaderboard(results)
    if not rows:
        raise UdcbenchError("the results store holds no finished training runs yet (udcbench train ...)")
    paths = list(write_leaderboard(rows, out or load_workspace().results))
    if publish is not None:
        paths += publish_cards(rows, publish, mce_by_model(results))
    if as_json:
        print_json({"rows": rows, "files": [str(p) for p in paths]})
        return
    shown = Table(title=f"Leaderboard ({len(rows)} rows; every column in the files)")
    for column in TERMINAL_COLUMNS:
        shown.add_column(HEADERS.get(column, column), overflow="fold")
    for row in rows:
        values = [cell(row[c]) for c in TERMINAL_COLUMNS]
        if row["near_chance"]:
            values[TERMINAL_COLUMNS.index("rank")] = "~chance"
        shown.add_row(*values)
    stdout.print(shown)
    stderr.print(RANK_NOTE)
    if any(row["near_chance"] for row in rows):
        stderr.print(f"~chance: within {NEAR_CHANCE_POINTS:.0f} points of chance (the better of a uniform guess and "
                     "the largest class), not ranked")
    stderr.print("wrote " + ", ".join(str(p) for p in paths))


def _robustness_leaderboard(runs: Path | None, out: Path | None, as_json: bool) -> None:
    """``udcbench leaderboard --robustness``: UDC-C sweeps ranked by mCE."""
    from udcbench.reports.leaderboard import cell, write_leaderboard
    from udcbench.reports.robustness import LEADERBOARD_COLUMNS, RANK_NOTE, robustness_leaderboard

    rows = robustness_leaderboard(_results(runs))
    if not rows:
        raise UdcbenchError("no scored robustness sweeps in the results store (udcbench robustness RUN --data ...)")
    csv_path, md_path = write_leaderboard(rows, out or load_workspace().results, "leaderboard-robustness",
                                          LEADERBOARD_COLUMNS, RANK_NOTE)
    if as_json:
        print_json({"rows": rows, "files": [str(csv_path), str(md_path)]})
        return
    shown = Table(title=f"UDC-C leaderboard ({len(rows)} rows): lower mCE is more robust")
    for column in LEADERBOARD_COLUMNS:
        shown.add_column(column, overflow="fold")
    for row in rows:
        shown.add_row(*(cell(row[c]) for c in LEADERBOARD_COLUMNS))
    stdout.print(shown)
    stderr.print(RANK_NOTE)
    stderr.print(f"wrote {csv_path}, {md_path}")


def _parse_steps(steps: str) -> list[int]:
    """``"1,2,4"`` -> [1, 2, 4] (sorted, unique), or a one-line error."""
    try:
        counts = sorted({int(t) for t in steps.split(",")})
    except ValueError:
        raise UdcbenchError(f"--steps takes comma-separated integers, not '{steps}'") from None
    if counts[0] < 1:
        raise UdcbenchError("--steps must be positive integers")
    return counts


def _figures_dir(out: Path | None) -> Path:
    return out or load_workspace().results / "figures"


def _wrote(path: Path, as_json: bool) -> None:
    """A figure command's result: its file, as a path or as JSON."""
    if as_json:
        print_json({"files": [str(path)]})
    else:
        stdout.print(str(path), highlight=False)


def figure_steps_cmd(
    data: str = typer.Option("data/udc-rafdb", "--data", help="UDC dataset folder or name."),
    steps: str = typer.Option("1,2,4,8", help="Diffusion step counts T, comma-separated."),
    preset: Preset | None = typer.Option(None, "--budget", help="Training budget (default: cpu)."),
    old_preset: Preset | None = OLD_PRESET,
    seed: int = typer.Option(0, help="Seed."),
    train: bool = typer.Option(True, help="Train stage 2 for each T that has no run yet (--no-train: plot only)."),
    device: str | None = typer.Option(None, help="cpu or cuda."),
    runs: Path | None = RUNS_OPTION,
    out: Path | None = OUT_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Figure 6: LRDif accuracy against the number of diffusion steps T (stage 2 retrained per T,
    the schedule re-derived for each T; stage 1 shared). Writes fig6-steps-DATA.csv and .png.

    Examples: udcbench figure 6 --data data/udc-ferplus --budget cpu ; udcbench figure 6 --steps 1,2,4 --no-train
    """
    preset = renamed(preset, old_preset, "--budget", Preset.cpu)
    from udcbench.engine.runs import train_method
    from udcbench.methods import swept_method
    from udcbench.reports import figures

    check_device(device)
    preset = preset.value
    spec = swept_method("6")
    counts = _parse_steps(steps)
    workspace = load_workspace()
    adapter = resolve_dataset(data)
    if train:
        for t in counts:
            overrides, tag = spec.sweep_run(t)
            train_method(spec.name, adapter, runs or workspace.runs, preset=preset, seed=seed, overrides=overrides,
                         tag=tag, skip_finished=True, device=device, cache_dir=workspace.cache, log=stderr.print)
    condition = adapter.manifest.get("recipe_name", "clean")
    points = [p for p in figures.steps_points(_results(runs), method=spec.name, dataset=adapter.origin,
                                              condition=condition, preset=preset) if p["steps"] in counts]
    paths = figures.steps_figure(points, _figures_dir(out) / f"fig6-steps-{adapter.origin}",
                                 f"{spec.title.split(' (')[0]} on {adapter.origin} ({condition}, {preset})")
    if as_json:
        print_json({"points": points, "files": [str(p) for p in paths]})
        return
    for p in points:
        stdout.print(f"T={p['steps']}: {p['accuracy']:.2f} % (n={p['n']})")
    stderr.print(f"wrote {paths[0]} and {paths[1]}")


def figure_samples_cmd(
    clean: str = typer.Option(..., "--clean", help="Clean dataset folder or name."),
    udc: str = typer.Option(..., "--udc", help="Its UDC copy (udcbench synth)."),
    per_class: int = typer.Option(3, help="Image pairs per class."),
    option: list[str] | None = DATASET_OPTIONS,
    out: Path | None = OUT_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Figure 3: test faces per class, clean beside UDC.

    Example: udcbench figure 3 --clean data/ferplus --udc data/udc-ferplus
    """
    from udcbench.reports.figures import sample_grid

    first = resolve_dataset(clean, options=parse_options(option))
    second = resolve_dataset(udc, options=parse_options(option))
    path = sample_grid(first, second, _figures_dir(out) / f"fig3-samples-{first.origin}.png", per_class)
    _wrote(path, as_json)


def figure_severities_cmd(
    data: str = typer.Option("synthetic", "--data", help="Dataset whose first test face is shown (its face scale "
                                                       "sets the panels' PSF size)."),
    panels: str = typer.Option("toled,poled,lowlight", help="Comma-separated presets or recipe files."),
    index: int = typer.Option(0, min=0, help="Which test face."),
    option: list[str] | None = DATASET_OPTIONS,
    out: Path | None = OUT_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """UDC-C's severities: one test face clean and at severities 1-5 of each panel (level 3 = the preset).

    Examples: udcbench figure severities ; udcbench figure severities --data ferplus --panels toled,my-panel.yaml
    """
    from udcbench.reports.robustness import severity_strip
    from udcbench.robustness import load_panels, test_records

    adapter = resolve_dataset(data, options=parse_options(option))
    records = test_records(adapter)[1]
    if index >= len(records):
        raise UdcbenchError(f"--index {index}: the test split has {len(records)} faces")
    recipes = load_panels([p for p in panels.split(",") if p.strip()])
    path = severity_strip(adapter.load_image(records[index]), recipes, adapter.origin,
                          _figures_dir(out) / f"severities-{adapter.origin}.png")
    _wrote(path, as_json)


def figure_tsne_cmd(
    run_dir: Path = typer.Argument(..., help="A run folder."),
    data: str = typer.Option(..., "--data", help="Dataset whose test split is embedded."),
    max_images: int = typer.Option(2000, help="Images at most (a random subset)."),
    device: str | None = typer.Option(None, help="cpu or cuda."),
    out: Path | None = OUT_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Figures 4/5: t-SNE (scikit-learn) of a run's penultimate features, coloured by class.

    Example: udcbench figure tsne runs/udc-ferplus/lrdif-cpu-s0 --data data/udc-ferplus
    """
    from udcbench.reports.figures import run_tsne

    check_device(device)
    adapter = resolve_dataset(data)
    path = run_tsne(run_dir, adapter, _figures_dir(out) / f"tsne-{Path(run_dir).parent.name}-"
                    f"{Path(run_dir).name}-on-{adapter.root.name if adapter.root else adapter.name}.png",
                    max_images, device)
    _wrote(path, as_json)


def figure_confusion_cmd(
    run_dir: Path = typer.Argument(..., help="A finished run folder (its results.json)."),
    out: Path | None = OUT_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """The confusion matrix of a run's test results at the epoch chosen on validation.

    Example: udcbench figure confusion runs/udc-ferplus/scn-cpu-s0
    """
    import json

    from udcbench.reports.figures import confusion_figure

    results = Path(run_dir) / "results.json"
    if not results.is_file():
        raise UdcbenchError(f"{run_dir} has no results.json (not a finished run)")
    path = confusion_figure(json.loads(results.read_text()),
                            _figures_dir(out) / "confusion" / f"{Path(run_dir).parent.name}-{Path(run_dir).name}.png")
    _wrote(path, as_json)


def _print_plan(plan) -> None:
    from rich.table import Table

    from udcbench.budget import QUICK_BUDGET_MINUTES, REFERENCE_SPEED, UNIT

    table = Table(title=f"reproduce --study {plan.preset}: the plan", title_justify="left")
    for column in ("step", "data", "what", "units", "min @ ref"):
        table.add_column(column, justify="right" if column in ("units", "min @ ref") else "left")
    for item in plan.items:
        table.add_row(item.what, f"{item.dataset} {item.condition}", item.detail, f"{item.units:,.0f}",
                      f"{item.units / REFERENCE_SPEED / 60:.2f}")
    stdout.print(table)
    budget = f" (budget {QUICK_BUDGET_MINUTES:.0f} min)" if plan.preset == "quick" else ""
    stdout.print(f"total {plan.units:,.0f} units = {plan.minutes():.1f} min on a machine that trains "
                 f"{REFERENCE_SPEED:.0f} images/s{budget}; units: {UNIT}. Time on this machine: units / its "
                 f"images/s (python benchmarks/reproduce_time.py measures both).")


def _gpu_count(gpus: str | None) -> int:
    """How many GPUs ``--gpus`` names (for a plan: ``all`` means those visible here)."""
    if not gpus:
        return 1
    if gpus.strip() == "all":
        import torch

        if not torch.cuda.device_count():
            raise UdcbenchError("--gpus all: no GPU is visible here; name the count, e.g. --gpus 0,1,2,3")
        return torch.cuda.device_count()
    return len([g for g in gpus.split(",") if g.strip()])


def _print_gpu_plan(on_gpu) -> None:
    from udcbench.budget import REFERENCE_SPEED, UNCOUNTED_SHARE
    from udcbench.gpu_cost import GPUS

    label = GPUS[on_gpu.gpu].label
    table = Table(title=f"the plan on one {label}", title_justify="left")
    for column in ("step", "data", "what", f"min @ {on_gpu.gpu}", "figure"):
        table.add_column(column, justify="right" if column.startswith("min") else "left")
    said = {"measured": "measured on the GPU", "estimated": "estimated (FLOPs, kernels)",
            "cpu": f"CPU work at {REFERENCE_SPEED:.0f} images/s"}
    for entry in on_gpu.items:
        item = entry.item
        table.add_row(item.what, f"{item.dataset} {item.condition}", item.work.detail if item.work else item.detail,
                      f"{entry.minutes:.1f}", said[entry.source])
    table.add_row("start-up, figures, tables", "-", f"{UNCOUNTED_SHARE:.0%} of the above",
                  f"{on_gpu.overhead_minutes:.1f}", said["cpu"])
    stdout.print(table)
    runs = on_gpu.count("measured") + on_gpu.count("estimated")
    stdout.print(f"one {label}: {_duration(on_gpu.minutes)}; training runs: {on_gpu.count('measured')} of {runs} "
                 f"priced from measurements, the others estimated (udcbench/gpu_cost.py says how)")
    if on_gpu.gpus > 1:
        stdout.print(f"{on_gpu.gpus} GPUs, one run per GPU (reproduce --gpus): "
                     f"{_duration(on_gpu.side_by_side_minutes)}")


def _duration(minutes: float) -> str:
    return f"{minutes / 60:.1f} h" if minutes >= 60 else f"{minutes:.1f} min"


def reproduce_cmd(
    old_preset: Study | None = OLD_PRESET,
    preset: Study | None = typer.Option(None, "--study", help="quick (default; built-in synthetic faces, 20 min on "
                                                              "a 2-core CPU), cpu "
                                                   "(real data, 2 CPU cores), paper (the papers' recipes, a GPU) or "
                                                   "smoke (a few steps: checks the pipeline)."),
    datasets: list[str] | None = typer.Option(None, "--datasets", help="Datasets (default: synthetic for quick; "
                                                                        "rafdb, ferplus, kdef where found)."),
    src_root: Path | None = typer.Option(None, help="Folder holding the clean datasets (default: data/)."),
    methods: list[str] | None = typer.Option(None, "--methods", help="Methods (default: the baselines and LRDif "
                                                                     "with its ablations)."),
    seeds: list[int] | None = typer.Option(None, "--seeds", help="Seeds (default: 0)."),
    condition: Panel | None = typer.Option(None, help="UDC panel (default: the study's, toled)."),
    steps: str | None = typer.Option(None, help="Figure 6's diffusion step counts, comma-separated."),
    device: str | None = typer.Option(None, help="cpu or cuda."),
    clip: Path | None = typer.Option(None, "--clip", help="A local open_clip checkpoint for the methods with CLIP "
                                     "encoders (the paper study's LRDif needs one)."),
    gpus: str | None = typer.Option(None, "--gpus", help="Train the study's runs side by side, one per GPU: "
                                                         "device numbers (0,1,3) or all."),
    slots: int | None = typer.Option(None, "--slots", min=1, help="The same on the CPU: N runs side by side, each "
                                                                  "with its share of the cores."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan and its cost; train nothing."),
    gpu: str | None = typer.Option(None, "--gpu", help="With --dry-run: the plan's time on this GPU (h100, h200, "
                                                       "a100), one GPU and, with --gpus, side by side."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Reproduce the study: synthesise, train every method clean and UDC, write Tables 1-5, figures, leaderboard.

    Skips finished runs and resumes unfinished ones, so it can be stopped and started again.

    --dry-run prints every step with its cost in ResNet-18 image-steps and minutes on the reference machine;
    with --gpu h100, its minutes on that GPU, each training run's from images/s measured on that GPU or estimated
    from its FLOPs and kernels (the plan says which), and with --gpus 0,1,2,3 the time with one run per GPU.

    --gpus 0,1,2,3 trains one run per GPU at a time (a study is many independent runs: about N times sooner than
    splitting each run's batch over N GPUs); each run's log is in runs/logs/.

    Examples: udcbench reproduce ; udcbench reproduce --study quick --dry-run ;
    udcbench reproduce --study paper --dry-run --gpu h100 --gpus 0,1,2,3,4,5,6,7 ;
    udcbench reproduce --study cpu --src-root /datasets --datasets ferplus ;
    udcbench reproduce --study paper --gpus all --clip open_clip_pytorch_model.bin ;
    torchrun --nproc-per-node 4 -m udcbench reproduce --study paper --clip open_clip_pytorch_model.bin
    """
    preset = renamed(preset, old_preset, "--study", Study.quick)
    from udcbench.reproduce import plan_study, reproduce

    check_device(device)
    preset, condition = preset.value, condition.value if condition else None
    if gpu and not dry_run:
        raise UdcbenchError("--gpu prices a plan: use it with --dry-run (to train on GPUs: --gpus)")
    if dry_run:
        plan = plan_study(preset, load_workspace(), datasets=datasets, src_root=src_root, methods=methods,
                          seeds=seeds, condition=condition, steps=_parse_steps(steps) if steps else None)
        if gpu:
            from udcbench.gpu_cost import plan_on_gpu

            on_gpu = plan_on_gpu(plan, gpu, _gpu_count(gpus))
            if as_json:
                print_json(on_gpu.to_json())
            else:
                _print_gpu_plan(on_gpu)
        elif as_json:
            print_json(plan.to_json())
        else:
            _print_plan(plan)
        return
    from udcbench.scheduler import parse_slots

    side_by_side = parse_slots(gpus, slots) if gpus or slots else None
    summary = reproduce(preset, load_workspace(), datasets=datasets, src_root=src_root, methods=methods,
                        seeds=seeds, condition=condition, steps=_parse_steps(steps) if steps else None,
                        device=device, clip=clip, log=stderr.print, slots=side_by_side)
    if as_json:
        from udcbench.reports.tables import table_records

        print_json({"seconds": summary.seconds, "runs": [r.record["run_dir"] for r in summary.runs],
                    "first_stages": [r.get("run_dir") for r in summary.first_stages],
                    "trained_now": summary.trained_now, "train_minutes": summary.train_minutes,
                    "files": [str(p) for p in summary.files],
                    "tables": [{"title": t.title, "rows": table_records(t)} for t in summary.tables]})
        return
    for table in summary.tables:
        print_table(table)
    stdout.print(f"{summary.describe(preset)}; {len(summary.files)} files written under {load_workspace().results}")
    stdout.print(f"report: {summary.files[-1]}" if summary.files else "no report (no runs)", highlight=False)


def report_cmd(
    condition: Panel | None = typer.Option(None, help="The UDC panel of the tables (default: the most common in "
                                                      "the store)."),
    preset: Preset | None = typer.Option(None, "--budget", help="Runs of this budget (default: each table's most "
                                                                "common)."),
    old_preset: Preset | None = OLD_PRESET,
    as_json: bool = JSON_OPTION,
) -> None:
    """Write the study's report: one self-contained HTML page (results/report/index.html) with every table
    beside the paper's numbers, the runs and provenance behind each cell, the leaderboard, training curves and
    the figures. It loads nothing from the network. reproduce writes it last.

    Examples: udcbench report ; udcbench report --condition poled --budget cpu
    """
    preset = renamed(preset, old_preset, "--budget")
    from udcbench.reproduce import write_report_page

    path = write_report_page(load_workspace(), condition=condition.value if condition else None,
                             preset=preset.value if preset else None)
    if as_json:
        print_json({"report": str(path)})
        return
    stdout.print(str(path), highlight=False)


def compare_cmd(
    a: str = typer.Argument(..., help="A run folder or a method (its latest run per seed in the store)."),
    b: str = typer.Argument(..., help="The other run folder or method."),
    data: str | None = typer.Option(None, "--data", help="Dataset folder or name the methods' runs trained on "
                                                         "(needed when a method has runs on several)."),
    preset: Preset | None = typer.Option(None, "--budget", help="The methods' runs of this budget (default: the most "
                                                                "common)."),
    old_preset: Preset | None = OLD_PRESET,
    runs: Path | None = RUNS_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Whether two results differ beyond noise: the difference, its 95 % interval, and what the interval covers.

    Two or more seeds a side: Welch's t interval over seeds (covers seed variance; it alone says "A is better
    than B"); runs of different data draws are refused. One run a side: a paired bootstrap over the test images,
    which covers test sampling only, so it says whether the two runs differ, never which method is better.

    Examples: udcbench compare lrdif resnet18 --data data/udc-ferplus ;
    udcbench compare runs/ferplus/scn-cpu-s0 runs/ferplus/resnet18-cpu-s0
    """
    preset = renamed(preset, old_preset, "--budget")
    from udcbench.compare import compare, resolve_side

    dataset = condition = None
    if data is not None:
        from udcbench.engine.records import dataset_condition

        adapter = resolve_dataset(data, None, {}, folder="pass --data FOLDER")
        dataset, condition = adapter.origin, dataset_condition(adapter)[0]
    results = _results(runs)
    chosen = preset.value if preset else None
    result = compare(resolve_side(a, results, dataset, condition, chosen),
                     resolve_side(b, results, dataset, condition, chosen))
    if as_json:
        print_json(result.to_json())
        return
    print(result.summary())


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    figure_app = _figure_app()
    add_command(app, table_cmd, "table", panel=PANEL)
    add_command(app, leaderboard_cmd, "leaderboard", panel=PANEL)
    add_command(app, compare_cmd, "compare", panel=PANEL)
    add_command(app, report_cmd, "report", panel=PANEL)
    add_command(figure_app, figure_steps_cmd, "6")
    add_command(figure_app, figure_samples_cmd, "3")
    add_command(figure_app, figure_tsne_cmd, "tsne")
    add_command(figure_app, figure_confusion_cmd, "confusion")
    add_command(figure_app, figure_severities_cmd, "severities")
    add_command(app, reproduce_cmd, "reproduce", panel=PANEL)
    app.add_typer(figure_app, name="figure", rich_help_panel=PANEL)
