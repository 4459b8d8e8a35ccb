"""The results store: one SQLite file across runs (safe when several runs finish at once).

The run folders are the source of truth: a damaged store is set aside and rebuilt from them
(:func:`rebuild`, ``udcbench runs --rebuild``).
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

from udcbench.files import read_json
from udcbench.progress import stderr

COLUMNS = (
    "run_id", "kind", "method", "backbone", "init", "preset", "input_size", "dataset", "condition", "test_split",
    "seed", "accuracy", "accuracy_last", "mean_class_accuracy", "macro_f1", "best_epoch", "epochs", "minutes",
    "device", "created", "run_dir",
)
_SCHEMA = f"""CREATE TABLE IF NOT EXISTS results (
    {', '.join(c + ' PRIMARY KEY' if c == 'run_id' else c for c in COLUMNS)}, record TEXT)"""


def _open(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=60)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(_SCHEMA)
        db.execute("SELECT count(*) FROM results").fetchone()
    except sqlite3.DatabaseError:
        db.close()
        raise
    return db


def connect(path: Path) -> sqlite3.Connection:
    """The store, created when missing; a damaged one is set aside and rebuilt from the run folders."""
    try:
        return _open(path)
    except sqlite3.DatabaseError as exc:
        rebuild(path, reason=str(exc))
        return _open(path)


def rebuild(path: Path, reason: str | None = None) -> int:
    """Set ``path`` aside (``results.sqlite.damaged-<time>``) and rebuild the store from the run folders beside
    it (their results.json and eval-*.json: the source of truth); returns the number of records."""
    path = Path(path)
    if path.exists():
        aside = path.with_name(f"{path.name}.damaged-{datetime.now():%Y%m%d-%H%M%S}")
        path.replace(aside)
        for extra in ("-wal", "-shm"):
            Path(f"{path}{extra}").unlink(missing_ok=True)
        stderr.print(f"[yellow]warning:[/] {path} " + (f"is damaged ({reason}); " if reason else "")
                     + f"set aside as {aside.name}, rebuilt from the run folders", highlight=False)
    db = _open(path)
    files = sorted([*path.parent.glob("*/*/results.json"), *path.parent.glob("*/*/eval-*.json")])
    records = [r for r in map(read_json, files) if isinstance(r, dict) and r.get("run_id")]
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
    """Every record of the store, oldest first; a row whose record does not parse is skipped with a warning."""
    if not path.is_file():
        return []
    db = connect(path)
    try:
        rows = db.execute(f"SELECT {', '.join(COLUMNS)}, record FROM results ORDER BY created").fetchall()
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
        results.append({**dict(zip(COLUMNS, row[:-1])), "record": record})
    return results
