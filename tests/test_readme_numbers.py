"""Every decimal number in the README's tables is in a file it comes from: a benchmark CSV under
``benchmarks/results/``, the paper's numbers (``udcbench/data/lrdif_tables.csv``) or a degradation preset (its
constants and the fits its comments record). A number no such file holds is a claim without its source."""

from __future__ import annotations

import csv
import re

from conftest import REPO

NUMBER = re.compile(r"(?<![\w.])\d+\.\d+(?![\w.])")


def _sources() -> set[tuple[float, int]]:
    """(value, decimals) pairs for every decimals count a README could show a source value with."""
    values: list[float] = []
    for path in [*(REPO / "benchmarks" / "results").glob("*.csv"), REPO / "udcbench" / "data" / "lrdif_tables.csv"]:
        with path.open(newline="") as f:
            for row in csv.reader(f):
                for cell in row:
                    try:
                        values.append(float(cell))
                    except ValueError:
                        continue
    for path in (REPO / "degradations" / "presets").glob("*.yaml"):
        constants = [float(m) for m in re.findall(r"-?\d+\.\d+|\d+", path.read_text())]
        values += constants + [100 * v for v in constants]  # shares also shown in percent
    return {(round(v, d), d) for v in values for d in range(5)}


def test_every_number_in_the_readmes_tables_is_in_a_source_file():
    sources = _sources()
    missing = []
    for number, line in enumerate((REPO / "README.md").read_text().splitlines(), 1):
        if not line.startswith("|"):
            continue
        for text in NUMBER.findall(line):
            decimals = len(text.split(".")[1])
            if (round(float(text), decimals), decimals) not in sources:
                missing.append(f"README.md:{number}: {text}")
    assert not missing, "numbers no CSV or preset holds:\n" + "\n".join(missing)
