"""The paper's Tables 1-5 rebuilt from run records: our value beside the paper's, and the gap.

A table is built from the results store's training records (``runs/results.sqlite``). A cell is the
mean (and sample std, n) over seeds of the test accuracy at the epoch chosen on validation, for one
method, dataset and condition, from runs of one preset and one initialisation only: the table says
which, and ``preset`` / ``init`` choose. Runs trained with config overrides (``--set``, e.g. the
diffusion-steps sweep) never enter a table. Missing cells come with the command that fills them.
"""

from __future__ import annotations

import os
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pandas loads on first use: `udcbench --help` stays fast
    import pandas as pd

from udcbench.config import PRESETS
from udcbench.datasets import dataset_names, get_adapter_class
from udcbench.errors import UdcbenchError, unknown_name
from udcbench.files import write_atomic, write_csv
from udcbench.methods import get_method, method_names
from udcbench.reports.paper import SOURCE, paper_table
from udcbench.workspace import condition_folder


@dataclass(frozen=True)
class TableSpec:
    number: int
    title: str
    udc: bool
    datasets: tuple[str, ...]
    #: Our methods the paper does not list, appended after the paper's rows.
    extra_methods: tuple[str, ...] = ("resnet18",)


TABLES = {
    1: TableSpec(1, "accuracy (%) on clean {data}", False, ("rafdb", "ferplus", "kdef")),
    2: TableSpec(2, "accuracy (%) on {data}", True, ("rafdb",)),
    3: TableSpec(3, "accuracy (%) on {data}", True, ("ferplus",)),
    4: TableSpec(4, "accuracy (%) on {data}", True, ("kdef",)),
    5: TableSpec(5, "LRDif ablation, accuracy (%) on {data}", True, ("rafdb",), extra_methods=()),
}
#: The condition of the paper's UDC tables (2-5): its data were synthesised as MPGNet's T-OLED captures.
PAPER_UDC_CONDITION = "toled"
#: Which paper table holds each dataset's UDC results.
UDC_TABLE = {"rafdb": 2, "ferplus": 3, "kdef": 4}


def dataset_title(name: str, condition: str = "clean") -> str:
    title = get_adapter_class(name).spec.title if name in dataset_names() else name
    return title if condition == "clean" else f"UDC-{title}" if condition == "toled" else f"{title} ({condition})"


@dataclass
class Cell:
    """Our runs for one (method, dataset) of a table, and the paper's number."""

    accuracy: list[float] = field(default_factory=list)  # percent, one per seed
    mean_class_accuracy: list[float] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    input_sizes: set[int] = field(default_factory=set)
    inits: set[str] = field(default_factory=set)
    paper: float | None = None
    command: str | None = None  # what fills an empty cell

    @property
    def n(self) -> int:
        return len(self.accuracy)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.accuracy) if self.accuracy else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.accuracy) if self.n > 1 else None

    @property
    def diff(self) -> float | None:
        return None if self.mean is None or self.paper is None else self.mean - self.paper

    def ours(self) -> str:
        if self.mean is None:
            return ""
        return f"{self.mean:.2f}" if self.std is None else f"{self.mean:.2f} ± {self.std:.2f} (n={self.n})"


@dataclass
class Row:
    label: str  # as the paper names the method
    method: str | None  # ours, None where udcbench does not implement it
    note: str
    cells: dict[str, Cell]

    def input_size(self) -> str:
        return "/".join(str(s) for s in sorted(set().union(*(c.input_sizes for c in self.cells.values())))) or ""

    def init(self) -> str:
        """The runs' initialisations, a weights file as its folder and name (the CSV and records hold the path)."""
        return "/".join(sorted(_short_init(i) for i in set().union(*(c.inits for c in self.cells.values())))) or ""


