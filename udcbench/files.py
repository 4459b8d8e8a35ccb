"""Safe file handling: records written atomically (a temporary file in the same folder, then a rename, so
that a crash or a full disk leaves the previous file or none, never a torn one), reading records that may
be torn, deleting only udcbench's own output folders, and names read from files checked as plain names."""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import os
import re
import socket
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from udcbench.errors import UdcbenchError

#: The suffix of every temporary file udcbench writes (``.<name>.<pid>.udcbench-tmp[<ext>]``).
TEMP_MARK = ".udcbench-tmp"
_TEMP = re.compile(r"^\.(?P<stem>.*)\.(?P<pid>\d+)" + re.escape(TEMP_MARK) + r"(\.[A-Za-z0-9]+)?$")


def temp_path(path: Path, suffix: str = "") -> Path:
    """A temporary name beside ``path``, unique to this process (shards and ranks never share one), short enough
    for any file system whatever the name's length (a long name is hashed), hidden from every reader, and
    ``suffix`` last (an image writer picks its format from it)."""
    path = Path(path)
    stem = path.name
    if len(stem.encode(errors="surrogateescape")) > 64:
        stem = hashlib.sha1(stem.encode(errors="surrogateescape")).hexdigest()[:16]
    return path.with_name(f".{stem}.{os.getpid()}{TEMP_MARK}{suffix}")


