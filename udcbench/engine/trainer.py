"""One training loop for every registered method, with run records, checkpoints and resume.

A run folder holds ``config.json`` (the resolved configuration), ``metrics.jsonl`` (one line per
epoch), ``results.json`` (final metrics with provenance), ``last.pt`` and ``best.pt``. Model
selection uses the validation part only; the test split is reported at the epoch chosen on
validation and at the last epoch. Every epoch reseeds its own randomness (order, augmentation,
dropout), so a run resumed from ``last.pt`` ends with the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from baselines.backbone import WeightsError, load_resnet18_weights
from baselines.base import Batch
from udcbench import __version__
from udcbench.config import TrainConfig
from udcbench.datasets.base import DatasetAdapter
from udcbench.engine.data import TrainImages, load_images, normalise, plan_splits
from udcbench.engine.metrics import classification_metrics
from udcbench.engine.store import save_result
from udcbench.errors import UdcbenchError
from udcbench.methods import MethodSpec, PrepareContext, create_method, get_method
from udcbench.progress import progress_bar, stderr


class TrainingError(UdcbenchError):
    """Training cannot go on (non-finite loss, ...)."""


# -- environment ------------------------------------------------------------------------------------------
def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX). Without it bf16 autocast is emulated
    and about 2x slower than fp32; ``UDCBENCH_CPU_BF16=1`` forces it (to replay a bf16 run), ``=0`` refuses it."""
    forced = os.environ.get("UDCBENCH_CPU_BF16")
    if forced in ("0", "1"):
        return forced == "1"
    return _native_bf16()


@cache
def _native_bf16() -> bool:
    """The CPU probe, once per process (``Runtime.autocast`` asks at every step)."""
    probes = (getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return any(probe() for probe in probes if probe is not None)


@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def precision(self, amp: bool) -> str:
        """What ``amp`` means here: fp16 autocast on CUDA, bf16 on a CPU with native bf16, else fp32."""
        if amp and self.device.type == "cuda":
            return "fp16"
        return "bf16" if amp and self.device.type == "cpu" and cpu_has_bf16() else "fp32"

    def autocast(self, amp: bool):
        precision = self.precision(amp)
        if precision == "fp32":
            return nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)

    def place(self, model: nn.Module) -> nn.Module:
        """The model on this device, in NHWC where it asks for it (``FERModel.channels_last``)."""
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if getattr(model, "channels_last", False) else model


def runtime(device: str | None = None) -> Runtime:
    """CUDA when present (or asked), CPU otherwise; torch DDP when launched by ``torchrun``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if world > 1:
        if not dist.is_initialized():
            dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        if dev.type == "cuda":
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            dev = torch.device("cuda", local)
    return Runtime(dev, rank, world)


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def config_changes(config: TrainConfig, spec: MethodSpec) -> dict[str, Any]:
    """Fields of ``config`` that differ from its preset in ``spec`` (the ``--set`` overrides), besides seed,
    weights and the argument naming a stage-1 run."""
    preset = spec.config(config.preset)
    ours, theirs = config.to_json(), preset.to_json()
    changes = {k: v for k, v in ours.items() if k not in ("seed", "weights", "method_args") and theirs[k] != v}
    for key in set(config.method_args) | set(preset.method_args):
        if key != spec.stage1_arg and config.method_args.get(key) != preset.method_args.get(key):
            changes[f"method_args.{key}"] = config.method_args.get(key)
    return changes


def dataset_condition(adapter: DatasetAdapter) -> tuple[str, str | None]:
    """("clean" or the UDC recipe's name, sha256 of the dataset's manifest.json or None)."""
    manifest = adapter.root / "manifest.json" if adapter.root is not None else None
    if manifest is None or not manifest.is_file():
        return "clean", None
    data = manifest.read_bytes()
    try:
        recipe = json.loads(data).get("recipe_name")
    except ValueError:
        recipe = None
    return (recipe or "clean"), hashlib.sha256(data).hexdigest()


def count_macs(model: nn.Module, size: int, device: torch.device) -> float:
    """Multiply-accumulates of one forward pass at ``size`` x ``size`` (torch's FLOP counter / 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, size, size, device=device))
    model.train(was_training)
    return counter.get_total_flops() / 2


# -- optimisation ---------------------------------------------------------------------------------------
def make_optimizer(params, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
                               nesterov=config.schedule == "onecycle")
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    raise UdcbenchError(f"unknown optimizer '{config.optimizer}' (sgd, adam, adamw)")


def make_scheduler(optimizer, config: TrainConfig, steps_per_epoch: int):
    """Returns (scheduler, steps it per batch?)."""
    if config.schedule == "onecycle":
        total = max(1, config.epochs * steps_per_epoch)
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total), True
    if config.schedule == "exponential":
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=config.gamma), False
    if config.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.step_size, gamma=config.gamma), False
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, config.epochs)), False
    if config.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0), False
    raise UdcbenchError(f"unknown schedule '{config.schedule}' (onecycle, exponential, step, cosine, constant)")


