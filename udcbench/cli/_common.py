"""Shared CLI plumbing: adding commands with one-line errors, the options several commands share, Enum
choices, consoles, dataset resolution, ``-o key=value`` options."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterable
from enum import Enum
from pathlib import Path
from typing import Any

import typer

from degradations import preset_names
from udcbench.config import PRESETS
from udcbench.datasets import create_dataset, dataset_names, detect_dataset, get_adapter_class
from udcbench.datasets.base import DatasetAdapter
from udcbench.errors import DatasetNotFoundError, UdcbenchError
from udcbench.progress import SafeConsole, stderr
from udcbench.workspace import load_workspace

#: Results go to stdout; logs and progress to stderr (:data:`udcbench.progress.stderr`).
stdout = SafeConsole(soft_wrap=True)
DEBUG_VAR = "UDCBENCH_DEBUG"


def debug() -> bool:
    return os.environ.get(DEBUG_VAR, "") not in ("", "0")


#: Set on the ranks but 0 of a ``torchrun`` launch, whose other output is silenced: their errors say which rank.
RANK_PREFIX = ""


def fail(message: str, code: int = 2) -> None:
    """Print one error line on stderr and exit."""
    if RANK_PREFIX:
        print(f"error {RANK_PREFIX}{message}".replace(r"\[", "["), file=sys.stderr)
    else:
        stderr.print(f"[bold red]error:[/] {message}", soft_wrap=True, highlight=False, markup=True)
    raise typer.Exit(code)


def add_command(app: typer.Typer, fn: Callable, name: str, panel: str | None = None) -> None:
    """Add ``fn`` to ``app`` as command ``name``; its known errors print as one line (traceback with
    UDCBENCH_DEBUG=1)."""

    @functools.wraps(fn)
    def wrapper(*args, **kw):
        try:
            return fn(*args, **kw)
        except UdcbenchError as exc:
            if debug():
                raise
            fail(str(exc).replace("[", r"\["))
        except BrokenPipeError:  # the reader of stdout closed it (`udcbench runs --json | head`): end quietly
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # so that Python's own flush at exit says nothing either
            raise typer.Exit(0) from None
        except OSError as exc:  # a read-only or full disk, a permission: one line, not a traceback
            if debug():
                raise
            where = f"{exc.filename}: " if exc.filename else ""
            fail(f"{where}{exc.strerror or exc}".replace("[", r"\["))
        except (MemoryError, RuntimeError) as exc:  # an allocation the machine (or its ulimit) refused: one line
            if debug() or not (isinstance(exc, MemoryError) or _out_of_memory(exc)):
                raise
            fail("out of memory: the machine (or its memory limit) refused an allocation; use smaller inputs, fewer "
                 "workers or a smaller batch", 1)
        except Exception as exc:  # noqa: BLE001 - OpenCV's own errors (cv2.error) on an image it cannot process
            if debug() or type(exc).__name__ != "error" or "cv2" not in type(exc).__module__:
                raise
            detail = next((line for line in str(exc).splitlines() if "error:" in line), str(exc)).strip()
            fail(f"OpenCV cannot process this image ({detail[-160:]})".replace("[", r"\["))
        except KeyboardInterrupt:
            if debug():
                raise
            fail("interrupted", 130)

    app.command(name=name, rich_help_panel=panel)(wrapper)


def _out_of_memory(exc: RuntimeError) -> bool:
    """Whether ``exc`` is torch's refused allocation (its CPU allocator's error, or a GPU's OutOfMemoryError)."""
    return type(exc).__name__ == "OutOfMemoryError" or "can't allocate memory" in str(exc)


def choices(name: str, values: Iterable[str]) -> type[Enum]:
    """A str Enum of ``values`` for a typer option: the help lists them and typer refuses others."""
    return Enum(name, {value: value for value in values}, type=str)


#: Choices that several commands share: training presets, and the degradation presets (UDC panels, low light).
Preset = choices("Preset", PRESETS)
Panel = choices("Panel", preset_names())

# Options that several commands share.
JSON_OPTION = typer.Option(False, "--json", help="Machine-readable JSON on stdout.")
#: ``--preset``, the spelling the options had before a training budget (``--budget``), a degradation panel
#: (``--panel``) and a study (``--study``) were named apart: kept, hidden, so that scripts keep working.
OLD_PRESET = typer.Option(None, "--preset", hidden=True, help="The old name of this command's --budget, --panel "
                                                              "or --study.")


def renamed(value, old, flag: str, default=None):
    """An option given by its name (``flag``) or by its old name ``--preset``; both must then agree."""
    if value is not None and old is not None and value != old:
        raise UdcbenchError(f"{flag} {value.value} and --preset {old.value} (its old name) disagree: give one")
    chosen = value if value is not None else old
    return chosen if chosen is not None else default
DATASET_OPTIONS = typer.Option(None, "--option", "-o", help="Dataset option KEY=VALUE (see `udcbench datasets`).")
RUNS_OPTION = typer.Option(None, "--runs", help="Runs folder holding results.sqlite (default: runs/).")
OUT_OPTION = typer.Option(None, "--out", help="Output folder (default: results/...).")


def parse_options(pairs: list[str] | None) -> dict[str, str]:
    """``["label_mode=majority7", "angles=all"]`` -> dict."""
    options = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UdcbenchError(f"dataset option '{pair}' is not KEY=VALUE")
        options[key.strip().replace("-", "_")] = value.strip()
    return options


def resolve_dataset(target: str | None, dataset: str | None = None, options: dict[str, Any] | None = None,
                    folder: str = "give its folder instead of the name") -> DatasetAdapter:
    """A dataset from a folder (layout detected, or ``--dataset``) or a name (its workspace folder); ``folder``
    says how this command takes a folder, for the message when a named dataset is absent."""
    options = options or {}
    workspace = load_workspace()
    if dataset is not None:
        get_adapter_class(dataset)  # an unknown name fails here, with the known names
    if target is None:
        if dataset is None:
            raise UdcbenchError("give a dataset folder or name")
        target = dataset
    path = Path(target).expanduser()
    if dataset is not None and not get_adapter_class(dataset).spec.needs_source and target != dataset:
        if not path.exists():  # a folder for a dataset drawn on demand: that folder (create_dataset), or nothing
            raise DatasetNotFoundError(f"{path}: no such folder")
        return create_dataset(dataset, path, **options)
    if not path.exists() and target in dataset_names():
        cls = get_adapter_class(target)
        if not cls.spec.needs_source:
            return cls(None, **options)
        path = workspace.dataset_dir(target)
        if not path.exists():
            raise DatasetNotFoundError(f"{cls.spec.title} not found at {path}. {cls.where_to_get()} Or {folder}.")
        return cls(path, **options)
    if not path.exists() and (workspace.data / target).exists():
        path = workspace.data / target
    if not path.exists():
        raise DatasetNotFoundError(
            f"'{target}' is neither a folder nor a dataset name (known: {', '.join(dataset_names())})"
        )
    return create_dataset(dataset or detect_dataset(path), path, **options)


def check_device(device: str | None) -> None:
    """``--device`` checked before any work (imports torch only when one is given)."""
    if device is not None:
        from udcbench.engine.runtime import check_device as check

        check(device)


def print_json(data: Any) -> None:
    """Machine-readable output on stdout (no rich markup)."""
    print(json.dumps(data, indent=2, default=str))
