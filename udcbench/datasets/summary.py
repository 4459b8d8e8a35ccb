"""Counts per split and class, for ``udcbench info`` and dataset cards."""

from __future__ import annotations

from typing import Any

from udcbench.datasets.base import DatasetAdapter, class_counts


def summarize(adapter: DatasetAdapter) -> dict[str, Any]:
    """A JSON-ready summary: counts per split and class, absent splits and scan problems."""
    splits = adapter.splits()
    counts = {split: class_counts(adapter.records(split), adapter.num_classes) for split in splits}
    return {
        "dataset": adapter.name,
        "title": adapter.spec.title,
        "root": str(adapter.root) if adapter.root is not None else None,
        "options": adapter.options,
        "classes": list(adapter.classes),
        "splits": {split: dict(zip(adapter.classes, c)) for split, c in counts.items()},
        "split_totals": {split: sum(c) for split, c in counts.items()},
        "total": sum(sum(c) for c in counts.values()),
        "absent_splits": [s for s in adapter.spec.splits if s not in splits],
        "problems": list(adapter.problems),
    }
