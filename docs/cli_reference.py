"""Writes the reference pages from the code, so that they cannot drift from it: docs/cli.md from the commands' own
help (their docstrings and options) and docs/methods.md from the method registry (each method's paper, its
official recipe as the ``paper`` budget, its shared budgets and its known departures). A test regenerates both and
fails when a committed page differs.

    python docs/cli_reference.py          # rewrite docs/cli.md and docs/methods.md
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer.main

PAGE = Path(__file__).resolve().parent / "cli.md"
METHODS_PAGE = Path(__file__).resolve().parent / "methods.md"


def _options(command) -> list[str]:
    """One row per visible option: its names and what it takes, and its help with the default (click's own
    help record, as ``--help`` prints it)."""
    from typer._click.core import Context

    ctx = Context(command, info_name=command.name)
    rows = []
    for param in command.params:
        if getattr(param, "hidden", False) or getattr(param, "param_type_name", "") != "option":
            continue
        record = param.get_help_record(ctx)
        if record is None:
            continue
        names, text = record
        text = " ".join(text.split()).replace("|", "\\|")
        rows.append(f"| `{names.replace('|', ' / ')}` | {text} |")
    return rows


def _section(path: str, command) -> list[str]:
    if hasattr(command, "commands"):  # a group (figure): its commands
        lines = [f"### `{path}`", "", " ".join((command.help or "").split()), ""]
        for name in sorted(command.commands):
            lines += _section(f"{path} {name}", command.commands[name])
        return lines
    arguments = " ".join(p.name.upper() + ("..." if p.nargs == -1 else "") for p in command.params
                         if getattr(p, "param_type_name", "") == "argument")
    help_text = (command.help or "").strip().split("\n\n")
    lines = [f"### `{path}{' ' + arguments if arguments else ''}`", ""]
    lines += [" ".join(part.split()) + "\n" for part in help_text if part.strip()]
    rows = _options(command)
    if rows:
        lines += ["| option | what |", "|---|---|", *rows, ""]
    return lines


def render() -> str:
    from udcbench.cli import app

    root = typer.main.get_command(app)
    lines = ["# Command reference", "",
             "Generated from the commands' own help by `python docs/cli_reference.py` (a test fails when this page "
             "is stale). `udcbench COMMAND --help` shows the same.", ""]
    panels: dict[str, list[str]] = {}
    for name, command in root.commands.items():
        panel = getattr(command, "rich_help_panel", None) or "Other"
        panels.setdefault(panel, []).append(name)
    for panel in sorted(panels):
        lines += [f"## {panel}", ""]
        for name in sorted(panels[panel]):
            lines += _section(f"udcbench {name}", root.commands[name])
    return "\n".join(lines).rstrip() + "\n"


def render_methods() -> str:
    """One section per registered method: its paper, description, the recipe of each budget, its departures."""
    from udcbench.config import PRESETS
    from udcbench.methods import get_method, method_names

    lines = ["# Methods", "",
             "Generated from the method registry by `python docs/cli_reference.py` (a test fails when this page is "
             "stale). The `paper` budget is each method's official recipe, checked against its authors' code in "
             "`tests/test_baselines.py`; the shared budgets (`smoke`, `quick`, `cpu`) train every method alike. "
             "`udcbench methods --details` shows the same.", ""]
    keys = ("input_size", "optimizer", "lr", "schedule", "epochs", "batch_size")
    for name in method_names():
        spec = get_method(name)
        lines += [f"## {spec.title} (`{name}`)", "", f"{spec.paper}. {spec.description}", "",
                  "| budget | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        for preset in PRESETS:
            config = spec.config(preset)
            lines.append(f"| {preset} | " + " | ".join(str(getattr(config, k)) for k in keys) + " |")
        lines.append("")
        args = spec.config("paper").method_args
        if args:
            lines += ["Method arguments at the paper budget: " + ", ".join(f"`{k}={v}`" for k, v in args.items()) + ".",
                      ""]
        if spec.departures is None:
            lines += ["Departures from the authors' code: none recorded (not a check that there is none).", ""]
        elif not spec.departures:
            lines += ["Departures from the authors' code: none found (checked).", ""]
        else:
            lines += ["Departures from the authors' code:", "", *(f"- {d}" for d in spec.departures), ""]
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    PAGE.write_text(render())
    METHODS_PAGE.write_text(render_methods())
    print(f"wrote {PAGE} and {METHODS_PAGE}", file=sys.stderr)


if __name__ == "__main__":
    main()
