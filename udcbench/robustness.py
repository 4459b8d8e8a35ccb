"""UDC-C: how much a trained FER model loses behind display panels, scored as ImageNet-C scores corruptions.

A sweep evaluates one model on a clean test split and on that split degraded by every panel at every severity
(:mod:`degradations.severity`). Each degraded test set is synthesised once, exactly as ``udcbench synth`` makes
it (the same per-image seeds, the same face-size rule, JPEG round trip where the source is JPEG), resized to the
model's input size and kept in a cache (``<cache>/robustness/``: uint8, memory-mapped) keyed by the recipe's
digest, the source images' digest, the seed and the size; every later model of that input size reuses it.

Scores (Hendrycks & Dietterich, ICLR 2019): per panel p the corruption error
``CE_p = sum_s E(p, s) / sum_s E_ref(p, s)`` and the relative corruption error
``rCE_p = sum_s (E(p, s) - E_clean) / sum_s (E_ref(p, s) - E_ref_clean)``, where E is the top-1 error and ref the
reference model (the ResNet-18 control trained clean on the same dataset and budget); mCE and relative mCE are
their means over panels, in percent (100 = as robust as the reference).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from degradations import Recipe, load_recipe
from degradations.severity import LEVELS, severity_recipe
from udcbench.datasets.base import DatasetAdapter, Record
from udcbench.errors import UdcbenchError, UnreadableImageError
from udcbench.files import open_reserved_array, read_json
from udcbench.progress import progress_bar, stderr
from udcbench.workspace import CACHE_HINT

DEFAULT_PANELS = ("toled", "poled", "lowlight")
#: The reference model of CE and mCE: the plain ResNet-18 control (ImageNet-C's AlexNet), trained clean.
REFERENCE_METHOD = "resnet18"
#: Bump when the cached arrays change meaning (the synthesis, the resampling): every cache entry is made again.
CACHE_VERSION = 1
CACHE_FOLDER = "robustness"
#: Images per synthesis job (one worker's share at a time).
JOB_IMAGES = 256


# -- what is swept ----------------------------------------------------------------------------------------
def parse_severities(text: str) -> tuple[int, ...]:
    """``1-5``, ``1,3,5`` or ``3`` as sorted levels."""
    levels: set[int] = set()
    try:
        for part in str(text).split(","):
            low, sep, high = part.strip().partition("-")
            levels.update(range(int(low), int(high) + 1) if sep else [int(low)])
    except ValueError:
        raise UdcbenchError(f"--severities takes levels such as 1-5 or 1,3,5, not '{text}'") from None
    if not levels or not levels <= set(LEVELS):
        raise UdcbenchError(f"--severities: levels run from {LEVELS[0]} to {LEVELS[-1]}, got '{text}'")
    return tuple(sorted(levels))


def load_panels(panels: list[str] | tuple[str, ...]) -> list[Recipe]:
    """Each panel's recipe (a preset name or a recipe file); names must differ (they label the cells)."""
    from degradations import RecipeError

    recipes = []
    for panel in panels:
        try:
            recipes.append(load_recipe(panel.strip()))
        except RecipeError as exc:
            raise UdcbenchError(f"--panels: {exc}") from None
    names = [r.name for r in recipes]
    if len(set(names)) != len(names):
        raise UdcbenchError(f"--panels: two recipes share a name ({', '.join(names)}); names label the results")
    return recipes


# -- the degraded test sets -------------------------------------------------------------------------------
def source_digest(adapter: DatasetAdapter, records: list[Record]) -> str:
    """What the clean test images are: the adapter and its options, and each record's id and file bytes (drawn
    datasets: their options and ids). A moved dataset keeps its digest; a changed image changes it."""
    h = hashlib.sha256(json.dumps([adapter.name, adapter.origin, sorted(map(str, adapter.options.items())),
                                   adapter.manifest_sha256]).encode())
    for record in records:
        h.update(f"{record.id}\0".encode(errors="surrogateescape"))
        if record.path is not None and record.path.is_file():
            h.update(hashlib.sha256(record.path.read_bytes()).digest())
    return h.hexdigest()