@dataclass
class BuiltTable:
    spec: TableSpec
    datasets: tuple[str, ...]
    condition: str
    preset: str | None
    init: str | None
    rows: list[Row]
    notes: list[str]

    @property
    def title(self) -> str:
        names = ", ".join(dataset_title(d, self.condition) for d in self.datasets)
        return f"Table {self.spec.number}: {self.spec.title.format(data=names)}"

    def has_paper(self, dataset: str) -> bool:
        """Whether the paper reports this table on ``dataset`` (else its columns are left out)."""
        return any(row.cells[dataset].paper is not None for row in self.rows)

    @property
    def subtitle(self) -> str:
        return (f"ours: preset {self.preset or '-'}, init {self.init or '-'}, condition {self.condition}, "
                f"test accuracy at the epoch chosen on validation; paper: {SOURCE}")

    def commands(self) -> list[str]:
        """The commands that fill the empty cells, each once (data preparation first)."""
        return fill_commands(cell for row in self.rows for cell in row.cells.values())

    def stem(self) -> str:
        parts = [f"table{self.spec.number}"]
        if self.datasets != self.spec.datasets:
            parts += list(self.datasets)
        if self.spec.udc and self.condition != "toled":
            parts.append(self.condition)
        return "-".join(parts)


def _short_init(init: str) -> str:
    parts = Path(init).parts
    return str(Path(*parts[-2:])) if len(parts) > 2 else init


def _matches_init(value: str | None, wanted: str) -> bool:
    if wanted == "pretrained":
        return value not in (None, "scratch")
    return value == wanted


def most_common(values: list[str], order: tuple[str, ...] = ()) -> str | None:
    if not values:
        return None
    counts = Counter(values)
    rank = {v: i for i, v in enumerate(order)}
    return max(counts, key=lambda v: (counts[v], rank.get(v, -1)))


def usable(result: dict[str, Any]) -> bool:
    """A training record that may enter a table: finished, with no config overrides."""
    return result.get("kind") == "train" and result.get("accuracy") is not None and not (
        result.get("record", {}).get("config_changes"))


def _shown(path: Path) -> str:
    """A folder as the user types it here: relative to the current folder when inside it (a link in the
    workspace to data elsewhere, e.g. ``data/ferplus``, is shown as the link, not where it points)."""
    here = Path.cwd().resolve()
    for candidate in (Path(os.path.abspath(path)), path.resolve()):
        if candidate.is_relative_to(here):
            return str(candidate.relative_to(here))
    return str(path)


def fill_command(method: str, dataset: str, condition: str, preset: str, init: str, data_root: Path | None,
                 source: Path | None = None) -> str:
    """The udcbench command(s) that would produce a missing cell. Data is named by its folder under
    ``data_root`` (the workspace's, ``data/`` by default); ``source`` is the clean dataset's folder when
    it lies outside the workspace (``reproduce --src-root``)."""
    folder = (data_root or Path("data")) / condition_folder(dataset, condition)
    steps = []
    if data_root is not None and not folder.exists():
        if condition != "clean":
            src = f" --src {_shown(source)}" if source else ""
            steps.append(f"udcbench synth {dataset} --panel {condition}{src}")
        elif dataset == "synthetic":
            steps.append("udcbench generate")
    # the table's weights file itself where it names one ("pretrained" stands for any: FILE)
    weights = "" if init in ("scratch", None) else " --weights FILE" if init == "pretrained" else f" --weights {init}"
    data = source if condition == "clean" and source is not None else folder
    steps.append(f"udcbench train {method} --data {_shown(data)} --budget {preset}{weights}")
    return " && ".join(steps)


#: The store columns a table reads of each run.
RUN_COLUMNS = ["method", "dataset", "condition", "preset", "init", "seed", "created", "accuracy",
               "mean_class_accuracy", "input_size", "run_dir"]


def _missing(value: Any) -> bool:
    """None, or NaN (how a frame holds a missing number)."""
    return value is None or value != value


def runs_frame(results: list[dict[str, Any]]) -> pd.DataFrame:
    """Store rows as the frame :func:`fill_cell` reads (:data:`RUN_COLUMNS`)."""
    import pandas as pd

    return pd.DataFrame(results, columns=RUN_COLUMNS).assign(created=lambda f: f["created"].fillna(""))


