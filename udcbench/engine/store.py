"""The results store: one SQLite file across runs (safe when several runs finish at once)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

COLUMNS = (
    "run_id", "kind", "method", "backbone", "init", "preset", "input_size", "dataset", "condition", "test_split",
    "seed", "accuracy", "accuracy_last", "mean_class_accuracy", "macro_f1", "best_epoch", "epochs", "minutes",
    "device", "created", "run_dir",
)
_SCHEMA = f"""CREATE TABLE IF NOT EXISTS results (
    {', '.join(c + ' PRIMARY KEY' if c == 'run_id' else c for c in COLUMNS)}, record TEXT)"""


def connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=60)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(_SCHEMA)
    return db


def row_of(record: dict[str, Any]) -> dict[str, Any]:
    """A run record's store columns: test accuracy (and MCA, macro-F1) at the chosen epoch and at the last."""
    best = record.get("test_at_best") or {}
    last = record.get("test_at_last") or {}
    scores = {"accuracy": best.get("accuracy"), "accuracy_last": last.get("accuracy"),
              "mean_class_accuracy": best.get("mean_class_accuracy"), "macro_f1": best.get("macro_f1")}
    return {column: scores[column] if column in scores else record.get(column) for column in COLUMNS}


def save_result(path: Path, record: dict[str, Any]) -> None:
    """Insert or replace one result (keyed by ``run_id``) in a single transaction."""
    row = row_of(record)
    with connect(path) as db:
        placeholders = ", ".join("?" * (len(COLUMNS) + 1))
        db.execute(
            f"INSERT OR REPLACE INTO results ({', '.join(COLUMNS)}, record) VALUES ({placeholders})",
            [row.get(c) for c in COLUMNS] + [json.dumps(record, default=str)],
        )
    db.close()


def load_results(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    db = connect(path)
    try:
        rows = db.execute(f"SELECT {', '.join(COLUMNS)}, record FROM results ORDER BY created").fetchall()
    finally:
        db.close()
    return [{**dict(zip(COLUMNS, row[:-1])), "record": json.loads(row[-1])} for row in rows]
