"""The LRDif paper's published numbers (Tables 1-5), as data: ``udcbench/data/lrdif_tables.csv``.

Transcribed from Wang, Zhang, Sankaranarayana, "LRDif: Diffusion Models for Under-Display Camera
Emotion Recognition", arXiv 2402.00250. Each row names the paper's method and, where udcbench
implements it, our registered method (``udcbench_method``).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

SOURCE = "Wang, Zhang, Sankaranarayana, LRDif (arXiv 2402.00250), Tables 1-5"
#: The paper's "UDC" condition is our toled preset unless a table is asked for another one.
PAPER_UDC = "udc"


@dataclass(frozen=True)
class PaperNumber:
    table: int
    dataset: str
    condition: str  # clean or udc
    method: str  # as the paper names it
    note: str
    accuracy: float  # percent
    udcbench_method: str | None  # our registered method, None where not implemented


@lru_cache(maxsize=1)
def paper_numbers() -> tuple[PaperNumber, ...]:
    text = resources.files("udcbench.data").joinpath("lrdif_tables.csv").read_text()
    rows = csv.DictReader(line for line in text.splitlines() if not line.startswith("#"))
    return tuple(
        PaperNumber(int(r["table"]), r["dataset"], r["condition"], r["method"], r["backbone_note"],
                    float(r["accuracy"]), r["udcbench_method"] or None)
        for r in rows
    )


def paper_table(number: int) -> list[PaperNumber]:
    """The rows of one table, in the paper's order."""
    return [row for row in paper_numbers() if row.table == number]
