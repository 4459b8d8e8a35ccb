"""The results store: one SQLite file across runs (safe when several runs finish at once).

The run folders are the source of truth: a damaged store (empty, another program's, not a database) is set aside
and rebuilt from them (:func:`rebuild`, ``udcbench runs --rebuild``); a full disk or read-only media leave it as
it is, and a listing reads it read-only.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

from udcbench.errors import UdcbenchError
from udcbench.files import check_name, read_json
from udcbench.progress import stderr

COLUMNS = (
    "run_id", "kind", "method", "backbone", "init", "preset", "input_size", "dataset", "condition", "test_split",
    "seed", "accuracy", "accuracy_last", "mean_class_accuracy", "macro_f1", "best_epoch", "epochs", "minutes",
    "device", "created", "run_dir",
)
_SCHEMA = f"""CREATE TABLE IF NOT EXISTS results (
    {', '.join(c + ' PRIMARY KEY' if c == 'run_id' else c for c in COLUMNS)}, record TEXT)"""


#: SQLite's result codes for a damaged file (SQLITE_CORRUPT, SQLITE_NOTADB); any other error (a full disk,
#: read-only media, a lock) leaves the store as it is.
_DAMAGE_CODES = (11, 26)


class StoreDamage(sqlite3.DatabaseError):
    """The file is not a udcbench store: empty, another program's database, or not a database."""


def _is_damage(exc: sqlite3.DatabaseError) -> bool:
    if isinstance(exc, StoreDamage):
        return True
    code = getattr(exc, "sqlite_errorcode", None)  # Python >= 3.11
    if code is not None:
        return code in _DAMAGE_CODES
    return any(s in str(exc) for s in ("not a database", "malformed"))


def _check_schema(db: sqlite3.Connection, path: Path) -> None:
    columns = {row[1] for row in db.execute("PRAGMA table_info(results)")}
    if not columns:
        raise StoreDamage(f"{path} holds no results table" + (" (an empty file)" if path.stat().st_size == 0 else ""))
    if not {*COLUMNS, "record"} <= columns:
        raise StoreDamage(f"{path} has another program's results table (columns {sorted(columns)})")


def _open(path: Path) -> sqlite3.Connection:
    """The store for writing, created when missing; raises :class:`StoreDamage` for a file that is not one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    existed = path.is_file() and path.stat().st_size > 0
    if path.is_file() and not existed:
        raise StoreDamage(f"{path} is an empty file")
    db = sqlite3.connect(path, timeout=60)
    try:
        if existed:
            _check_schema(db, path)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(_SCHEMA)
    except sqlite3.DatabaseError:
        db.close()
        raise
    return db


def _open_read(path: Path) -> sqlite3.Connection:
    """The store read-only (a listing never writes; read-only media can be read)."""
    if path.stat().st_size == 0:
        raise StoreDamage(f"{path} is an empty file")
    uri = path.resolve().as_uri()
    try:
        db = sqlite3.connect(uri + "?mode=ro", uri=True, timeout=60)
        _check_schema(db, path)
    except sqlite3.OperationalError:  # a WAL store on media where its -shm file cannot be made
        db = sqlite3.connect(uri + "?immutable=1", uri=True, timeout=60)
        _check_schema(db, path)
    return db


def _unusable(path: Path, exc: sqlite3.DatabaseError) -> UdcbenchError:
    return UdcbenchError(f"the results store {path} cannot be used: {exc} (left as it is; free space or make it "
                         "writable, then run again)")


def connect(path: Path) -> sqlite3.Connection:
    """The store for writing, created when missing; a damaged one (empty, foreign, not a database) is set aside
    and rebuilt from the run folders; any other error (a full disk, read-only media) is one line and leaves the
    store as it is."""
    try:
        return _open(path)
    except sqlite3.DatabaseError as exc:
        if not _is_damage(exc):
            raise _unusable(path, exc) from None
        rebuild(path, reason=str(exc))
        return _open(path)


def check_store(path: Path) -> None:
    """Before a run trains: the store it will write to opens (rebuilt first when damaged), so that a store
    problem is said before the training, not after it."""
    connect(Path(path)).close()


#: The record fields that later become parts of file names (cards, figures, tables): plain names only.
NAME_FIELDS = ("method", "dataset", "condition", "preset")
#: The store's score columns: shares in [0, 1].
SCORES = ("accuracy", "accuracy_last", "mean_class_accuracy", "macro_f1")


def _plain(record: dict[str, Any], source: Path | str) -> bool:
    """Whether a record's names are plain names; one that is not is left out with a warning (a crafted record
    never reaches a path)."""
    try:
        for field in NAME_FIELDS:
            if record.get(field) is not None:
                check_name(record[field], f"{source}: {field}")
    except UdcbenchError as exc:
        stderr.print(f"[yellow]warning:[/] skipped a record: {exc}", highlight=False)
        return False
    return True


def _sound(record: dict[str, Any], source: Path | str) -> bool:
    """Whether a record's scores are shares in [0, 1] (or absent); one with NaN, an infinity or a share out of range
    is left out with a warning naming the field and value, never dropped silently from a cell or taken as given."""
    for field, value in row_of(record).items():
        if field in SCORES and value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1):
            stderr.print(f"[yellow]warning:[/] skipped a record: {source}: {field} is {value!r}, not a share in "
                         "[0, 1]", highlight=False)
            return False
    return True


def _records_in_folders(root: Path) -> list[dict[str, Any]]:
    files = sorted([*root.glob("*/*/results.json"), *root.glob("*/*/eval-*.json"), *root.glob("*/*/robustness-*.json")])
    return [r for f, r in zip(files, map(read_json, files))
            if isinstance(r, dict) and r.get("run_id") and _plain(r, f) and _sound(r, f)]


def rebuild(path: Path, reason: str | None = None) -> int:
    """Set ``path`` aside (``results.sqlite.damaged-<time>``) and rebuild the store from the run folders beside
    it (their results.json, eval-*.json and robustness-*.json: the source of truth); returns the number of records."""
    path = Path(path)
    if path.exists():
        aside = path.with_name(f"{path.name}.damaged-{datetime.now():%Y%m%d-%H%M%S}")
        path.replace(aside)
        for extra in ("-wal", "-shm"):
            Path(f"{path}{extra}").unlink(missing_ok=True)
        stderr.print(f"[yellow]warning:[/] {path} " + (f"is damaged ({reason}); " if reason else "")
                     + f"set aside as {aside.name}, rebuilt from the run folders", highlight=False)
    db = _open(path)
    records = _records_in_folders(path.parent)
    try:
        with db:
            for record in records:
                _insert(db, record)
    finally:
        db.close()
    return len(records)


def _insert(db: sqlite3.Connection, record: dict[str, Any]) -> None:
    row = row_of(record)
    placeholders = ", ".join("?" * (len(COLUMNS) + 1))
    db.execute(f"INSERT OR REPLACE INTO results ({', '.join(COLUMNS)}, record) VALUES ({placeholders})",
               [row.get(c) for c in COLUMNS] + [json.dumps(record, default=str)])


def row_of(record: dict[str, Any]) -> dict[str, Any]:
    """A run record's store columns: test accuracy (and MCA, macro-F1) at the chosen epoch and at the last."""
    best = record.get("test_at_best") or {}
    last = record.get("test_at_last") or {}
    scores = {"accuracy": best.get("accuracy"), "accuracy_last": last.get("accuracy"),
              "mean_class_accuracy": best.get("mean_class_accuracy"), "macro_f1": best.get("macro_f1")}
    return {column: scores[column] if column in scores else record.get(column) for column in COLUMNS}