def image_name(adapter: DatasetAdapter, record: Record) -> str:
    """The name ``synth`` seeds an image's parameters with: its path under the dataset folder (else its id)."""
    if record.path is not None and adapter.root is not None and record.path.is_relative_to(adapter.root):
        return record.path.relative_to(adapter.root).as_posix()
    return record.id


def cache_path(cache_dir: Path, adapter: DatasetAdapter, recipe: Recipe, digest: str, seed: int, size: int,
               draws: str = "") -> Path:
    key = hashlib.sha256(json.dumps([CACHE_VERSION, recipe.digest, digest, seed, size, draws]).encode()).hexdigest()
    return Path(cache_dir) / CACHE_FOLDER / f"{adapter.origin}-{recipe.name}-{size}px-{key[:24]}.npy"


def _degrade_job(name: str, root: str | None, options: dict, records: list[Record], recipe: Recipe, seed: int,
                 size: int, path: str, start: int, device: str, draws: str) -> int:
    """Degrade ``records`` as synth does and write them, resized to ``size``, into rows ``start...`` of the
    memory-mapped array at ``path``; each image's random parameters from the recipe digest ``draws``."""
    import torch

    from degradations.functional import to_uint8
    from udcbench.datasets import create_dataset
    from udcbench.engine.data import resize_image
    from udcbench.images import decode, encode
    from udcbench.synthesis import (
        batches_within,
        check_image_memory,
        degradation_module,
        image_bytes,
        image_seed,
        memory_budget,
    )

    if device == "cpu":
        torch.set_num_threads(1)  # one image stream per process, as synth
    adapter = create_dataset(name, Path(root) if root else None, **options)
    module = degradation_module(recipe, None)
    out = np.load(path, mmap_mode="r+")
    groups: dict[tuple[int, int], list[tuple[int, Record, np.ndarray]]] = {}
    for i, record in enumerate(records):
        image = adapter.load_image(record)
        groups.setdefault(image.shape[:2], []).append((i, record, image))
    quality = int(recipe.raw.get("jpeg_quality", 95))
    budget = memory_budget()
    batches = []
    for (height, width), items in groups.items():  # batches within synth's memory budget, as synth makes them
        check_image_memory(module, recipe, adapter.origin, width, height)
        per_image = image_bytes(module, recipe.psf_scale(adapter.origin, width), height, width)
        batches += [(width, [items[i] for i in part])
                    for part in batches_within(list(range(len(items))), per_image, budget)]
    for width, items in batches:
        x = torch.from_numpy(np.stack([im for _, _, im in items])).to(device).permute(0, 3, 1, 2).float() / 255.0
        gens = [torch.Generator().manual_seed(image_seed(draws, seed, image_name(adapter, r))) for _, r, _ in items]
        with torch.no_grad():
            y = to_uint8(module(x, psf_scale=recipe.psf_scale(adapter.origin, width), generator=gens))
        y = y.permute(0, 2, 3, 1).cpu().numpy()
        for (i, record, _), degraded in zip(items, y):
            suffix = record.path.suffix.lower() if record.path is not None else ".png"
            if suffix in (".jpg", ".jpeg"):  # synth stores JPEG datasets as JPEG: the same loss
                degraded = cv2.cvtColor(decode(encode(degraded, suffix, quality)), cv2.COLOR_BGR2RGB)
            out[start + i] = resize_image(degraded, size)
    out.flush()
    return len(records)


