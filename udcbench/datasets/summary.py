"""Counts per split and class, for ``udcbench info`` and dataset cards."""

from __future__ import annotations

from typing import Any

from udcbench.datasets.base import DatasetAdapter, class_counts
from udcbench.errors import UnreadableImageError
from udcbench.progress import track


def unreadable_images(adapter: DatasetAdapter) -> list[dict[str, str]]:
    """Every record whose image does not decode (missing, empty, corrupt, truncated), with the reason."""
    bad = []
    for record in track(adapter.records(), description="decoding every image"):
        try:
            adapter.load_image(record)
        except UnreadableImageError as exc:
            bad.append({"id": record.id, "split": record.split, "file": str(exc.path), "error": exc.reason})
    return bad


def summarize(adapter: DatasetAdapter, check_images: bool = False) -> dict[str, Any]:
    """A JSON-ready summary: counts per split and class, absent splits, scan problems and (``check_images``)
    the images that do not decode."""
    splits = adapter.splits()
    counts = {split: class_counts(adapter.records(split), adapter.num_classes) for split in splits}
    unreadable = unreadable_images(adapter) if check_images else None
    problems = list(adapter.problems)
    if unreadable:
        first = unreadable[0]
        problems.append(f"{len(unreadable)} images do not decode, e.g. {first['file']}: {first['error']}")
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
        "problems": problems,
        "unreadable": unreadable,
    }
