"""Known errors: printed by the CLI as one line, with the traceback only under UDCBENCH_DEBUG=1."""

from __future__ import annotations

from pathlib import Path


class UdcbenchError(Exception):
    """Base class of every error that a user can cause and fix."""


class DatasetNotFoundError(UdcbenchError):
    """A dataset folder is missing."""


class DatasetLayoutError(UdcbenchError):
    """A dataset folder exists but does not have the expected layout or content."""


class UnknownNameError(UdcbenchError):
    """An unknown dataset, preset or method name."""


class UnreadableImageError(UdcbenchError):
    """An image file that cannot be decoded."""

    def __init__(self, path: Path | str, reason: str = "cannot be decoded"):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"unreadable image {self.path}: {reason}")


def unknown_name(kind: str, name: str, known: list[str] | tuple[str, ...]) -> UnknownNameError:
    """An UnknownNameError that lists the valid choices (and the closest one)."""
    import difflib

    close = difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return UnknownNameError(f"unknown {kind} '{name}'. Known: {', '.join(known)}.{hint}")