def synthesise_set(adapter: DatasetAdapter, records: list[Record], recipe: Recipe, seed: int, size: int, path: Path,
                   workers: int = 1, device: str = "cpu", draws: str | None = None) -> None:
    """Degrade every record into the array at ``path`` (written under a temporary name, then renamed); on a GPU
    in this process, on the CPU over ``workers`` processes. ``draws``: the digest the per-image parameters are
    drawn from (default the recipe's own, as synth; a severity sweep passes its panel's, so that every level of an
    image shares its random numbers and only the severity's axes change)."""
    draws = draws or recipe.digest
    from udcbench.files import write_json
    from udcbench.workers import worker_pool

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    out = open_reserved_array(partial, (len(records), size, size, 3), hint=CACHE_HINT)
    del out
    jobs = [(i, records[i : i + JOB_IMAGES]) for i in range(0, len(records), JOB_IMAGES)]
    args = (adapter.name, None if adapter.root is None else str(adapter.root), dict(adapter.options))
    try:
        with progress_bar() as bar:
            task = bar.add_task(f"synth {recipe.name}", total=len(records))
            if workers > 1 and device == "cpu" and len(jobs) > 1:
                with worker_pool(workers) as pool:
                    futures = [pool.submit(_degrade_job, *args, part, recipe, seed, size, str(partial), i, device,
                                           draws) for i, part in jobs]
                    for future in futures:
                        bar.advance(task, future.result())
            else:
                for i, part in jobs:
                    bar.advance(task, _degrade_job(*args, part, recipe, seed, size, str(partial), i, device, draws))
        write_json(path.with_suffix(".json"), {"recipe": recipe.raw, "recipe_sha256": recipe.digest, "seed": seed,
                                               "draws_from": draws, "size": size, "images": len(records),
                                               "dataset": adapter.origin})
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def degraded_set(adapter: DatasetAdapter, records: list[Record], recipe: Recipe, seed: int, size: int,
                 cache_dir: Path, digest: str, workers: int = 1, device: str = "cpu", draws: str | None = None
                 ) -> tuple[np.ndarray, bool]:
    """The test set degraded by ``recipe`` at ``size`` (read-only, memory-mapped) and whether it was synthesised
    now (False: read from the cache); ``draws`` as :func:`synthesise_set`."""
    draws = draws or recipe.digest
    path = cache_path(cache_dir, adapter, recipe, digest, seed, size, "" if draws == recipe.digest else draws)
    made = False
    if not path.is_file():
        synthesise_set(adapter, records, recipe, seed, size, path, workers, device, draws)
        made = True
    images = np.load(path, mmap_mode="r")
    if images.shape != (len(records), size, size, 3):  # a cache entry of another set under this name
        raise UdcbenchError(f"{path}: holds {images.shape[0]} images of {images.shape[1]} px, not {len(records)} of "
                            f"{size}: remove it (udcbench made it) and run again")
    return images, made


# -- the models -------------------------------------------------------------------------------------------
@dataclass
class Model:
    """A model to score: its input size, classes, what it is (for the record) and how it predicts."""

    source: str
    input_size: int
    classes: tuple[str, ...]
    predict: Callable[[np.ndarray], np.ndarray]  # uint8 N x S x S x 3 -> class indices
    info: dict[str, Any] = field(default_factory=dict)  # method, preset, seed, trained_on, init, precision, format


#: Exported model formats by suffix (export-model's sidecar names the format too).
EXPORT_SUFFIXES = {".ts": "torchscript", ".pt": "torchscript", ".pt2": "torch.export", ".onnx": "onnx"}


def _batched(logits_of: Callable[[np.ndarray], np.ndarray], batch: int) -> Callable[[np.ndarray], np.ndarray]:
    def predict(images: np.ndarray) -> np.ndarray:
        out = [np.asarray(logits_of(np.array(images[i : i + batch]))).argmax(1)  # a copy: the cache is read-only
               for i in range(0, len(images), batch)]
        return np.concatenate(out) if out else np.zeros((0,), dtype=np.int64)

    return predict