def fill_cell(cell: Cell, candidates: pd.DataFrame, method: str, dataset: str, condition: str, preset: str,
              init: str, notes: list[str], data_root: Path | None = None, source: Path | None = None) -> Cell:
    """``cell`` with ``method``'s runs on (``dataset``, ``condition``) of ``preset`` and ``init`` among
    ``candidates`` (a frame of :data:`RUN_COLUMNS`; the latest run per seed), a note per other preset / init it has
    runs of, and the command that fills it when it has none."""
    mine = candidates[(candidates["method"] == method) & (candidates["dataset"] == dataset)
                      & (candidates["condition"] == condition)]
    wanted = (mine["preset"] == preset) & mine["init"].map(lambda value: _matches_init(value, init)).astype(bool)
    chosen = mine[wanted].sort_values("created", kind="stable").drop_duplicates("seed", keep="last")
    for r in chosen.to_dict("records"):
        cell.accuracy.append(100 * r["accuracy"])
        if not _missing(r["mean_class_accuracy"]):
            cell.mean_class_accuracy.append(100 * r["mean_class_accuracy"])
        cell.runs.append(r["run_dir"])
        cell.input_sizes.add(int(r["input_size"]))
        cell.inits.add(str(r["init"]))
    others = mine[~mine["run_dir"].isin(cell.runs)].groupby(["preset", "init"]).size()
    for (p, i), n in others.items():
        notes.append(f"{method} on {dataset_title(dataset, condition)}: {n} run(s) with preset {p}, init {i} "
                     f"not shown (--budget {p} --init {i})")
    if not cell.accuracy:
        cell.command = fill_command(method, dataset, condition, preset, init, data_root, source)
    return cell


def build_table(number: int, results: list[dict[str, Any]], datasets: list[str] | None = None,
                condition: str = "toled", preset: str | None = None, init: str | None = None,
                data_root: Path | None = None, sources: dict[str, Path] | None = None,
                draw: str | None = None) -> BuiltTable:
    """Table ``number`` from store rows (``udcbench.engine.store.load_results``).

    ``datasets`` replaces the table's own (e.g. ``synthetic``; the paper's column then stays empty);
    ``condition`` is the UDC preset shown for Tables 2-5; ``preset`` and ``init`` (``scratch``,
    ``pretrained`` or a weights file name) default to the most common among the table's runs.
    ``data_root`` (the workspace's data folder) and ``sources`` (clean dataset folders outside it) shape
    the commands that fill empty cells. ``draw`` (a prefix of a dataset manifest's sha256) keeps the runs of that
    draw of the data only; a table whose runs come from several draws says which method is on which.
    """
    if number not in TABLES:
        raise UdcbenchError(f"there is no Table {number}: the paper has Tables 1-5")
    if preset is not None and preset not in PRESETS:
        raise unknown_name("preset", preset, PRESETS)
    spec = TABLES[number]
    datasets = tuple(datasets or spec.datasets)
    cond = condition if spec.udc else "clean"
    listed = paper_table(number)  # the table's rows
    paper_rows = listed  # the numbers shown beside ours
    notes = []
    if cond != (PAPER_UDC_CONDITION if spec.udc else "clean"):
        # the paper's numbers are of its own condition: beside another, a difference would compare unlike data
        notes.append(f"the paper's column is left out: the paper measured Table {number} on its UDC data (T-OLED-like, "
                     f"udcbench's {PAPER_UDC_CONDITION}), not on {cond}")
        paper_rows = []
    methods: dict[str, tuple[str | None, str]] = {}
    for p in listed:
        methods.setdefault(p.method, (p.udcbench_method, p.note))
    for extra in spec.extra_methods:
        methods.setdefault(f"{get_method(extra).title} (control; not in the paper)", (extra, "udcbench's control"))
    keys = {m for m, _ in methods.values() if m}
    candidates = [r for r in results if usable(r) and r["method"] in keys and r["dataset"] in datasets
                  and r["condition"] == cond and _draw(r).startswith(draw or "")]
    preset = preset or most_common([r["preset"] for r in candidates], tuple(reversed(PRESETS))) or "cpu"
    init = init or most_common([r["init"] for r in candidates if r["preset"] == preset], ("scratch",)) or "scratch"
    frame = runs_frame(candidates)
    rows = []
    for label, (method, note) in methods.items():
        cells = {}
        for dataset in datasets:
            paper = next((p.accuracy for p in paper_rows if p.method == label and p.dataset == dataset), None)
            cell = Cell(paper=paper)
            if method is not None:
                cell = fill_cell(cell, frame, method, dataset, cond, preset, init, notes, data_root,
                                 (sources or {}).get(dataset))
            cells[dataset] = cell
        if method is not None or any(c.paper is not None for c in cells.values()):
            rows.append(Row(label, method, note, cells))
    in_cells = {run for row in rows for cell in row.cells.values() for run in cell.runs}
    shown = [r for r in candidates if r["run_dir"] in in_cells]
    notes += _recipe_notes(shown, preset, init) + _draw_notes(shown, cond)
    skipped = [r for r in results if r.get("kind") == "train" and r.get("record", {}).get("config_changes")
               and r["method"] in keys and r["dataset"] in datasets and r["condition"] == cond]
    sweeps = [r for r in skipped if _sweep_value(r) is not None]
    if sweeps:
        sweep = get_method(sweeps[0]["method"]).sweep
        values = ", ".join(str(v) for v in sorted({_sweep_value(r) for r in sweeps}))
        notes.append(f"{len(sweeps)} Figure {sweep.figure} run(s) ({sweep.arg} = {values}) are in "
                     f"Figure {sweep.figure}, not in this table")
    if len(skipped) > len(sweeps):
        notes.append(f"{len(skipped) - len(sweeps)} run(s) trained with config overrides (--set) are not in the "
                     "table")
    return BuiltTable(spec, datasets, cond, preset, init, rows, notes)


