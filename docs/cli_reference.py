"""Writes docs/cli.md, the command reference, from the commands' own help (their docstrings and options), so that
the reference cannot drift from the code: a test regenerates it and fails when the committed page differs.

    python docs/cli_reference.py          # rewrite docs/cli.md
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer.main

PAGE = Path(__file__).resolve().parent / "cli.md"


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


def main() -> None:
    PAGE.write_text(render())
    print(f"wrote {PAGE}", file=sys.stderr)


if __name__ == "__main__":
    main()
