"""The low-light table (``udcbench table ll``): every registered method's accuracy on clean and low-light
RAF-DB, FERPlus and KDEF (LLDif's LL-RAF-DB, LL-FERPlus and LL-KDEF), the drop between them, and the commands
that fill empty cells. The LLDif paper's numbers are not at hand, so the table holds ours only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from udcbench.config import PRESETS
from udcbench.errors import unknown_name
from udcbench.methods import get_method, method_names
from udcbench.reports.tables import (
    Cell,
    dataset_title,
    fill_cell,
    fill_commands,
    fmt,
    markdown,
    most_common,
    runs_frame,
    usable,
    write_files,
)

LL_DATASETS = ("rafdb", "ferplus", "kdef")


@dataclass
class LowLightRow:
    method: str
    title: str
    cells: dict[tuple[str, str], Cell]  # (dataset, "clean" | the low-light condition)

    def drop(self, dataset: str, condition: str) -> float | None:
        clean, dark = self.cells[(dataset, "clean")].mean, self.cells[(dataset, condition)].mean
        return None if clean is None or dark is None else clean - dark


@dataclass
class LowLightTable:
    datasets: tuple[str, ...]
    condition: str
    preset: str
    init: str
    rows: list[LowLightRow]
    notes: list[str]

    @property
    def title(self) -> str:
        names = ", ".join(dataset_title(d) for d in self.datasets)
        return f"Low-light table: accuracy (%) on clean and low-light ({self.condition}) {names}"

    @property
    def subtitle(self) -> str:
        return (f"ours: preset {self.preset}, init {self.init}, test accuracy at the epoch chosen on validation; "
                "the LLDif paper's numbers are not at hand, so there is no paper column")

    def commands(self) -> list[str]:
        return fill_commands(cell for row in self.rows for cell in row.cells.values())

    def stem(self) -> str:
        return "table-ll" + ("" if self.datasets == LL_DATASETS else "-" + "-".join(self.datasets)) + (
            "" if self.condition == "lowlight" else f"-{self.condition}")


def build_lowlight_table(results: list[dict[str, Any]], datasets: list[str] | None = None,
                         condition: str = "lowlight", preset: str | None = None, init: str | None = None,
                         data_root: Path | None = None) -> LowLightTable:
    """The table from store rows: one row per registered method (oracles left out), two cells per dataset."""
    if preset is not None and preset not in PRESETS:
        raise unknown_name("preset", preset, PRESETS)
    datasets = tuple(datasets or LL_DATASETS)
    methods = [m for m in method_names() if not get_method(m).oracle]
    candidates = [r for r in results if usable(r) and r["method"] in methods and r["dataset"] in datasets
                  and r["condition"] in ("clean", condition)]
    preset = preset or most_common([r["preset"] for r in candidates], tuple(reversed(PRESETS))) or "cpu"
    init = init or most_common([r["init"] for r in candidates if r["preset"] == preset], ("scratch",)) or "scratch"
    notes: list[str] = []
    frame = runs_frame(candidates)
    rows = [LowLightRow(m, get_method(m).title, {(d, c): fill_cell(Cell(), frame, m, d, c, preset, init, notes,
                                                                   data_root)
                                                 for d in datasets for c in ("clean", condition)})
            for m in methods]
    return LowLightTable(datasets, condition, preset, init, rows, notes)


def lowlight_records(table: LowLightTable) -> list[dict[str, Any]]:
    """One CSV row per (method, dataset)."""
    out = []
    for row in table.rows:
        for d in table.datasets:
            clean, dark = row.cells[(d, "clean")], row.cells[(d, table.condition)]
            out.append({"method": row.title, "udcbench_method": row.method, "dataset": d,
                        "condition": table.condition, "preset": table.preset, "init": table.init,
                        "clean_mean": fmt(clean.mean), "clean_std": fmt(clean.std), "clean_n": clean.n,
                        "lowlight_mean": fmt(dark.mean), "lowlight_std": fmt(dark.std), "lowlight_n": dark.n,
                        "drop": fmt(row.drop(d, table.condition)),
                        "fill_command": " ; ".join(c.command for c in (clean, dark) if c.command)})
    return out


def lowlight_markdown(table: LowLightTable) -> str:
    columns = ["Method"]
    for d in table.datasets:
        columns += [f"{dataset_title(d)} clean", f"LL-{dataset_title(d)}", "drop"]
    lines = []
    for row in table.rows:
        cells = [row.title]
        for d in table.datasets:
            cells += [row.cells[(d, "clean")].ours(), row.cells[(d, table.condition)].ours(),
                      fmt(row.drop(d, table.condition))]
        lines.append(cells)
    return markdown(table, columns, lines)


def write_lowlight_table(table: LowLightTable, out_dir: Path) -> tuple[Path, Path]:
    """``out_dir/table-ll.csv`` and ``.md``."""
    return write_files(out_dir, table.stem(), lowlight_records(table), lowlight_markdown(table))
