"""Fixture datasets written by the tests themselves (tiny copies of the official layouts)."""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest

os.environ.setdefault("UDCBENCH_QUIET", "1")
# pytest-xdist's workers inherit COLUMNS=80, which Rich's consoles would fix as their width when udcbench is imported;
# the tests set the width per command (CliRunner's env), as a terminal would
os.environ.pop("COLUMNS", None)


def _share_the_cores() -> None:
    """Under pytest-xdist each worker takes its share of the cores for torch's threads (two workers of two threads
    each on two cores run slower than one)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        torch.set_num_threads(max(1, cores // workers))


_share_the_cores()

REPO = Path(__file__).resolve().parents[1]
FERPLUS_REAL = REPO.parent / "shared" / "data" / "ferplus"
needs_ferplus = pytest.mark.skipif(not (FERPLUS_REAL / "FER2013Valid").is_dir(), reason="real FERPlus data absent")


def in_default_workspace(mp: pytest.MonkeyPatch, root: Path) -> None:
    """Run from ``root`` with the workspace's default folders (no UDCBENCH_* overrides)."""
    from udcbench.workspace import WORKSPACE_VARS

    mp.chdir(root)
    for var in WORKSPACE_VARS:
        mp.delenv(var, raising=False)


@contextmanager
def module_folder(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[Path]:
    """A module fixture's folder, removed when the module's tests are done (its runs weigh gigabytes)."""
    root = tmp_path_factory.mktemp(name)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def write_png(path: Path, seed: int, size=(48, 48), gray: bool = False) -> None:
    rng = np.random.default_rng(seed)
    shape = size if gray else (*size, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), rng.integers(0, 255, shape, dtype=np.uint8))


def tree_digest(root: Path) -> str:
    """Hash of every file's path and bytes under root (to prove a folder was not modified)."""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        h.update(str(path.relative_to(root)).encode())
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()


@pytest.fixture
def rafdb_root(tmp_path: Path) -> Path:
    """RAF-DB basic: 7 train and 3 test images, one per label id 1-7 in train."""
    root = tmp_path / "rafdb"
    lines = []
    for i, label in enumerate([1, 2, 3, 4, 5, 6, 7], 1):
        lines.append(f"train_{i:05d}.jpg {label}")
    for i, label in enumerate([4, 7, 1], 1):
        lines.append(f"test_{i:04d}.jpg {label}")
    (root / "EmoLabel").mkdir(parents=True)
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    for n, line in enumerate(lines):
        stem = line.split()[0][:-4]
        write_png(root / "Image" / "aligned" / f"{stem}_aligned.jpg", n, (100, 100))
        write_png(root / "Image" / "original" / f"{stem}.jpg", n, (120, 90))
    return root


FERPLUS_ROWS = {
    # name: votes (neutral, happiness, surprise, sadness, anger, disgust, fear, contempt, unknown, NF)
    "train": {
        "fer0000000.png": [8, 1, 0, 1, 0, 0, 0, 0, 0, 0],  # neutral
        "fer0000001.png": [0, 10, 0, 0, 0, 0, 0, 0, 0, 0],  # happiness
        "fer0000002.png": [4, 4, 0, 0, 0, 0, 0, 0, 2, 0],  # no majority: dropped
        "fer0000003.png": [0, 0, 0, 0, 0, 0, 0, 0, 0, 10],  # not a face: dropped
        "fer0000004.png": [2, 0, 0, 0, 0, 0, 0, 6, 2, 0],  # contempt
        "fer0000005.png": [0, 0, 7, 0, 0, 0, 3, 0, 0, 0],  # surprise
    },
    "valid": {
        "fer0000006.png": [0, 0, 0, 6, 2, 1, 1, 0, 0, 0],  # sadness
        "fer0000007.png": [0, 0, 0, 0, 9, 1, 0, 0, 0, 0],  # anger
    },
}


@pytest.fixture
def ferplus_root(tmp_path: Path) -> Path:
    """FERPlus PNG layout with per-folder label.csv and fer2013new.csv; no test folder."""
    root = tmp_path / "ferplus"
    folders = {"train": "FER2013Train", "valid": "FER2013Valid"}
    usage = {"train": "Training", "valid": "PublicTest"}
    new_rows = [["Usage", "Image name", "neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear",
                 "contempt", "unknown", "NF"]]
    for split, rows in FERPLUS_ROWS.items():
        folder = root / folders[split]
        folder.mkdir(parents=True)
        with (folder / "label.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            for name, votes in rows.items():
                writer.writerow([name, "(0, 0, 48, 48)", *votes])
                write_png(folder / name, int(name[3:10]), gray=True)
                new_rows.append([usage[split], name, *votes])
    new_rows.append(["PrivateTest", "fer0000008.png", 10, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    with (root / "fer2013new.csv").open("w", newline="") as f:
        csv.writer(f).writerows(new_rows)
    return root


def kdef_names(subjects=("F01", "M06", "F07"), sessions="AB", expressions=("AF", "AN", "DI", "HA", "NE", "SA", "SU"),
               angles=("S", "HL", "FR")):
    for subject in subjects:
        for session in sessions:
            for expression in expressions:
                for angle in angles:
                    yield f"{session}{subject}", f"{session}{subject}{expression}{angle}.JPG"


@pytest.fixture
def kdef_root(tmp_path: Path) -> Path:
    """KDEF release layout with three subjects (F07 is a test subject in the packaged split)."""
    root = tmp_path / "kdef_release"
    for i, (folder, name) in enumerate(kdef_names()):
        write_png(root / "KDEF" / folder / name, i, (76, 56))
    return root


def train_steps(model, batch, steps: int = 12, lr: float = 1e-3, params=None) -> list:
    """``steps`` Adam steps of ``model.training_step`` on one batch, the same random draws each step (dropout,
    pairing, stochastic depth), so that only the weights change; returns the losses and the last output."""
    import torch

    optimizer = torch.optim.Adam(params if params is not None else model.parameters(), lr=lr)
    losses, out = [], None
    for _ in range(steps):
        model.train()
        torch.manual_seed(1)
        out = model.training_step(batch, 0)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    return losses, out