class _Step(nn.Module):
    """Routes DDP's forward to the method's training step (so gradient sync hooks fire)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: Batch, epoch: int):
        return self.model.training_step(batch, epoch)


# -- evaluation -------------------------------------------------------------------------------------------
@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, config: TrainConfig, rt: Runtime,
            labels: np.ndarray | None = None, features: bool = False) -> tuple[np.ndarray, float]:
    """Arg-max predictions for a normalised tensor (or, with ``features``, the penultimate features),
    and images/s. Labels are passed in only to oracle models (``uses_labels_at_eval``, LRDif's stage 1);
    sampling models draw from a fixed seed."""
    model.eval()
    torch.manual_seed(config.seed)
    oracle = getattr(model, "uses_labels_at_eval", False)
    outputs = []
    start = time.perf_counter()
    for i in range(0, len(x), config.eval_batch_size):
        chunk = x[i : i + config.eval_batch_size].to(rt.device)
        extra = (torch.from_numpy(labels[i : i + len(chunk)]).to(rt.device),) if oracle else ()
        with rt.autocast(config.amp):
            out = (model.embed if features else model)(chunk, *extra)
        outputs.append(out.float().cpu() if features else out.float().argmax(dim=1).cpu())
    seconds = time.perf_counter() - start
    return torch.cat(outputs).numpy(), len(x) / max(seconds, 1e-9)


def evaluate(model, images, labels, config, rt, num_classes) -> dict:
    preds, speed = predict(model, normalise(images, config), config, rt, labels)
    return {**classification_metrics(labels, preds, num_classes), "images_per_second": speed}


# -- the loop -----------------------------------------------------------------------------------------------
def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(config: TrainConfig, adapter: DatasetAdapter, run_dir: Path, store: Path | None = None,
          resume: bool = False, device: str | None = None, cache_dir: Path | None = None) -> dict:
    """Train ``config.method`` on ``adapter`` into ``run_dir``; returns the final record."""
    rt = runtime(device)
    spec = get_method(config.method)
    run_dir = Path(run_dir)
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    if resume and not last_path.is_file():
        raise UdcbenchError(f"nothing to resume in {run_dir} (no last.pt)")
    if resume:
        saved = TrainConfig.from_json(json.loads((run_dir / "config.json").read_text()))
        if saved.to_json() != config.to_json():
            config = saved  # the run's own configuration wins on resume
            if rt.main:
                stderr.print(f"resuming with the configuration recorded in {run_dir / 'config.json'}")
    spec.args_for(config)  # a misspelt method_arg fails here, before the data loads
    torch.manual_seed(config.seed)
    plan = plan_splits(adapter, config.val_fraction, config.seed)
    num_classes = adapter.num_classes
    size = config.input_size
    train_sizes: list[int] = []
    train_images = load_images(adapter, plan.train, size, "loading train", sizes=train_sizes)
    val_images = load_images(adapter, plan.val, size, "loading validation")
    test_images = load_images(adapter, plan.test, size, "loading test")
    given_labels = np.array([r.label for r in plan.train], dtype=np.int64)
    labels = given_labels.copy()  # SCN may relabel these; given_labels stay as the dataset says
    soft = None
    if plan.train and plan.train[0].soft is not None:
        soft = torch.tensor(np.array([r.soft for r in plan.train]), dtype=torch.float32)
    val_labels = np.array([r.label for r in plan.val], dtype=np.int64)
    test_labels = np.array([r.label for r in plan.test], dtype=np.int64)

    model = rt.place(create_method(config.method, num_classes, config))
    model.set_schedule(config.epochs)
    init = {"init": "scratch", "weights_sha256": None}
    if config.weights:
        if not spec.resnet18_trunk:
            raise UdcbenchError(f"{config.method} has no ResNet-18 trunk to load --weights into")
        try:
            init = load_resnet18_weights(model.trunk, config.weights)
        except WeightsError as exc:
            raise UdcbenchError(str(exc)) from None
    elif rt.main and config.preset != "smoke" and spec.resnet18_trunk:
        stderr.print("[yellow]note:[/] no --weights given: the backbone trains from scratch (recorded as init=scratch)")
    precision = rt.precision(config.amp)
    if rt.main and config.amp and precision == "fp32":
        stderr.print("[yellow]note:[/] amp: this CPU has no native bf16 (AVX512-BF16/AMX), where bf16 autocast is "
                     "slower than fp32: training in fp32 (recorded as precision=fp32)")
    notes: dict = {}
    if spec.prepare is not None and not resume:
        spec.prepare(model, PrepareContext(adapter, plan.train, train_images, train_sizes,
                                           lambda images: normalise(images, config),
                                           replace(config, method_args=spec.args_for(config)), rt.device,
                                           cache_dir, notes))
    params = sum(p.numel() for p in model.parameters())
    macs = count_macs(model, size, rt.device) if not getattr(model, "uses_labels_at_eval", False) else None

    step_module: nn.Module = _Step(model)
    if rt.world > 1:
        step_module = nn.parallel.DistributedDataParallel(
            step_module, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
    dataset = TrainImages(train_images, config)
    per_rank = len(dataset) // rt.world
    steps_per_epoch = max(1, per_rank // config.batch_size)
    if config.max_steps:
        steps_per_epoch = min(steps_per_epoch, config.max_steps)
    optimizer = make_optimizer(model.parameters(), config)
    scheduler, per_batch = make_scheduler(optimizer, config, steps_per_epoch)
    scaler = torch.amp.GradScaler("cuda", enabled=rt.device.type == "cuda" and config.amp)

    start_epoch, best, history = 0, {"val_accuracy": -1.0}, []
    if resume:
        state = torch.load(last_path, map_location=rt.device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        labels = state["labels"]
        start_epoch, best, history = state["epoch"] + 1, state["best"], state["history"]
    elif rt.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(config.to_json(), indent=2) + "\n")
        (run_dir / "metrics.jsonl").write_text("")

    train_seconds, trained_images = sum(h["train_seconds"] for h in history), sum(h["images"] for h in history)
    with progress_bar() as bar:
        task = bar.add_task(f"{config.method} epoch", total=config.epochs, completed=start_epoch)
        for epoch in range(start_epoch, config.epochs):
            dataset.epoch = epoch
            torch.manual_seed(config.seed * 100_003 + epoch)  # dropout, RUL's pairing: replayable per epoch
            order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(config.seed * 7919 + epoch))
            mine = order[rt.rank :: rt.world][: steps_per_epoch * config.batch_size].tolist()
            loader = torch.utils.data.DataLoader(dataset, batch_size=config.batch_size, sampler=mine,
                                                 num_workers=config.num_workers, drop_last=True)
            model.train()
            sums: dict[str, float] = {}
            correct = seen = 0
            t0 = time.perf_counter()
            for step, (images, index) in enumerate(loader):
                if step >= steps_per_epoch:
                    break
                batch = Batch(images.to(rt.device), torch.from_numpy(labels[index.numpy()]).to(rt.device),
                              index.to(rt.device), None if soft is None else soft[index].to(rt.device))
                with rt.autocast(config.amp):
                    out = step_module(batch, epoch)
                if not torch.isfinite(out.loss.detach()).all():
                    raise TrainingError(
                        f"{config.method}: the loss became {out.loss.item()} at epoch {epoch + 1}, step {step + 1}; "
                        f"stopped. The last good checkpoint is "
                        f"{last_path if last_path.exists() else 'not written yet'} "
                        "(try a lower --set lr=...)"
                    )
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(out.loss).backward()
                if config.grad_clip:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                if per_batch:
                    scheduler.step()
                if out.relabel is not None and len(out.relabel[0]):
                    labels[out.relabel[0].cpu().numpy()] = out.relabel[1].cpu().numpy()
                for key, value in {"loss": out.loss.item(), **out.terms}.items():
                    sums[key] = sums.get(key, 0.0) + value
                correct += (out.logits.detach().argmax(1) == batch.labels).sum().item()
                seen += len(index)
            if not per_batch:
                scheduler.step()
            seconds = time.perf_counter() - t0
            stats = torch.tensor([correct, seen, *(sums.get(k, 0.0) for k in sorted(sums))], dtype=torch.float64)
            if rt.world > 1:
                dist.all_reduce(stats)
            steps = max(1, min(steps_per_epoch, step + 1)) * rt.world
            train_seconds += seconds
            trained_images += int(stats[1])
            val = evaluate(model, val_images, val_labels, config, rt, num_classes) if len(val_images) else None
            test = evaluate(model, test_images, test_labels, config, rt, num_classes)
            entry = {
                "epoch": epoch + 1,
                "train_accuracy": float(stats[0] / max(stats[1], 1)),
                **{f"train_{k}": float(v / steps) for k, v in zip(sorted(sums), stats[2:])},
                "val_accuracy": val["accuracy"] if val else None,
                "test_accuracy": test["accuracy"],
                "test_mean_class_accuracy": test["mean_class_accuracy"],
                "lr": optimizer.param_groups[0]["lr"],
                "train_seconds": seconds,
                "images": int(stats[1]),
                "relabelled": int((labels != given_labels).sum()),
            }
            history.append(entry)
            score = val["accuracy"] if val else test["accuracy"]
            if rt.main:
                with (run_dir / "metrics.jsonl").open("a") as f:
                    f.write(json.dumps(entry) + "\n")
                if score > best["val_accuracy"]:
                    best = {"val_accuracy": score, "epoch": epoch + 1, "test": test, "val": val}
                    _atomic_save({"model": model.state_dict(), "epoch": epoch, "config": config.to_json()}, best_path)
                _atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                              "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "labels": labels,
                              "epoch": epoch, "best": best, "history": history, "config": config.to_json()}, last_path)
            bar.update(task, advance=1, description=f"{config.method} epoch {epoch + 1}: val {score:.3f}")

    condition, manifest_sha = dataset_condition(adapter)
    record = {
        "run_id": str(run_dir.resolve()),
        "kind": "train",
        "method": config.method,
        "method_title": spec.title,
        "paper": spec.paper,
        "backbone": spec.backbone,
        **init,
        "preset": config.preset,
        "input_size": size,
        "dataset": adapter.origin,
        "adapter": adapter.name,
        "data_root": str(adapter.root) if adapter.root else None,
        "data_options": adapter.options,
        "condition": condition,
        "dataset_manifest_sha256": manifest_sha,
        "classes": list(adapter.classes),
        "test_split": plan.test_split,
        "validation": plan.val_source,
        "counts": {"train": len(plan.train), "val": len(plan.val), "test": len(plan.test)},
        "seed": config.seed,
        "method_args": config.method_args,
        "config_changes": config_changes(config, spec),
        "best_epoch": best.get("epoch"),
        "epochs": config.epochs,
        "test_at_best": best.get("test"),
        "val_at_best": best.get("val"),
        "test_at_last": test,
        "params": params,
        "gmacs": None if macs is None else macs / 1e9,
        "notes": notes,
        "train_images_per_second": trained_images / max(train_seconds, 1e-9),
        "inference_images_per_second": test["images_per_second"],
        "minutes": train_seconds / 60,
        "device": str(rt.device) + (f" x{rt.world}" if rt.world > 1 else ""),
        "precision": precision,
        "versions": {"udcbench": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "git_commit": git_commit(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run_dir": str(run_dir),
    }
    if rt.main:
        (run_dir / "results.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
        if store is not None:
            save_result(store, _row(record), record)
    return record


def _row(record: dict) -> dict:
    best = record.get("test_at_best") or {}
    last = record.get("test_at_last") or {}
    return {
        **{k: record.get(k) for k in ("run_id", "kind", "method", "backbone", "init", "preset", "input_size",
                                       "dataset", "condition", "test_split", "seed", "best_epoch", "epochs",
                                       "minutes", "device", "created", "run_dir")},
        "accuracy": best.get("accuracy"),
        "accuracy_last": last.get("accuracy"),
        "mean_class_accuracy": best.get("mean_class_accuracy"),
        "macro_f1": best.get("macro_f1"),
    }


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
    state = torch.load(path, map_location=rt.device, weights_only=False)
    config = TrainConfig.from_json(state["config"])
    results = Path(run_dir) / "results.json"
    trained = json.loads(results.read_text()) if results.is_file() else {}
    num_classes = len(trained.get("classes", [])) or adapter.num_classes
    if adapter.num_classes > num_classes:
        raise UdcbenchError(f"the run predicts {num_classes} classes; {adapter.describe()} has {adapter.num_classes}")
    model = rt.place(create_method(config.method, num_classes, config))
    model.load_state_dict(state["model"])
    return TrainedRun(model, config, trained, state, num_classes)


def load_test_split(adapter: DatasetAdapter, config: TrainConfig) -> tuple[str, list, torch.Tensor]:
    """The adapter's test split (its valid split where it has no test split), loaded at the run's size."""
    test_split = "test" if "test" in adapter.splits() else "valid"
    records = adapter.records(test_split)
    return test_split, records, load_images(adapter, records, config.input_size, f"loading {test_split}")


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
        **{k: trained.get(k) for k in ("method", "method_title", "backbone", "init", "weights_sha256", "preset",
                                       "input_size", "seed")},
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
    out.write_text(json.dumps(record, indent=2, default=str) + "\n")
    if store is not None:
        save_result(store, _row(record), record)
    return record