def _exported(path: Path, device: str | None, batch: int) -> Model:
    """A model written by ``udcbench export-model`` (or any model that takes N x 3 x S x S float32 RGB in [0, 1]
    and returns logits) with its sidecar ``FILE.json`` (labels, input_size)."""
    sidecar = read_json(path.with_name(path.name + ".json"))
    if not isinstance(sidecar, dict) or not sidecar.get("labels") or not isinstance(sidecar.get("input_size"), int):
        raise UdcbenchError(f"{path}: an exported model needs its sidecar {path.name}.json with labels and input_size "
                            "(udcbench export-model writes it)")
    fmt = sidecar.get("format") or EXPORT_SUFFIXES.get(path.suffix.lower())
    size = int(sidecar["input_size"])
    if not 8 <= size <= 1024:
        raise UdcbenchError(f"{path.name}.json: input_size {size} is outside 8-1024")
    import torch

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if fmt == "onnx":
        try:
            import onnxruntime
        except ImportError:
            raise UdcbenchError("scoring an ONNX model needs onnxruntime: pip install 'udcbench[onnx]'") from None
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def logits(images: np.ndarray) -> np.ndarray:
            return session.run(None, {name: images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0})[0]
    elif fmt in ("torchscript", "torch.export"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.jit.load's deprecation note, on every load
                module = (torch.jit.load(str(path), map_location=dev) if fmt == "torchscript"
                          else torch.export.load(str(path)).module().to(dev))
        except Exception as exc:  # noqa: BLE001 - any file the loader refuses: one line
            raise UdcbenchError(f"{path}: not a loadable {fmt} model ({str(exc).splitlines()[0][:160]})") from None

        def logits(images: np.ndarray) -> np.ndarray:
            x = torch.from_numpy(images).to(dev).permute(0, 3, 1, 2).float() / 255.0
            with torch.no_grad():
                torch.manual_seed(0)
                return module(x).float().cpu().numpy()
    else:
        raise UdcbenchError(f"{path}: unknown model format {fmt!r} (torchscript, torch.export or onnx)")
    info = {"method": sidecar.get("method"), "format": fmt, "precision": "fp32", "precision_mode": "fp32",
            "checkpoint_sha256": sidecar.get("checkpoint_sha256")}
    return Model(str(path), size, tuple(sidecar["labels"]), _batched(logits, batch), info)


def _trained(target: Path, device: str | None, precision: str) -> Model:
    """A run folder, one of its checkpoints or a model folder: predicted as the engine evaluates (its own
    normalisation and eval crop, per-image sampling keys, its precision unless ``precision`` says otherwise)."""
    from udcbench.engine.evaluation import predict
    from udcbench.predict import Predictor

    predictor = Predictor.load(target, device)
    config = predictor.config
    if precision != "run":
        config = replace(config, amp=precision != "fp32")
    folder = target if target.is_dir() else target.parent
    record = read_json(folder / "results.json") or {}
    meta = read_json(folder / "config.json") or {}
    training = meta.get("training") or {}
    info = {
        "method": config.method, "preset": config.preset, "seed": config.seed, "format": "udcbench",
        "trained_on": {"dataset": record.get("dataset") or training.get("dataset"),
                       "condition": record.get("condition") or training.get("condition")},
        "init": record.get("init") or training.get("init") or "scratch",
        "precision": "fp32" if not config.amp else (record.get("precision") or "bf16"),
        "run_dir": str(folder) if record else None,
        "weights_sha256": record.get("weights_sha256"),
        "precision_mode": precision,
    }

    def run(images: np.ndarray) -> np.ndarray:
        return predict(predictor.model, images, config, predictor.rt, shard=False)[0]

    return Model(str(target), config.input_size, predictor.classes, run, info)


def load_model(target: Path, device: str | None = None, precision: str = "run", batch: int = 256) -> Model:
    """A run folder, a checkpoint, a model folder, or an exported model (TorchScript, torch.export, ONNX) with
    its sidecar."""
    target = Path(target)
    if not target.exists():
        raise UdcbenchError(f"{target}: no such run folder, checkpoint or exported model")
    sidecar = target.with_name(target.name + ".json")
    if target.is_file() and target.suffix.lower() in EXPORT_SUFFIXES and sidecar.is_file():
        return _exported(target, device, batch)
    return _trained(target, device, precision)


# -- the sweep --------------------------------------------------------------------------------------------
@dataclass
class Sweep:
    """One model's cells (clean first), with what was synthesised and how long it took."""

    cells: list[dict[str, Any]]
    synthesised: int  # degraded sets made now (the rest came from the cache)
    seconds: dict[str, float]  # synthesis, evaluation, total
    test_split: str
    images: int
    digest: str  # the clean test images' (source_digest)


def test_records(adapter: DatasetAdapter) -> tuple[str, list[Record]]:
    """The adapter's test split (its valid split where it has no test split): the engine's."""
    from udcbench.engine.evaluation import test_records as split_records

    return split_records(adapter)


def check_clean(adapter: DatasetAdapter) -> None:
    from udcbench.engine.records import dataset_condition

    condition, _ = dataset_condition(adapter)
    if condition != "clean":
        raise UdcbenchError(f"{adapter.root} is a {condition} copy: robustness degrades a clean test split itself "
                            "(give the clean dataset)")


def sweep(model: Model, adapter: DatasetAdapter, panels: list[Recipe], severities: tuple[int, ...], cache_dir: Path,
          seed: int = 0, workers: int = 1, device: str = "cpu", limit: int | None = None) -> Sweep:
    """Evaluate ``model`` on the clean test split and under every panel x severity. ``limit`` keeps the first
    N test images of a class-stratified order (the quick study's shortened sweep says so in its record)."""
    from udcbench.engine.data import drop_unreadable, load_images
    from udcbench.engine.metrics import classification_metrics

    check_clean(adapter)
    split, records = test_records(adapter)
    if limit is not None:
        records = stratified_head(records, limit)
    if len(model.classes) < adapter.num_classes:
        raise UdcbenchError(f"the model predicts {len(model.classes)} classes; {adapter.describe()} has "
                            f"{adapter.num_classes}")
    from baselines import distributed

    widths: list[int] = []
    # under torchrun one rank sweeps (reproduce's rank 0): the engine's shared decode cache would wait for the others
    clean = load_images(adapter, records, model.input_size, f"loading {split}", sizes=widths,
                        cache_dir=None if distributed.active() else cache_dir)
    records, clean, _, unreadable = drop_unreadable(records, clean, widths)
    if unreadable:
        stderr.print(f"[yellow]warning:[/] {len(unreadable)} test image(s) do not decode and were left out, e.g. "
                     f"{unreadable[0]}", highlight=False)
    if not records:
        raise UdcbenchError(f"{adapter.describe()}: no readable test images")
    labels = np.array([r.label for r in records])
    digest = source_digest(adapter, records)
    timing = {"synthesis": 0.0, "evaluation": 0.0}
    start = time.perf_counter()

    def score(images: np.ndarray, panel: str, severity: int, recipe: Recipe | None) -> dict[str, Any]:
        t = time.perf_counter()
        metrics = classification_metrics(labels, model.predict(images), len(model.classes))
        timing["evaluation"] += time.perf_counter() - t
        return {"panel": panel, "severity": severity, "recipe_sha256": recipe.digest if recipe else None,
                "accuracy": 100 * metrics["accuracy"], "mean_class_accuracy": 100 * metrics["mean_class_accuracy"]}

    cells = [score(clean, "clean", 0, None)]
    made = 0
    for panel in panels:
        for level in severities:
            recipe = severity_recipe(panel, level)
            t = time.perf_counter()
            try:
                images, new = degraded_set(adapter, records, recipe, seed, model.input_size, cache_dir, digest, workers,
                                           device, draws=panel.digest)
            except UnreadableImageError as exc:
                raise UdcbenchError(str(exc)) from None
            timing["synthesis"] += time.perf_counter() - t
            made += new
            cells.append(score(images, panel.name, level, recipe))
    for cell in cells[1:]:
        cell["relative_drop"] = 100 * (cells[0]["accuracy"] - cell["accuracy"]) / max(cells[0]["accuracy"], 1e-9)
    timing["total"] = time.perf_counter() - start
    return Sweep(cells, made, timing, split, len(records), digest)


def stratified_head(records: list[Record], limit: int) -> list[Record]:
    """The first ``limit`` records of an order that takes each class in turn (the test order within a class):
    a shortened sweep keeps the test set's classes."""
    from itertools import zip_longest

    by_class: dict[int, list[Record]] = {}
    for record in records:
        by_class.setdefault(record.label, []).append(record)
    order = [r for turn in zip_longest(*by_class.values()) for r in turn if r is not None]
    chosen = {id(r) for r in order[:limit]}
    return [r for r in records if id(r) in chosen]


# -- corruption errors ------------------------------------------------------------------------------------
def errors_by_panel(cells: list[dict[str, Any]]) -> tuple[float, dict[str, dict[int, float]]]:
    """(clean error, {panel: {severity: error}}), errors as shares."""
    clean = next(1 - c["accuracy"] / 100 for c in cells if c["panel"] == "clean")
    panels: dict[str, dict[int, float]] = {}
    for c in cells:
        if c["panel"] != "clean":
            panels.setdefault(c["panel"], {})[c["severity"]] = 1 - c["accuracy"] / 100
    return clean, panels


def corruption_errors(cells: list[dict[str, Any]], reference: list[dict[str, Any]]) -> dict[str, Any]:
    """The mCE block: ``overall`` (mCE) and ``per_panel`` (CE), ``relative_overall`` and ``relative_per_panel``
    (relative CE), in percent (100 = the reference's), over the panels and severities both sweeps have. A relative
    CE whose reference loses nothing on that panel is None (and so is the relative mCE)."""
    clean, mine = errors_by_panel(cells)
    ref_clean, ref = errors_by_panel(reference)
    ce, rce = {}, {}
    for panel, errors in mine.items():
        levels = sorted(set(errors) & set(ref.get(panel, {})))
        if not levels:
            continue
        ce[panel] = 100 * sum(errors[s] for s in levels) / max(sum(ref[panel][s] for s in levels), 1e-12)
        ref_loss = sum(ref[panel][s] - ref_clean for s in levels)
        rce[panel] = 100 * sum(errors[s] - clean for s in levels) / ref_loss if ref_loss > 0 else None
    relative = [v for v in rce.values() if v is not None]
    return {"overall": float(np.mean(list(ce.values()))) if ce else None, "per_panel": ce,
            "relative_overall": float(np.mean(relative)) if relative and len(relative) == len(rce) else None,
            "relative_per_panel": rce}


# -- records, the reference, the command's work -----------------------------------------------------------
RECORD_PREFIX = "robustness-"


def record_folder(model: Model, runs: Path) -> Path:
    """Where a sweep's record lives: the run folder of a trained run; ``<runs>/robustness/<name>-<digest>/`` for
    a checkpoint outside a run folder or an exported model (a folder udcbench makes)."""
    if model.info.get("run_dir"):
        return Path(model.info["run_dir"])
    source = Path(model.source)
    stem = "".join(c if c.isalnum() or c in "._+-" else "-" for c in source.stem)[:60] or "model"
    digest = hashlib.sha256(source.read_bytes() if source.is_file() else str(source.resolve()).encode()).hexdigest()
    return Path(runs) / CACHE_FOLDER / f"{stem}-{digest[:12]}"


def sweep_record(model: Model, adapter: DatasetAdapter, result: Sweep, panels: list[Recipe], seed: int,
                 mce: dict[str, Any] | None, reference: dict[str, Any] | None, device: str,
                 limit: int | None = None) -> dict[str, Any]:
    """The record of one model's sweep (``robustness-<dataset>.json`` and a store row of kind ``robustness``):
    the store's columns carry the clean cell; the cells, CE and mCE are in the record."""
    from datetime import datetime, timezone

    from udcbench import __version__
    from udcbench.engine.records import git_commit

    info = model.info
    trained = info.get("trained_on") or {}
    clean = result.cells[0]
    return {
        "run_id": f"{Path(model.source).resolve()}::robustness::{adapter.origin}:{result.digest[:12]}",
        "kind": "robustness",
        "method": info.get("method") or "unknown",
        "format": info.get("format"),
        "init": info.get("init") or "unknown",
        "preset": info.get("preset") or "external",
        "input_size": model.input_size,
        "dataset": adapter.origin,
        "adapter": adapter.name,
        "data_root": str(adapter.root) if adapter.root else None,
        "condition": trained.get("condition") or "unknown",  # the condition the model trained on
        "trained_on": trained,
        "test_split": result.test_split,
        "seed": info.get("seed"),
        "precision": info.get("precision"),
        "precision_mode": info.get("precision_mode"),  # what was asked: run (the run's own), fp32 or bf16
        "test_at_best": {"accuracy": clean["accuracy"] / 100,
                         "mean_class_accuracy": clean["mean_class_accuracy"] / 100},
        "cells": result.cells,
        "panels": [{"name": p.name, "source": p.source, "recipe_sha256": p.digest} for p in panels],
        "severities": sorted({c["severity"] for c in result.cells if c["panel"] != "clean"}),
        "synthesis_seed": seed,
        "images": result.images,
        "source_digest": result.digest,
        "limit": limit,
        "mce": mce,
        "reference": reference,
        "synthesised": result.synthesised,
        "seconds": result.seconds,
        "device": device,
        "versions": {"udcbench": __version__},
        "git_commit": git_commit(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run_dir": info.get("run_dir"),
        "source": model.source,
    }


def save_sweep(record: dict[str, Any], folder: Path, store: Path | None) -> Path:
    from udcbench.engine.store import save_result
    from udcbench.files import write_json

    path = Path(folder) / f"{RECORD_PREFIX}{record['dataset']}.json"
    write_json(path, record)
    if store is not None:
        save_result(store, record)
    return path


def reference_runs(results: list[dict[str, Any]], dataset: str, preset: str | None, input_size: int,
                   init: str | None) -> list[dict[str, Any]]:
    """The finished clean runs of the reference method on ``dataset`` at ``input_size`` (and ``preset`` when
    known), the latest per seed; those with the model's own init when there are any."""
    from udcbench.reports.tables import usable

    found = [r for r in results if usable(r) and r["method"] == REFERENCE_METHOD and r["condition"] == "clean"
             and r["dataset"] == dataset and r["input_size"] == input_size and (preset in (None, "external")
                                                                                 or r["preset"] == preset)]
    same = [r for r in found if init is not None and Path(str(r["init"])).name == Path(str(init)).name]
    latest: dict[Any, dict[str, Any]] = {}
    for r in sorted(same or found, key=lambda r: str(r.get("created"))):
        latest[r["seed"]] = r
    return [latest[s] for s in sorted(latest, key=str)]


def mean_cells(sweeps: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The cells of several seeds' sweeps, accuracy averaged per (panel, severity) present in all."""
    keys = [{(c["panel"], c["severity"]) for c in s} for s in sweeps]
    common = set.intersection(*keys)
    cells = []
    for cell in sweeps[0]:
        key = (cell["panel"], cell["severity"])
        if key in common:
            same = [c for s in sweeps for c in s if (c["panel"], c["severity"]) == key]
            cells.append({**cell, "accuracy": float(np.mean([c["accuracy"] for c in same]))})
    return cells


def saved_sweep(folder: Path, adapter: DatasetAdapter, panels: list[Recipe], severities: tuple[int, ...],
                limit: int | None, precision_mode: str | None = None, digest: str | None = None,
                scored: bool = False) -> dict[str, Any] | None:
    """The sweep saved in ``folder`` when it has every wanted panel (same recipe) and severity on the same test
    images (their digest: ``digest``, else computed from the test split and ``limit``) at that ``limit``, and the
    ``precision_mode`` when given, and CE and mCE when ``scored``; None otherwise (sweep again)."""
    record = read_json(Path(folder) / f"{RECORD_PREFIX}{adapter.origin}.json")
    if (not isinstance(record, dict) or record.get("limit") != limit or (scored and not record.get("mce"))
            or (precision_mode is not None and record.get("precision_mode") != precision_mode)):
        return None
    if digest is None:
        records = test_records(adapter)[1]
        digest = source_digest(adapter, stratified_head(records, limit) if limit else records)
    if record.get("source_digest") != digest:
        return None
    have = {(c["panel"], c["severity"], c.get("recipe_sha256")) for c in record.get("cells") or []}
    wanted = all((p.name, s, severity_recipe(p, s).digest) in have for p in panels for s in severities)
    return record if wanted else None


def _reference_cells(run_dir: Path, adapter: DatasetAdapter, panels: list[Recipe], severities: tuple[int, ...],
                     cache_dir: Path, seed: int, workers: int, device: str | None, precision: str, digest: str,
                     limit: int | None, store: Path | None, own: Sweep | None) -> list[dict[str, Any]]:
    """A reference run's cells: the model's own sweep when the model is the reference, its saved sweep when that
    covers these panels and severities, else a new sweep (saved beside it; the degraded sets are cached by then)."""
    if own is not None:
        return own.cells
    saved = saved_sweep(run_dir, adapter, panels, severities, limit, precision, digest)
    if saved is not None:
        return saved["cells"]
    model = load_model(Path(run_dir), device, precision)
    synth_device = _synthesis_device(device)
    result = sweep(model, adapter, panels, severities, cache_dir, seed, workers, synth_device, limit)
    save_sweep(sweep_record(model, adapter, result, panels, seed, None, None, synth_device, limit), Path(run_dir),
               store)
    return result.cells


def _synthesis_device(device: str | None) -> str:
    from udcbench.engine.runtime import runtime

    return "cuda" if runtime(device).device.type == "cuda" else "cpu"


def score_model(target: Path, adapter: DatasetAdapter, runs: Path, cache_dir: Path, panels: list[Recipe],
                severities: tuple[int, ...] = LEVELS, seed: int = 0, workers: int = 1, device: str | None = None,
                precision: str = "run", reference: Path | None = None, train_reference: bool = True,
                budget: str = "cpu", limit: int | None = None, log: Callable[[str], None] = stderr.print
                ) -> dict[str, Any]:
    """The whole of ``udcbench robustness``: sweep the model, find (or train) the reference and sweep it, score
    CE and mCE, write the record beside the model and into the store; returns the record."""
    from udcbench.engine.runs import STORE, train_method
    from udcbench.engine.store import load_results

    store = Path(runs) / STORE
    model = load_model(Path(target), device, precision)
    synth_device = _synthesis_device(device)
    result = sweep(model, adapter, panels, severities, cache_dir, seed, workers, synth_device, limit)
    if reference is not None:
        ref_dirs = [Path(reference)]
    else:
        found = reference_runs(load_results(store), adapter.origin, model.info.get("preset"), model.input_size,
                               model.info.get("init"))
        ref_dirs = [Path(r["run_dir"]) for r in found if r.get("run_dir") and Path(r["run_dir"]).is_dir()]
        if not ref_dirs and train_reference:
            preset = model.info.get("preset") if model.info.get("preset") not in (None, "external") else budget
            log(f"no reference ({REFERENCE_METHOD} trained clean on {adapter.origin}, {preset} budget, "
                f"{model.input_size} px) in {store}: training it")
            trained = train_method(REFERENCE_METHOD, adapter, runs, preset, 0, skip_finished=True, device=device,
                                   cache_dir=cache_dir, log=log)
            ref_dirs = [Path(trained["run_dir"])]
    scores = ref_info = None
    if ref_dirs:
        own_dir = model.info.get("run_dir")
        # the reference at the model's precision (an exported model runs in fp32)
        sweeps = [_reference_cells(d, adapter, panels, severities, cache_dir, seed, workers, device,
                                   model.info["precision_mode"], result.digest, limit, store,
                                   result if own_dir and Path(own_dir).resolve() == d.resolve() else None)
                  for d in ref_dirs]
        scores = corruption_errors(result.cells, mean_cells(sweeps))
        ref_info = {"method": REFERENCE_METHOD, "runs": [str(d) for d in ref_dirs], "seeds": len(ref_dirs)}
    else:
        log(f"no reference run: CE and mCE are left out (train {REFERENCE_METHOD} clean, or pass --reference RUN)")
    record = sweep_record(model, adapter, result, panels, seed, scores, ref_info, synth_device, limit)
    inside = model.info.get("run_dir") and Path(model.info["run_dir"]).resolve().parent.parent == Path(runs).resolve()
    folder = record_folder(model, runs)
    record["record_file"] = str(save_sweep(record, folder, store if inside or not model.info.get("run_dir")
                                           else None))
    return record
