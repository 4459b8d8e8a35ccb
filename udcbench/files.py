"""Records written atomically: a temporary file in the same folder, then a rename, so that a crash or a full
disk leaves the previous file (or none), never a torn one."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def write_atomic(path: Path, data: str | bytes) -> Path:
    """Write ``data`` to ``path`` (creating its folder); on any error the old file is kept and the temporary
    one removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_json(path: Path, obj: Any) -> Path:
    """``obj`` as indented JSON (non-JSON values as strings), atomically."""
    return write_atomic(path, json.dumps(obj, indent=2, default=str) + "\n")


def write_csv(path: Path, fieldnames: list[str], rows: Iterable[dict[str, Any]]) -> Path:
    """Rows as CSV with a header, atomically."""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=fieldnames, restval="")
    writer.writeheader()
    writer.writerows(rows)
    return write_atomic(path, buffer.getvalue())


def read_json(path: Path) -> Any | None:
    """A JSON file's contents, or None when it is missing, empty or unreadable (e.g. torn by a full disk)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