def _draw(result: dict[str, Any]) -> str:
    """The dataset draw a run trained on: its data manifest's sha256 ("" when unknown)."""
    return str(result.get("record", {}).get("dataset_manifest_sha256") or "")


def _draw_notes(shown: list[dict[str, Any]], condition: str) -> list[str]:
    """Per dataset whose shown runs trained on more than one draw of the data: which methods are on which."""
    notes = []
    for dataset in sorted({r["dataset"] for r in shown}):
        by_draw: dict[str, set[str]] = {}
        for r in shown:
            if r["dataset"] == dataset:
                by_draw.setdefault(_draw(r)[:12] or "unknown", set()).add(get_method(r["method"]).title)
        if len(by_draw) > 1:
            parts = "; ".join(f"{d}: {', '.join(sorted(m))}" for d, m in sorted(by_draw.items()))
            notes.append(f"{dataset_title(dataset, condition)} mixes {len(by_draw)} draws of the data ({parts}); "
                         "--draw SHA keeps one")
    return notes


def _recipe_notes(shown: list[dict[str, Any]], preset: str, init: str) -> list[str]:
    """What the table's runs share and where they differ: the trunk they start from, when it is a face
    pre-training (its task, recorded by the runs), the methods whose epochs differ from the others', and which
    model a method trained where it has more than one (LRDif's paper model or its fair one, recorded by the run)."""
    notes = []
    tasks = sorted({r.get("record", {}).get("init_task") for r in shown} - {None})
    if tasks:
        notes.append(f"init {init}: a ResNet-18 trunk pre-trained on the {' and '.join(tasks)}, the stand-in for the "
                     "MS-Celeb-1M trunk of real data")
    epochs: dict[str, set[int]] = {}
    for r in shown:
        epochs.setdefault(r["method"], set()).add(r["epochs"])
    counts = Counter(n for values in epochs.values() for n in values)
    if len(counts) > 1:
        usual = counts.most_common(1)[0][0]
        other = sorted(f"{get_method(m).title} {'/'.join(str(n) for n in sorted(v))}" for m, v in epochs.items()
                       if v != {usual})
        notes.append(f"epochs at the {preset} preset: {', '.join(other)}; the others {usual}")
    models: dict[str, set[str]] = {}  # which model a method with more than one trained (LRDif: the paper's or fair)
    for r in shown:
        model = (r.get("record", {}).get("notes") or {}).get("model")
        if model:
            models.setdefault(r["method"], set()).add(model)
    notes += [f"{name} runs: {'; '.join(sorted(m))}" for name, m in sorted(models.items())]
    return notes + _world_notes(shown)


def _world_notes(shown: list[dict[str, Any]]) -> list[str]:
    """Runs trained over several processes (DDP), with or without synchronised batch norm: said, so that a table
    never mixes one-GPU and N-GPU recipes without a word (their batch statistics differ)."""
    how: dict[str, set[str]] = {}
    for r in shown:
        execution = (r.get("record") or {}).get("execution") or {}
        world = execution.get("world_size") or 1
        label = "1 process" if world == 1 else f"{world} processes" + (", sync BN" if execution.get("sync_bn") else "")
        how.setdefault(label, set()).add(r["method"])
    if set(how) <= {"1 process"}:
        return []
    parts = "; ".join(f"{label}: {', '.join(sorted(methods))}" for label, methods in sorted(how.items()))
    return [("mixes runs trained on different numbers of processes (" if len(how) > 1 else "runs trained on ")
            + parts + (")" if len(how) > 1 else "")]


