"""Shared helpers of the benchmark scripts: a results table on stdout and a CSV under results/."""

from __future__ import annotations

import csv
import os
import platform
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
FERPLUS = REPO.parent / "shared" / "data" / "ferplus"


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"


def report(name: str, title: str, rows: list[dict]) -> Path:
    """Print rows as a table and write them to benchmarks/results/<name>.csv."""
    table = Table(title=f"{title} ({machine()})")
    for key in rows[0]:
        table.add_column(key, overflow="fold")
    for row in rows:
        table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()))
    Console().print(table)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {path.relative_to(REPO)}")
    return path
