"""Every decimal number in the tables and prose of the README and docs/ is in a file it comes from: a benchmark CSV
under ``benchmarks/results/``, the paper's numbers (``udcbench/data/lrdif_tables.csv``) or a degradation preset (its
constants and the fits its comments record). A number no such file holds is a claim without its source."""

from __future__ import annotations

import csv
import re

from conftest import REPO

NUMBER = re.compile(r"(?<![\w.])\d+\.\d+(?![\w.])")
#: What is not a figure: code (fenced blocks and `spans`: commands and settings), arXiv ids, version requirements.
NOT_FIGURES = re.compile(r"`[^`]*`|arXiv[ :]\d+\.\d+|Python >= \d+\.\d+")


def _sources() -> set[tuple[float, int]]:
    """(value, decimals) pairs for every decimals count a page could show a source value with."""
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
    return {(round(abs(v), d), d) for v in values for d in range(5)}  # the pattern reads a number without its sign


def test_every_number_in_the_docs_tables_and_prose_is_in_a_source_file():
    sources = _sources()
    missing = []
    # the reference pages are the code's own settings, generated from it (their test below keeps them current)
    generated_from_code = {REPO / "docs" / "cli.md", REPO / "docs" / "methods.md"}
    pages = [REPO / "README.md", *sorted(p for p in (REPO / "docs").rglob("*.md") if p not in generated_from_code)]
    assert len(pages) > 3  # the README and the pages it points to
    for page in pages:
        fenced = False
        for number, line in enumerate(page.read_text().splitlines(), 1):
            if line.lstrip().startswith("```"):
                fenced = not fenced
                continue
            if fenced:
                continue
            for text in NUMBER.findall(NOT_FIGURES.sub("", line)):
                decimals = len(text.split(".")[1])
                if (round(float(text), decimals), decimals) not in sources:
                    missing.append(f"{page.relative_to(REPO)}:{number}: {text}")
    assert not missing, "numbers no CSV or preset holds:\n" + "\n".join(missing)


def test_the_readme_is_short_shows_the_set_up_commands_and_links_only_to_pages_that_exist():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    ci = (REPO / ".ci" / "run").read_text()
    for name in ("INSTALL", "TESTS"):  # the two set-up commands, verbatim, as CI runs them
        command = re.search(rf"^{name}='(.+)'$", ci, re.M).group(1)
        assert command in text
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    assert links and [link for link in links if not (REPO / link).exists()] == []


def test_the_command_reference_is_generated_from_the_commands_help_and_is_current():
    import importlib.util

    spec = importlib.util.spec_from_file_location("cli_reference", REPO / "docs" / "cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (REPO / "docs" / "cli.md").read_text() == module.render(), (
        "docs/cli.md is stale: run python docs/cli_reference.py")
    assert (REPO / "docs" / "methods.md").read_text() == module.render_methods(), (
        "docs/methods.md is stale: run python docs/cli_reference.py")


def test_the_results_pages_are_generated_from_the_csvs_and_are_current():
    import importlib.util

    spec = importlib.util.spec_from_file_location("results_pages", REPO / "docs" / "results_pages.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    pages = module.render()
    written = {p.name: p.read_text() for p in (REPO / "docs" / "results").glob("*.md")}
    assert written == pages, "docs/results/ is stale: run python docs/results_pages.py"
