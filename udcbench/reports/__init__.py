"""Reports: the paper's tables (:mod:`.tables`), the low-light table (:mod:`.lowlight`), the leaderboard and its
model cards (:mod:`.leaderboard`), the figures (:mod:`.figures`), the paper's numbers (:mod:`.paper`) and the
HTML page of a study (:mod:`.html`).

Every table ``udcbench table KEY`` writes is registered here (:func:`table_kind`): the CLI asks the registry, so a
new table is one entry, not a branch in the command.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from udcbench.errors import UdcbenchError


@dataclass(frozen=True)
class TableKind:
    """How one kind of table is built from the results store and written out."""

    keys: tuple[str, ...]  # what `udcbench table KEY` takes
    #: (results, key, options) -> the table; options: datasets, condition, preset, init, data_root, draw
    build: Callable[[list[dict[str, Any]], str, dict[str, Any]], Any]
    write: Callable[[Any, Path], tuple[Path, Path]]  # -> the CSV and markdown files
    records: Callable[[Any], list[dict[str, Any]]]  # the CSV rows
    markdown: Callable[[Any], str]  # the table as markdown
    #: Whether the terminal shows it as a paper table (columns beside the paper's, fill commands, notes)
    paper_layout: bool = False


def _paper_table() -> TableKind:
    from udcbench.reports import tables

    def build(results, key, options):
        return tables.build_table(int(key), results, datasets=options.get("datasets"),
                                  condition=options.get("condition") or "toled", preset=options.get("preset"),
                                  init=options.get("init"), data_root=options.get("data_root"),
                                  draw=options.get("draw"))

    return TableKind(("1", "2", "3", "4", "5"), build, tables.write_table, tables.table_records, tables.to_markdown,
                     paper_layout=True)


def _lowlight_table() -> TableKind:
    from udcbench.reports import lowlight

    def build(results, key, options):
        return lowlight.build_lowlight_table(results, datasets=options.get("datasets"), preset=options.get("preset"),
                                             init=options.get("init"), data_root=options.get("data_root"))

    return TableKind(("ll",), build, lowlight.write_lowlight_table, lowlight.lowlight_records,
                     lowlight.lowlight_markdown)


def _robustness_table() -> TableKind:
    from udcbench.reports import robustness

    def build(results, key, options):
        datasets = options.get("datasets")
        return robustness.build_robustness_table(results, dataset=datasets[0] if datasets else None,
                                                 preset=options.get("preset"))

    return TableKind(("robustness",), build, robustness.write_robustness_table, robustness.robustness_records,
                     robustness.robustness_markdown)


#: The registered kinds of table (built lazily: the CLI's --help imports no report module).
TABLE_KINDS: tuple[Callable[[], TableKind], ...] = (_paper_table, _lowlight_table, _robustness_table)


def table_kind(key: str) -> TableKind:
    """The registered table that ``key`` names; a one-line error listing the keys otherwise."""
    kinds = [make() for make in TABLE_KINDS]
    for kind in kinds:
        if key.lower() in kind.keys:
            return kind
    known = ", ".join(k for kind in kinds for k in kind.keys)
    raise UdcbenchError(f"'{key}' is not a table: the paper has Tables 1-5 and udcbench adds the low-light and "
                        f"robustness tables (known: {known})")
