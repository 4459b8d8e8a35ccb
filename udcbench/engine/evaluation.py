"""Evaluation: predictions and metrics of a model, reloading a trained run (its model, configuration and
record; used by the figures), and evaluating a run on another dataset (``udcbench eval``)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch import nn

from baselines import distributed
from baselines.randomness import image_keys
from udcbench.checkpoints import load_checkpoint
from udcbench.config import TrainConfig
from udcbench.datasets.base import DatasetAdapter
from udcbench.engine.augment import eval_input
from udcbench.engine.data import drop_unreadable, load_images
from udcbench.engine.metrics import classification_metrics
from udcbench.engine.records import dataset_condition
from udcbench.engine.runtime import Runtime, runtime
from udcbench.engine.store import save_result
from udcbench.errors import UdcbenchError
from udcbench.files import read_json, write_json
from udcbench.methods import create_method
from udcbench.progress import stderr


@torch.no_grad()
def predict(model: nn.Module, images: np.ndarray, config: TrainConfig, rt: Runtime,
            labels: np.ndarray | None = None, features: bool = False, shard: bool = True) -> tuple[np.ndarray, float]:
    """Arg-max predictions for uint8 N x S x S x 3 images (or, with ``features``, the penultimate features), and
    images/s. Batches are normalised on the device as they go (the set is never held as floats). Under DDP each
    rank predicts its contiguous share and the shares are gathered (``shard=False``: this rank predicts all, e.g.
    rank 0 drawing a figure). Labels are passed in only to oracle models (``uses_labels_at_eval``, LRDif's stage
    1); sampling models draw from a fixed seed."""
    model.eval()
    torch.manual_seed(config.seed)
    oracle = getattr(model, "uses_labels_at_eval", False)
    lo, hi = 0, len(images)
    if shard and distributed.active():
        bounds = np.linspace(0, len(images), distributed.world_size() + 1).round().astype(int)
        lo, hi = int(bounds[distributed.rank()]), int(bounds[distributed.rank() + 1])
    outputs = []
    start = time.perf_counter()
    for i in range(lo, hi, config.eval_batch_size):
        j = min(i + config.eval_batch_size, hi)
        chunk = torch.from_numpy(np.array(images[i:j]))  # a copy: the cache is read-only
        x = eval_input(chunk.to(rt.device), config)
        # each image's sampling noise from its own position: the same on any rank, batch size or device
        model.sample_keys = image_keys(config.seed, torch.arange(i, j, device=rt.device))
        extra = (torch.from_numpy(labels[i:j]).to(rt.device),) if oracle else ()
        with rt.autocast(config.amp):
            out = (model.embed if features else model)(x, *extra)
        outputs.append(out.float() if features else out.float().argmax(dim=1))
    model.sample_keys = None
    mine = torch.cat(outputs) if outputs else torch.zeros((0,), device=rt.device)
    gathered = distributed.all_gather_cat(mine) if shard else mine
    result = gathered.cpu().numpy()
    seconds = time.perf_counter() - start
    return result, (hi - lo) / max(seconds, 1e-9)


def evaluate(model, images, labels, config, rt, num_classes, keep_predictions: bool = False) -> dict:
    """The metrics of ``model`` on ``images``; with ``keep_predictions`` also the per-image ``predictions`` (for
    ``udcbench compare``'s paired bootstrap; never part of a record)."""
    preds, speed = predict(model, images, config, rt, labels)
    metrics = {**classification_metrics(labels, preds, num_classes), "images_per_second": speed}
    return {**metrics, "predictions": np.asarray(preds)} if keep_predictions else metrics


@dataclass
class TrainedRun:
    model: nn.Module
    config: TrainConfig
    record: dict  # the run's results.json ({} while unfinished)
    state: dict  # the checkpoint
    num_classes: int


def load_trained(run_dir: Path, adapter: DatasetAdapter, rt: Runtime, checkpoint: str = "best") -> TrainedRun:
    """A trained run's model (on ``rt.device``), refusing a dataset with more classes than it predicts."""
    path = Path(run_dir) / f"{checkpoint}.pt"
    if not path.is_file():
        raise UdcbenchError(f"{run_dir} has no {checkpoint}.pt (is it a udcbench run folder?)")
    state = load_checkpoint(path, rt.device)
    config = TrainConfig.from_json(state["config"])
    trained = read_json(Path(run_dir) / "results.json") or {}  # {} while unfinished, or torn by a full disk
    num_classes = len(trained.get("classes", [])) or adapter.num_classes
    if adapter.num_classes > num_classes:
        raise UdcbenchError(f"the run predicts {num_classes} classes; {adapter.describe()} has {adapter.num_classes}")
    model = rt.place(create_method(config.method, num_classes, config))
    model.load_state_dict(state["model"])
    return TrainedRun(model, config, trained, state, num_classes)


def test_records(adapter: DatasetAdapter) -> tuple[str, list]:
    """The adapter's test split (its valid split where it has no test split): its name and records."""
    split = "test" if "test" in adapter.splits() else "valid"
    return split, adapter.records(split)


def load_test_split(adapter: DatasetAdapter, config: TrainConfig) -> tuple[str, list, torch.Tensor]:
    """The adapter's test split (:func:`test_records`), loaded at the run's size."""
    test_split, records = test_records(adapter)
    widths = []
    images = load_images(adapter, records, config.input_size, f"loading {test_split}", sizes=widths)
    records, images, _, unreadable = drop_unreadable(records, images, widths)
    if unreadable:
        stderr.print(f"[yellow]warning:[/] {len(unreadable)} image(s) do not decode and were left out, e.g. "
                     f"{unreadable[0]}", highlight=False)
    return test_split, records, images


def evaluate_run(run_dir: Path, adapter: DatasetAdapter, store: Path | None = None, checkpoint: str = "best",
                 device: str | None = None) -> dict:
    """Evaluate a trained run on another dataset's test split (e.g. trained clean, tested on UDC)."""
    run_dir = Path(run_dir)
    rt = runtime(device)
    trained_run = load_trained(run_dir, adapter, rt, checkpoint)
    model, config, trained, state = trained_run.model, trained_run.config, trained_run.record, trained_run.state
    test_split, records, images = load_test_split(adapter, config)
    metrics = evaluate(model, images, np.array([r.label for r in records]), config, rt, trained_run.num_classes)
    condition, manifest_sha = dataset_condition(adapter)
    record = {
        **{k: trained.get(k) for k in ("method", "method_title", "backbone", "init", "init_task", "weights_sha256",
                                       "preset", "input_size", "seed")},
        "run_id": f"{run_dir.resolve()}::eval::{adapter.name}:{condition}:{adapter.root}",
        "kind": "eval",
        "trained_on": {k: trained.get(k) for k in ("dataset", "condition", "data_root")},
        "dataset": adapter.origin,
        "adapter": adapter.name,
        "data_root": str(adapter.root) if adapter.root else None,
        "condition": condition,
        "dataset_manifest_sha256": manifest_sha,
        "test_split": test_split,
        "checkpoint": checkpoint,
        "best_epoch": state.get("epoch", 0) + 1,
        "epochs": config.epochs,
        "test_at_best": metrics,
        "test_at_last": metrics,
        "device": str(rt.device),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run_dir": str(run_dir),
    }
    out = run_dir / f"eval-{adapter.name}-{condition}.json"
    write_json(out, record)
    if store is not None:
        save_result(store, record)
    return record
