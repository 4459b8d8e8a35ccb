"""Checkpoints that load without running code: saved atomically, loaded with ``torch.load(weights_only=True)``.

A checkpoint holds tensors and plain containers, numbers and strings only (no numpy arrays, no objects),
so that a run folder someone hands you cannot execute anything when udcbench reads it. A file that does
not load that way is refused with one line naming it.
"""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import torch

from udcbench.errors import UdcbenchError
from udcbench.files import temp_path


def _first_line(exc: BaseException, width: int = 160) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:width] if text else ""


def save_checkpoint(obj: dict[str, Any], path: Path) -> None:
    """Write ``obj`` to ``path`` through a temporary file and a rename (a crash leaves the old file)."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        torch.save(obj, tmp)
    except (OSError, RuntimeError) as exc:
        tmp.unlink(missing_ok=True)
        free = shutil.disk_usage(path.parent).free / 2**20 if path.parent.is_dir() else 0.0
        raise UdcbenchError(f"could not write the checkpoint {path} ({free:.0f} MiB free on its disk; "
                            f"{type(exc).__name__}: {_first_line(exc, 120)})") from None
    os.replace(tmp, path)


def load_checkpoint(path: Path, map_location: torch.device | str = "cpu") -> dict[str, Any]:
    """A checkpoint's contents, tensors-only; a one-line error for a file that is missing, unreadable, or would
    need to run code to load."""
    path = Path(path)
    if not path.is_file():
        raise UdcbenchError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = _first_line(exc) or type(exc).__name__
        raise UdcbenchError(f"{path}: refused, not a tensors-only checkpoint (loading it would run code it names: "
                            f"{reason}); udcbench loads checkpoints with weights_only=True") from None
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise UdcbenchError(f"{path}: not a readable checkpoint ({type(exc).__name__}: "
                            f"{_first_line(exc)})") from None
    if not isinstance(state, dict):
        raise UdcbenchError(f"{path}: not a udcbench checkpoint (a {type(state).__name__}, not a dict)")
    return state