def _sweep_value(result: dict):
    """The swept argument's value of a study-figure run (e.g. Figure 6's T), None for any other run with
    overrides."""
    changes = result.get("record", {}).get("config_changes") or {}
    if result["method"] not in method_names(include_test=True):
        return None
    sweep = get_method(result["method"]).sweep
    key = f"method_args.{sweep.arg}" if sweep else None
    return changes[key] if key is not None and set(changes) == {key} else None


def fmt(value: float | None, signed: bool = False) -> str:
    return "" if value is None else (f"{value:+.2f}" if signed else f"{value:.2f}")


def table_records(table: BuiltTable) -> list[dict[str, Any]]:
    """One flat record per (method, dataset): the CSV's rows."""
    out = []
    for row in table.rows:
        for dataset, cell in row.cells.items():
            out.append({
                "table": table.spec.number, "method": row.label, "udcbench_method": row.method or "",
                "dataset": dataset, "condition": table.condition, "preset": table.preset if row.method else "",
                "init": "/".join(sorted(cell.inits)), "input_size": "/".join(str(s) for s in sorted(cell.input_sizes)),
                "n": cell.n, "ours_mean": fmt(cell.mean), "ours_std": fmt(cell.std),
                "ours_mean_class_accuracy": fmt(statistics.fmean(cell.mean_class_accuracy)
                                                 if cell.mean_class_accuracy else None),
                "paper": fmt(cell.paper), "diff": fmt(cell.diff, signed=True),
                "status": ("not implemented in udcbench" if row.method is None else
                           "measured" if cell.n else "missing"),
                "fill_command": cell.command or "",
            })
    return out


def header(table: BuiltTable) -> list[str]:
    columns = ["Method", "init", "input"]
    for dataset in table.datasets:
        name = dataset_title(dataset, table.condition)
        columns += [f"{name} ours", f"{name} paper", "Δ"] if table.has_paper(dataset) else [name]
    return columns


def body(table: BuiltTable) -> list[list[str]]:
    lines = []
    for row in table.rows:
        line = [row.label, row.init(), row.input_size()]
        for dataset in table.datasets:
            cell = row.cells[dataset]
            line.append(cell.ours() or ("n/a" if row.method is None else ""))
            if table.has_paper(dataset):
                line += [fmt(cell.paper), fmt(cell.diff, signed=True)]
        lines.append(line)
    return lines


def fill_commands(cells) -> list[str]:
    """The commands that fill the empty ones of ``cells``, each once (data preparation first)."""
    seen: list[str] = []
    for cell in cells:
        for step in (cell.command or "").split(" && "):
            if step and step not in seen:
                seen.append(step)
    return sorted(seen, key=lambda c: " train " in c)


def markdown(table, columns: list[str], lines: list[list[str]]) -> str:
    """A table (anything with ``title``, ``subtitle``, ``commands()`` and ``notes``) as markdown."""
    out = [f"### {table.title}", "", table.subtitle, "",
           "| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    if table.commands():
        out += ["", "Missing cells are filled by:", "", *(f"    {c}" for c in table.commands())]
    if table.notes:
        out += ["", *(f"- {n}" for n in table.notes)]
    return "\n".join(out) + "\n"


def write_files(out_dir: Path, stem: str, records: list[dict[str, Any]], text: str) -> tuple[Path, Path]:
    """``out_dir/STEM.csv`` (``records``) and ``STEM.md`` (``text``), atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out_dir / f"{stem}.csv", out_dir / f"{stem}.md"
    write_csv(csv_path, list(records[0]), records)
    write_atomic(md_path, text)
    return csv_path, md_path


def to_markdown(table: BuiltTable) -> str:
    return markdown(table, header(table), body(table))


def write_table(table: BuiltTable, out_dir: Path) -> tuple[Path, Path]:
    """``out_dir/table{N}.csv`` and ``.md`` (with a suffix when the datasets or condition differ)."""
    return write_files(out_dir, table.stem(), table_records(table), to_markdown(table))