def save_result(path: Path, record: dict[str, Any]) -> None:
    """Insert or replace one result (keyed by ``run_id``) in a single transaction."""
    db = connect(path)
    try:
        with db:
            _insert(db, record)
    finally:
        db.close()


def load_results(path: Path) -> list[dict[str, Any]]:
    """Every record of the store, oldest first, read without writing; a row whose record does not parse is
    skipped with a warning. A damaged store is rebuilt from the run folders (or, where it cannot be written,
    they are read directly)."""
    path = Path(path)
    if not path.is_file():
        return []
    try:
        db = _open_read(path)
    except sqlite3.DatabaseError as exc:
        if not _is_damage(exc):
            raise _unusable(path, exc) from None
        try:
            rebuild(path, reason=str(exc))
            db = _open_read(path)
        except (OSError, sqlite3.OperationalError):
            stderr.print(f"[yellow]warning:[/] {path} is damaged ({exc}) and cannot be rebuilt here: read the "
                         "run folders instead", highlight=False)
            records = sorted(_records_in_folders(path.parent), key=lambda r: str(r.get("created")))
            return [{**row_of(r), "record": r} for r in records]
    try:
        rows = db.execute(f"SELECT {', '.join(COLUMNS)}, record FROM results ORDER BY created").fetchall()
    except sqlite3.DatabaseError as exc:
        raise _unusable(path, exc) from None
    finally:
        db.close()
    results = []
    for row in rows:
        try:
            record = json.loads(row[-1])
        except (TypeError, ValueError):
            stderr.print(f"[yellow]warning:[/] {path}: skipped the unreadable record of {row[0]} "
                         "('udcbench runs --rebuild' rebuilds the store from the run folders)", highlight=False)
            continue
        if _plain(record, path) and _sound(record, path):
            results.append(_rerooted({**dict(zip(COLUMNS, row[:-1])), "record": record}, path.parent))
    return results


def _rerooted(row: dict[str, Any], runs: Path) -> dict[str, Any]:
    """A row whose run folder is named where the store now lies: a run folder is always ``<runs>/<data
    folder>/<run name>`` (``engine.runs.run_folder``), so a moved or copied workspace finds its runs (the record
    kept the absolute folder it was trained in); weights inside the workspace it was trained in named relative to
    that workspace."""
    recorded = row.get("run_dir")
    if not recorded:
        return row
    row = {**row, "record": dict(row["record"])}
    parents = Path(recorded).parents
    workspace = parents[2] if len(parents) > 2 else None  # <workspace>/<runs>/<data folder>/<run name>
    init = row.get("init")
    if workspace is not None and init and Path(init).is_absolute() and Path(init).is_relative_to(workspace):
        # weights inside the workspace are named relative to it: tables, cards and reports leak no machine path
        row["init"] = row["record"]["init"] = Path(init).relative_to(workspace).as_posix()
    here = runs / Path(recorded).parent.name / Path(recorded).name
    if here != Path(recorded) and here.is_dir():
        row["run_dir"] = row["record"]["run_dir"] = str(here)
    return row
