"""The training loop for every registered method, with checkpoints and resume (its records are built in
:mod:`.records`, its evaluation in :mod:`.evaluation`, its device and precision in :mod:`.runtime`).

A run folder holds ``config.json`` (the resolved configuration), ``metrics.jsonl`` (one line per
epoch), ``results.json`` (final metrics with provenance), ``last.pt`` and ``best.pt``. Model
selection uses the validation part only; the test split is reported at the epoch chosen on
validation and at the last epoch. Every epoch reseeds its own randomness (order, augmentation,
dropout), so a run resumed from ``last.pt`` ends with the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from baselines.backbone import WeightsError
from baselines.base import Batch
from udcbench.checkpoints import load_checkpoint, save_checkpoint
from udcbench.config import TrainConfig
from udcbench.datasets.base import DatasetAdapter
from udcbench.engine.data import TrainImages, load_images, normalise, plan_splits
from udcbench.engine.evaluation import evaluate
from udcbench.engine.optim import SharpnessAware, make_optimizer, make_scheduler
from udcbench.engine.records import count_macs, train_record
from udcbench.engine.runtime import runtime
from udcbench.engine.store import save_result
from udcbench.errors import UdcbenchError
from udcbench.files import write_json
from udcbench.methods import PrepareContext, get_method
from udcbench.progress import TrainingProgress, stderr


class TrainingError(UdcbenchError):
    """Training cannot go on (non-finite loss, ...)."""


class _Step(nn.Module):
    """Routes DDP's forward to the method's training step (so gradient sync hooks fire)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: Batch, epoch: int):
        return self.model.training_step(batch, epoch)


#: Weights beyond this magnitude mean the optimisation diverged (the runs' weights stay far below 1e3); they
#: are checked every CHECK_EVERY steps and at the end of each epoch, before its checkpoint.
MAX_WEIGHT = 1e6
CHECK_EVERY = 10


def _check_parameters(model: nn.Module, config: TrainConfig, epoch: int, step: int, last_path: Path) -> None:
    """Stop, in one line, when an update left a weight non-finite or beyond :data:`MAX_WEIGHT`."""
    largest = torch.stack([p.detach().abs().max() for p in model.parameters() if p.numel()]).max().item()
    if not largest <= MAX_WEIGHT:  # also catches NaN
        raise TrainingError(
            f"{config.method}: a weight reached {largest:.3g} after the update of epoch {epoch + 1}, step "
            f"{step + 1}: the optimisation diverged; stopped. The last good checkpoint is "
            f"{last_path if last_path.exists() else 'not written yet'} (try a lower --set lr=...)")


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
    # the method's arguments, those the config leaves out at their defaults; a misspelt one fails here, before
    # the data loads
    config = replace(config, method_args=spec.args_for(config))
    config.validate()
    torch.manual_seed(config.seed)
    try:
        plan = plan_splits(adapter, config.val_fraction, config.seed)
    finally:  # e.g. listed images missing: said as `udcbench info` says it, even when the splits are refused
        for problem in adapter.problems if rt.main else []:
            stderr.print(f"[yellow]warning:[/] {problem}", highlight=False)
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

    model = rt.place(spec.build(num_classes, config))
    model.set_schedule(config.epochs)
    init = {"init": "scratch", "weights_sha256": None}
    if config.weights:
        if not spec.backbone_weights:
            raise UdcbenchError(f"{config.method} has no pretrained backbone to load --weights into")
        try:
            init = model.load_backbone_weights(config.weights)
        except WeightsError as exc:
            raise UdcbenchError(str(exc)) from None
    elif rt.main and config.preset != "smoke" and spec.backbone_weights:
        stderr.print("[yellow]note:[/] no --weights given: the backbone trains from scratch (recorded as init=scratch)")
    precision = rt.precision(config.amp)
    if rt.main and config.amp and precision == "fp32":
        stderr.print("[yellow]note:[/] amp: this CPU has no native bf16 (AVX512-BF16/AMX), where bf16 autocast is "
                     "slower than fp32: training in fp32 (recorded as precision=fp32)")
    notes: dict = {}
    if spec.prepare is not None and not resume:
        stage1_run = config.method_args.get(spec.stage1_arg) if spec.stage1 else None
        spec.prepare(model, PrepareContext(adapter, plan.train, train_images, train_sizes,
                                           lambda images: normalise(images, config), config, rt.device,
                                           cache_dir, Path(stage1_run) if stage1_run else None, notes))
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
    sam = SharpnessAware(model.parameters(), config.sam_rho) if config.sam_rho else None
    scaler = torch.amp.GradScaler("cuda", enabled=rt.device.type == "cuda" and config.amp)

    start_epoch, best, history = 0, {"val_accuracy": -1.0}, []
    if resume:
        state = load_checkpoint(last_path, rt.device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        labels = state["labels"].numpy()
        start_epoch, best, history = state["epoch"] + 1, state["best"], state["history"]
    elif rt.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "config.json", config.to_json())
        (run_dir / "metrics.jsonl").write_text("")

    train_seconds, trained_images = sum(h["train_seconds"] for h in history), sum(h["images"] for h in history)
    test = None
    with TrainingProgress(config.method, config.epochs, steps_per_epoch, start_epoch, enabled=rt.main) as progress:
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
            progress.start_step()
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
                if sam is not None:  # the second pass, at the perturbed weights
                    sam.perturb()
                    optimizer.zero_grad(set_to_none=True)
                    with rt.autocast(config.amp):
                        scaler.scale(step_module(batch, epoch).loss).backward()
                    sam.restore()
                if config.grad_clip:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                if (step + 1) % CHECK_EVERY == 0 or step + 1 == steps_per_epoch:
                    _check_parameters(model, config, epoch, step, last_path)
                if per_batch:
                    scheduler.step()
                if out.relabel is not None and len(out.relabel[0]):
                    labels[out.relabel[0].cpu().numpy()] = out.relabel[1].cpu().numpy()
                for key, value in {"loss": out.loss.item(), **out.terms}.items():
                    sums[key] = sums.get(key, 0.0) + value
                correct += (out.logits.detach().argmax(1) == batch.labels).sum().item()
                seen += len(index)
                progress.step(epoch, step, len(index), out.loss.item())
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
                    save_checkpoint({"model": model.state_dict(), "epoch": epoch, "config": config.to_json()},
                                    best_path)
                save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                 "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                                 "labels": torch.from_numpy(labels.copy()), "epoch": epoch, "best": best,
                                 "history": history, "config": config.to_json()}, last_path)
            progress.epoch(epoch, f"train {entry['train_accuracy']:.3f}, {'val' if val else 'test'} {score:.3f} "
                                  f"({seconds:.0f} s)")

    if test is None:  # resumed after its last epoch (its record was lost): the last epoch's model, tested again
        test = evaluate(model, test_images, test_labels, config, rt, num_classes)
    record = train_record(config, spec, adapter, plan, run_dir, rt, init=init, best=best, last_test=test,
                          params=params, macs=macs, notes=notes, precision=precision,
                          images_per_second=trained_images / max(train_seconds, 1e-9), minutes=train_seconds / 60)
    if rt.main:
        write_json(run_dir / "results.json", record)
        if store is not None:
            save_result(store, record)
    return record