def remove_stale_temporaries(folder: Path, recursive: bool = True) -> int:
    """Delete the temporary files udcbench processes that no longer run left under ``folder`` (in it alone unless
    ``recursive``: a kill in the middle of a write); returns how many. Another running process's are kept."""
    removed = 0
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    for path in (folder.rglob if recursive else folder.glob)(f".*{TEMP_MARK}*"):
        match = _TEMP.match(path.name)
        if match and path.is_file() and not _alive(int(match["pid"])):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def write_atomic(path: Path, data: str | bytes) -> Path:
    """Write ``data`` to ``path`` (creating its folder); on any error the old file is kept and the temporary
    one removed. Text is UTF-8; a name that is not (a file name in another encoding) is written escaped."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode(errors="backslashreplace") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def open_reserved_array(path: Path, shape: tuple[int, ...], hint: str = "") -> Any:
    """A new uint8 .npy at ``path`` memory-mapped for writing, its blocks reserved on disk before any is written.

    An array written through a memory map on a full disk does not fail at the write: the kernel kills the process
    with a bus error (SIGBUS) when a page is first touched. Reserving the file's size first makes a full disk a
    one-line error naming the folder and the space needed (``hint`` says how to make room). A file system that
    cannot reserve (some network ones) is written unreserved."""
    import numpy as np

    path = Path(path)
    out, existed = None, path.exists()
    try:
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
        fd = os.open(path, os.O_RDWR)
        try:
            os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
        finally:
            os.close(fd)
    except OSError as exc:
        if out is not None and exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # cannot reserve: written unreserved
            return out
        del out
        if not existed:  # a file this call did not create is not this call's to remove
            path.unlink(missing_ok=True)
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise
        disk = os.statvfs(path.parent)
        needed, free = int(np.prod(shape)) / 1e6, disk.f_bavail * disk.f_frsize / 1e6
        raise UdcbenchError(f"not enough disk space in {path.parent}: {needed:,.1f} MB needed, {free:,.1f} MB free"
                            f"{'; ' + hint if hint else ''}") from None
    return out


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


def overlaps(out: Path, src: Path) -> bool:
    """Whether ``out`` is ``src``, lies inside it, or holds it."""
    out_r, src_r = Path(out).resolve(), Path(src).resolve()
    return out_r == src_r or out_r.is_relative_to(src_r) or src_r.is_relative_to(out_r)


def udcbench_manifest(folder: Path, name: str = "manifest.json") -> dict | None:
    """The manifest that marks ``folder`` as written by udcbench (it names a udcbench version), else None."""
    manifest = read_json(Path(folder) / name)
    return manifest if isinstance(manifest, dict) and "udcbench_version" in manifest else None


def remove_own_output(folder: Path, what: str, name: str = "manifest.json") -> None:
    """Delete ``folder`` only if udcbench wrote it (its manifest says so); any other folder is refused."""
    import shutil

    folder = Path(folder)
    if folder.is_symlink() or udcbench_manifest(folder, name) is None:
        raise UdcbenchError(f"refusing to delete {folder}: it holds no udcbench {name}, so it is not a udcbench "
                            f"{what}; choose a new or empty folder")
    shutil.rmtree(folder)


def walk_files(root: Path) -> Iterator[tuple[str, Path]]:
    """Every file under ``root`` as (relative POSIX path, path), sorted, hidden names left out. Symlinked folders
    are followed wherever they point (datasets whose split folders link elsewhere), each real folder once
    (a link loop ends there)."""
    root = Path(root)
    seen: set[tuple[int, int]] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        info = os.stat(folder)
        if (info.st_dev, info.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((info.st_dev, info.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(folder) / name
            if not name.startswith(".") and path.is_file():
                yield path.relative_to(root).as_posix(), path


def points_outside(path: Path, root: Path, linked: Iterable[Path] = ()) -> bool:
    """Whether ``path`` is a symlink whose target lies outside ``root`` and the folders ``root`` links to
    (``linked``): such a file is never copied into an output (a dataset from elsewhere could link to a private
    file)."""
    if not Path(path).is_symlink():
        return False
    target = Path(path).resolve()
    return not any(target.is_relative_to(Path(r).resolve()) for r in (root, *linked))


@contextmanager
def folder_lock(folder: Path, what: str = "folder") -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` while writing it: a ``.<name>.lock`` file beside it, locked with
    ``flock`` (released when the process ends, even when it is killed: no stale lock). A second writer is refused
    in one line naming the holder. Where ``flock`` does not exist (Windows) nothing is locked."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    path = folder.parent / f".{folder.name}.lock"
    try:  # never through a link: a lock file planted as a symlink in an archive would be written through
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as exc:
        raise UdcbenchError(f"cannot lock the {what} {folder}: {path} is a link or unreadable ({exc.strerror}); "
                            "remove it") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UdcbenchError(f"cannot lock the {what} {folder}: {path} is not a plain file; remove it")
    with os.fdopen(fd, "r+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise UdcbenchError(f"another udcbench is writing the {what} {folder} ({holder}); wait for it to end or "
                                "write elsewhere") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


#: The most memory the arrays of a ``.npz``/``.npy`` file read whole may declare (landmarks, predictions): 1 GB.
MAX_ARRAY_BYTES = 1 << 30


def declared_array_bytes(path: Path) -> int:
    """The bytes the arrays of a ``.npy`` or ``.npz`` file declare in their headers, read without loading them (a
    small file can declare gigabytes)."""
    import zipfile

    import numpy as np

    def one(f) -> int:
        version = np.lib.format.read_magic(f)
        readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in readers:
            raise ValueError(f"array format version {version} is not read here")
        shape, _, dtype = readers[version](f)
        return int(np.prod(shape, dtype=np.int64)) * dtype.itemsize

    path = Path(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            total = 0
            for name in archive.namelist():
                with archive.open(name) as f:
                    total += one(f)
            return total
    with open(path, "rb") as f:
        return one(f)


def check_array_file(path: Path, limit: int = MAX_ARRAY_BYTES) -> None:
    """Refuse, in one line, an array file whose declared arrays are over ``limit`` bytes, or whose headers do not
    read, before anything is loaded."""
    try:
        size = declared_array_bytes(path)
    except (OSError, ValueError, EOFError) as exc:
        raise UdcbenchError(f"{path}: not a numpy array file ({exc})") from None
    if size > limit:
        raise UdcbenchError(f"{path} declares {size / 2**30:.1f} GB of arrays, over the limit of "
                            f"{limit / 2**30:.0f} GB (udcbench.files.MAX_ARRAY_BYTES): refused before loading")


def printable(text: str) -> str:
    """``text`` as valid UTF-8: a file name in another encoding (Python keeps its bytes as surrogates) with those
    bytes escaped (``caf\\xe9.png``), for records, exports and messages."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


def check_name(value: Any, what: str) -> str:
    """``value`` if it is a plain name (letters, digits, ``. _ + -``, not starting with a dot), never a path;
    a one-line error naming ``what`` otherwise. Names read from recipes, manifests and label files go
    through here before they become part of a path."""
    if not isinstance(value, str) or not _NAME.fullmatch(value) or ".." in value:
        raise UdcbenchError(f"{what}: {value!r} is not a plain name (letters, digits and . _ + -, no folders)")
    return value
