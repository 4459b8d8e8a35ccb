"""Shared helpers of the benchmark scripts: a results table on stdout and a CSV under results/."""

from __future__ import annotations

import csv
import os
import platform
import sys
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
FERPLUS = REPO.parent / "shared" / "data" / "ferplus"


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"


def merge_previous(name: str, rows: list[dict], key: tuple[str, ...]) -> list[dict]:
    """Rows of benchmarks/results/<name>.csv whose key is not among ``rows``, then ``rows``.

    Lets a long benchmark be run piece by piece (one method, one condition) without losing the rows
    measured earlier; a re-measured row replaces the old one.
    """
    new = {tuple(str(r[k]) for k in key) for r in rows}
    return [r for r in read_rows(name) if tuple(r.get(k, "") for k in key) not in new] + rows


def read_rows(name: str) -> list[dict]:
    """The rows of benchmarks/results/<name>.csv (none when it is missing)."""
    path = RESULTS / f"{name}.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def report(name: str, title: str, rows: list[dict]) -> Path:
    """Print rows as a table and write them to benchmarks/results/<name>.csv."""
    table = Table(title=f"{title} ({machine()})")
    columns = list(dict.fromkeys(key for row in rows for key in row))  # every row's, in order
    for key in columns:
        table.add_column(key, overflow="fold")
    for row in rows:
        values = (row.get(key, "") for key in columns)
        table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in values))
    # in a terminal, its width; in a log file, the table's own width (Rich's default of 80 columns folds a wide
    # table into one character per line)
    Console(width=None if sys.stdout.isatty() else 100_000).print(table)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {path.relative_to(REPO)}")
    return path
