"""The training loop for every registered method, with checkpoints and resume (its records are built in
:mod:`.records`, its evaluation in :mod:`.evaluation`, its device and precision in :mod:`.runtime`).

In the order a timm reader expects: :func:`load_run_data` (splits and the decoded images), :func:`setup` (model,
DDP, optimiser, schedule, a resumed state), :func:`train_one_epoch`, :func:`evaluate`, :func:`save_epoch`
(metrics and checkpoints), and :func:`train`, which strings them together and writes the record.

A run folder holds ``config.json`` (the resolved configuration), ``metrics.jsonl`` (one line per
epoch), ``results.json`` (final metrics with provenance), ``last.pt`` and ``best.pt``. Model
selection uses the validation part only; the test split is reported at the epoch chosen on
validation and at the last epoch. Every epoch reseeds its own randomness (order, augmentation,
dropout), so a run resumed from ``last.pt`` ends with the same numbers as an uninterrupted one.

Under ``torchrun`` every rank trains its share of each global batch (the preset's batch, split over the ranks),
evaluation is sharded and gathered, and rank 0 alone writes; the others wait for it at a barrier after each
write. The step never waits for the device: losses and accuracy add up on it and are read every
:data:`SYNC_EVERY` steps and at the end of each epoch.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from baselines import distributed
from baselines.backbone import WeightsError
from baselines.base import Batch, FERModel
from udcbench.checkpoints import load_checkpoint, save_checkpoint
from udcbench.config import RUN_SETTINGS, SYNC_BN_BELOW, TrainConfig
from udcbench.datasets.base import DatasetAdapter
from udcbench.engine.augment import augment, draw_params
from udcbench.engine.data import (
    SplitPlan,
    batch_loader,
    drop_unreadable,
    epoch_batches,
    load_images,
    normalise,
    plan_splits,
    resolve_workers,
)
from udcbench.engine.evaluation import evaluate
from udcbench.engine.optim import SharpnessAware, make_optimizer, make_scheduler, param_groups
from udcbench.engine.records import count_macs, git_commit, train_record
from udcbench.engine.runs import mark_run_folder
from udcbench.engine.runtime import Runtime, compile_backend, cpu_has_bf16, runtime
from udcbench.engine.store import save_result
from udcbench.errors import UdcbenchError
from udcbench.files import remove_stale_temporaries, write_atomic, write_json
from udcbench.methods import MethodSpec, PrepareContext, get_method
from udcbench.pretrain import weights_task
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


#: Weights beyond this magnitude mean the optimisation diverged (the runs' weights stay far below 1e3).
MAX_WEIGHT = 1e6
#: The test labels and predictions at the chosen epoch (2 x N int16, the test split's order), for udcbench compare.
TEST_PREDICTIONS = "test_predictions.npy"
#: Steps between the host's looks at the device (loss finite, weights bounded, progress); also every epoch's end.
SYNC_EVERY = 10


@dataclass
class RunData:
    """A run's splits: the decoded images (uint8, read-only, memory-mapped when cached) and their labels."""

    plan: SplitPlan
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    widths: list[int]  # the train images' original widths
    given_labels: np.ndarray
    val_labels: np.ndarray
    test_labels: np.ndarray
    soft: torch.Tensor | None  # train vote distributions on the device, when the dataset has them


@dataclass
class TrainState:
    """What the loop changes, and what ``last.pt`` keeps of it."""

    model: FERModel
    step_module: nn.Module  # the model's training step, under DDP and torch.compile where they apply
    optimizer: torch.optim.Optimizer
    scheduler: object
    per_batch: bool  # whether the schedule steps per batch
    scaler: torch.amp.GradScaler
    sam: SharpnessAware | None
    labels: torch.Tensor  # train labels on the device (SCN relabels them)
    steps_per_epoch: int
    start_epoch: int = 0
    best: dict = field(default_factory=lambda: {"val_accuracy": -1.0})
    history: list = field(default_factory=list)


def load_run_data(config: TrainConfig, adapter: DatasetAdapter, rt: Runtime, cache_dir: Path | None) -> RunData:
    """Plan the splits and decode each once (:func:`~udcbench.engine.data.load_images`)."""
    try:
        plan = plan_splits(adapter, config.val_fraction, config.seed)
    finally:  # e.g. listed images missing: said as `udcbench info` says it, even when the splits are refused
        for problem in adapter.problems if rt.main else []:
            stderr.print(f"[yellow]warning:[/] {problem}", highlight=False)
    size, widths, images, unreadable = config.input_size, {}, {}, []
    for name, label in (("train", "train"), ("val", "validation"), ("test", "test")):
        widths[name] = []
        loaded = load_images(adapter, getattr(plan, name), size, f"loading {label}", cache_dir=cache_dir,
                             sizes=widths[name])
        records, images[name], widths[name], bad = drop_unreadable(getattr(plan, name), loaded, widths[name])
        plan = replace(plan, **{name: records})
        unreadable += bad
    if unreadable and rt.main:  # left out, as synth skips them; `udcbench info` lists why
        stderr.print(f"[yellow]warning:[/] {len(unreadable)} image(s) do not decode and were left out, e.g. "
                     f"{unreadable[0]} (udcbench info DATA lists them)", highlight=False)
    widths = widths["train"]
    soft = None
    if plan.train and plan.train[0].soft is not None:
        soft = torch.tensor(np.array([r.soft for r in plan.train]), dtype=torch.float32, device=rt.device)
    labels = {name: np.array([r.label for r in getattr(plan, name)], dtype=np.int64) for name in ("train", "val",
                                                                                                   "test")}
    return RunData(plan, images["train"], images["val"], images["test"], widths, labels["train"], labels["val"],
                   labels["test"], soft)


def _check_parameters(model: nn.Module, config: TrainConfig, epoch: int, step: int, last_path: Path) -> None:
    """Stop, in one line, when an update left a weight non-finite or beyond :data:`MAX_WEIGHT`."""
    largest = torch.stack([p.detach().abs().max() for p in model.parameters() if p.numel()]).max().item()
    if not largest <= MAX_WEIGHT:  # also catches NaN
        raise TrainingError(
            f"{config.method}: a weight reached {largest:.3g} by epoch {epoch + 1}, step {step + 1}: the "
            f"optimisation diverged; stopped. The last good checkpoint is "
            f"{last_path if last_path.exists() else 'not written yet'} (try a lower --set lr=...)")


def _load_weights(model: FERModel, spec: MethodSpec, config: TrainConfig, rt: Runtime) -> dict:
    """``--weights`` into the backbone; the run's init provenance."""
    if config.weights:
        if not spec.backbone_weights:
            raise UdcbenchError(f"{config.method} has no pretrained backbone to load --weights into")
        try:
            provenance = model.load_backbone_weights(config.weights)
        except WeightsError as exc:
            raise UdcbenchError(str(exc)) from None
        return {**provenance, "init_task": weights_task(config.weights, provenance["weights_sha256"])}
    if rt.main and config.preset != "smoke" and spec.backbone_weights:
        stderr.print("[yellow]note:[/] no --weights given: the backbone trains from scratch (recorded as init=scratch)")
    return {"init": "scratch", "weights_sha256": None}


def sync_batch_norm(config: TrainConfig, rt: Runtime) -> bool:
    """Whether the run's batch norm is synchronised over its ranks (:data:`~udcbench.config.SYNC_BN`): ``auto`` on a
    multi-GPU run whose per-rank batch is under :data:`~udcbench.config.SYNC_BN_BELOW`; never on one process. Only
    CUDA has SyncBatchNorm: ``on`` elsewhere is refused in one line."""
    if rt.world == 1 or config.sync_bn == "off":
        return False
    if not rt.cuda:
        if config.sync_bn == "on":
            raise UdcbenchError("sync_bn=on needs GPUs (SyncBatchNorm runs on CUDA only): --set sync_bn=off or auto")
        return False
    return config.sync_bn == "on" or rt.per_rank(config.batch_size) < SYNC_BN_BELOW


def _wrap(model: FERModel, config: TrainConfig, rt: Runtime) -> nn.Module:
    """The training step under DDP (gradients averaged over the ranks; buffers made to agree at each epoch's end
    by :func:`_average_buffers` instead of rank 0's overwriting the others' at every step) and, when asked,
    torch.compile."""
    model.train()  # a method's train() freezes what its variant never runs, before DDP lists the parameters
    step: nn.Module = _Step(model)
    if sync_batch_norm(config, rt):
        step = nn.SyncBatchNorm.convert_sync_batchnorm(step)
    if rt.ddp:
        step = nn.parallel.DistributedDataParallel(step, device_ids=[rt.device.index] if rt.cuda else None,
                                                   broadcast_buffers=False)
    if config.compile:
        step = torch.compile(step, backend=compile_backend())
    return step


def setup(config: TrainConfig, spec: MethodSpec, data: RunData, rt: Runtime, model: FERModel, resume_from: Path | None
          ) -> TrainState:
    """Optimiser, schedule, scaler and SAM around the prepared ``model``; the state of ``resume_from`` loaded."""
    steps_per_epoch = max(1, len(data.train) // config.batch_size)
    if config.max_steps:
        steps_per_epoch = min(steps_per_epoch, config.max_steps)
    step_module = _wrap(model, config, rt)
    optimizer = make_optimizer(param_groups(model, config), config)
    scheduler, per_batch = make_scheduler(optimizer, config, steps_per_epoch)
    state = TrainState(
        model, step_module, optimizer, scheduler, per_batch,
        torch.amp.GradScaler("cuda", enabled=rt.precision(config.amp) == "fp16"),
        SharpnessAware(model.parameters(), config.sam_rho) if config.sam_rho else None,
        torch.from_numpy(data.given_labels.copy()).to(rt.device), steps_per_epoch)
    if resume_from is not None:
        # on the CPU: load_state_dict places each tensor (Adam's ``step`` counters stay on the CPU, where a counter on
        # the GPU would make non-capturable Adam sync twice per parameter per step)
        saved = load_checkpoint(resume_from, "cpu")
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state.scaler.load_state_dict(saved["scaler"])
        state.labels = saved["labels"].to(rt.device)
        state.start_epoch, state.best, state.history = saved["epoch"] + 1, saved["best"], saved["history"]
    return state


def _publish_model(run_dir: Path, record: dict, adapter: DatasetAdapter) -> None:
    """The best weights as ``model/model.safetensors`` and ``model/config.json`` (:mod:`udcbench.model_files`); an
    oracle (LRDif's stage 1, which needs the label as input) is not published."""
    from udcbench.checkpoints import load_checkpoint
    from udcbench.model_files import write_model_folder

    if get_method(record["method"]).oracle or not (run_dir / "best.pt").is_file():
        return
    spec = adapter.spec
    write_model_folder(run_dir, record, load_checkpoint(run_dir / "best.pt"), spec.face_margin, spec.grayscale,
                       spec.aligned)


def _relabel(labels: torch.Tensor, relabel: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Write a step's relabels (every rank's, gathered in one collective: every rank's step has the same batch)
    into the train labels; -1 keeps a label."""
    both = distributed.all_gather_cat(torch.stack([relabel[0], relabel[1].to(relabel[0].dtype)], dim=1),
                                      same_size=True)
    positions, new = both[:, 0], both[:, 1].to(labels.dtype)
    labels[positions] = torch.where(new >= 0, new, labels[positions])


class StepCurves:
    """The training loss of every step in ``steps.jsonl`` (the report draws it), and, where ``tensorboard`` is
    installed, TensorBoard event files under ``tensorboard/`` with the step losses and each epoch's accuracies."""

    def __init__(self, run_dir: Path, keep_epochs: int):
        self.path = run_dir / "steps.jsonl"
        kept = []
        if self.path.is_file():  # a resumed run: the lines of the epochs its checkpoint holds
            for line in self.path.read_text().splitlines():
                try:
                    if json.loads(line)["epoch"] <= keep_epochs:
                        kept.append(line + "\n")
                except (ValueError, KeyError, TypeError):
                    continue
        write_atomic(self.path, "".join(kept))
        self.writer = None
        if importlib.util.find_spec("tensorboard") is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def epoch(self, epoch: int, steps_per_epoch: int, losses: list[float], entry: dict) -> None:
        first = epoch * steps_per_epoch
        with self.path.open("a") as f:
            f.writelines(json.dumps({"epoch": epoch + 1, "step": first + i + 1, "loss": v}) + "\n"
                         for i, v in enumerate(losses))
        if self.writer is not None:
            for i, v in enumerate(losses):
                self.writer.add_scalar("train/loss", v, first + i + 1)
            for key in ("val_accuracy", "test_accuracy"):
                self.writer.add_scalar(key.replace("_", "/", 1), 100 * entry[key], epoch + 1)
            self.writer.flush()


def train_one_epoch(state: TrainState, data: RunData, config: TrainConfig, rt: Runtime, epoch: int,
                    progress: TrainingProgress, last_path: Path) -> dict:
    """One epoch of this rank's share of the global batches; returns the epoch's training statistics (summed
    over the ranks): accuracy, each loss term's mean, images, seconds and the share spent waiting for data."""
    model, device = state.model, rt.device
    torch.manual_seed(config.seed * 100_003 + epoch + 1_000_003 * rt.rank)  # dropout, RUL's pairing: replayable
    batches = epoch_batches(len(data.train), config.batch_size, state.steps_per_epoch, config.seed, epoch, rt.rank,
                            rt.world)
    loader = batch_loader(data.train, batches, resolve_workers(config.num_workers, rt.cuda, rt.world), rt.cuda)
    model.train()
    sums: dict[str, torch.Tensor] = {}
    correct = torch.zeros((), dtype=torch.float64, device=device)
    bad_step = torch.full((), -1, dtype=torch.int64, device=device)  # the first step whose loss was not finite
    bad_loss = torch.zeros((), device=device)
    seen, waited, step = 0, 0.0, -1
    step_losses: list[torch.Tensor] = []  # this rank's loss per step, read once at the epoch's end (no sync per step)
    t0 = wait_start = time.perf_counter()
    progress.start_step()
    for step, (images, index) in enumerate(loader):
        waited += time.perf_counter() - wait_start
        params = draw_params(index, config.input_size, config, epoch)
        x = augment(images.to(device, non_blocking=True), params.to(device), config.mean, config.std)
        on_device = index.to(device, non_blocking=True)
        batch = Batch(x, state.labels[on_device], on_device, None if data.soft is None else data.soft[on_device],
                      host_index=index)
        with rt.autocast(config.amp):
            out = state.step_module(batch, epoch)
        loss = out.loss.detach().float()
        step_losses.append(loss)
        first = (bad_step < 0) & ~torch.isfinite(loss)
        bad_step = torch.where(first, step, bad_step)
        bad_loss = torch.where(first, loss, bad_loss)
        _update(state, config, rt, batch, epoch, out.loss)
        if out.relabel is not None:
            _relabel(state.labels, out.relabel)
        for key, value in {"loss": loss, **out.terms}.items():
            sums[key] = sums.get(key, 0.0) + value.detach().float()
        correct += (out.logits.detach().argmax(1) == batch.labels).sum()
        seen += len(index)
        if (step + 1) % SYNC_EVERY == 0:
            _check_finite(bad_step, bad_loss, config, epoch, last_path)
            _check_parameters(model, config, epoch, step, last_path)
        progress.step(epoch, step, len(index), loss)
        wait_start = time.perf_counter()
    if not state.per_batch:
        state.scheduler.step()
    _check_finite(bad_step, bad_loss, config, epoch, last_path)  # and at the epoch's end, before its checkpoint
    _check_parameters(model, config, epoch, step, last_path)
    _average_buffers(model)
    keys = sorted(sums)
    stats = torch.stack([correct, torch.tensor(float(seen), dtype=torch.float64, device=device),
                         *(sums[k].double() for k in keys)])
    stats = distributed.all_reduce_sum(stats).tolist()
    seconds = time.perf_counter() - t0
    steps = max(1, step + 1) * rt.world
    return {"train_accuracy": stats[0] / max(stats[1], 1), **{f"train_{k}": v / steps for k, v in zip(keys, stats[2:])},
            "images": int(stats[1]), "train_seconds": seconds, "data_wait_share": waited / max(seconds, 1e-9),
            "step_losses": torch.stack(step_losses).cpu().tolist() if step_losses else []}


def _update(state: TrainState, config: TrainConfig, rt: Runtime, batch: Batch, epoch: int, loss: torch.Tensor) -> None:
    """Backward and the optimiser's step (SAM's second pass, clipping and the scaler where they apply)."""
    optimizer, scaler = state.optimizer, state.scaler
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if state.sam is not None:  # the second pass, at the perturbed weights
        state.sam.perturb()
        optimizer.zero_grad(set_to_none=True)
        with rt.autocast(config.amp):
            scaler.scale(state.step_module(batch, epoch).loss).backward()
        state.sam.restore()
    if config.grad_clip:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(state.model.parameters(), config.grad_clip, foreach=True)
    scaler.step(optimizer)
    scaler.update()
    if state.per_batch:
        state.scheduler.step()


def _check_finite(bad_step: torch.Tensor, bad_loss: torch.Tensor, config: TrainConfig, epoch: int,
                  last_path: Path) -> None:
    """Stop, in one line, once a step's loss was not finite (on any rank: every rank stops alike)."""
    flags = distributed.all_reduce_sum(torch.stack([(bad_step >= 0).double(), bad_step.double().clamp(min=0),
                                                    bad_loss.double()]) * (bad_step >= 0))
    if flags[0] > 0:
        ranks = flags[0].item()
        raise TrainingError(
            f"{config.method}: the loss became {flags[2].item() / ranks} at epoch {epoch + 1}, step "
            f"{int(flags[1].item() / ranks) + 1}; stopped. The last good checkpoint is "
            f"{last_path if last_path.exists() else 'not written yet'} (try a lower --set lr=...)")


@torch.no_grad()
def _average_buffers(model: nn.Module) -> None:
    """Under DDP, the mean over the ranks of every floating-point buffer (batch-norm running statistics; buffers
    that the methods keep equal by their own collectives stay as they are), so that every rank evaluates and
    saves one model."""
    if not distributed.active():
        return
    for buffer in model.buffers():
        if buffer.is_floating_point():
            buffer.copy_(distributed.all_reduce_sum(buffer.clone()) / distributed.world_size())


def save_epoch(state: TrainState, config: TrainConfig, rt: Runtime, run_dir: Path, entry: dict, val: dict,
               test: dict, epoch: int, predictions: np.ndarray | None = None) -> None:
    """Rank 0 appends the epoch's metrics and writes ``best.pt`` (a better validation score, with its test labels
    and predictions, 2 x N, as ``TEST_PREDICTIONS``) and ``last.pt``; every rank waits for it, so that none leaves
    while a checkpoint is half-written."""
    score = val["accuracy"]  # never the test split's (plan_splits refuses a run without a validation part)
    if score > state.best["val_accuracy"]:
        state.best = {"val_accuracy": score, "epoch": epoch + 1, "test": test, "val": val}
        if rt.main:
            save_checkpoint({"model": state.model.state_dict(), "epoch": epoch, "config": config.to_json()},
                            run_dir / "best.pt")
            if predictions is not None:
                buffer = io.BytesIO()
                np.save(buffer, predictions.astype(np.int16), allow_pickle=False)
                write_atomic(run_dir / TEST_PREDICTIONS, buffer.getvalue())
    if rt.main:
        with (run_dir / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(entry) + "\n")
        save_checkpoint({"model": state.model.state_dict(), "optimizer": state.optimizer.state_dict(),
                         "scheduler": state.scheduler.state_dict(), "scaler": state.scaler.state_dict(),
                         "labels": state.labels.cpu(), "epoch": epoch, "best": state.best, "history": state.history,
                         "config": config.to_json()}, run_dir / "last.pt")
    distributed.barrier()


def _resumed_config(config: TrainConfig, run_dir: Path, rt: Runtime) -> TrainConfig:
    """On resume the run's own recipe wins; the run settings (workers, evaluation batch, compile) are this
    invocation's."""
    saved = TrainConfig.from_json(json.loads((run_dir / "config.json").read_text()))
    settings = {k: getattr(config, k) for k in RUN_SETTINGS}
    if replace(saved, **settings).to_json() != config.to_json() and rt.main:
        stderr.print(f"resuming with the configuration recorded in {run_dir / 'config.json'}")
    return replace(saved, **settings)


def train(config: TrainConfig, adapter: DatasetAdapter, run_dir: Path, store: Path | None = None,
          resume: bool = False, device: str | None = None, cache_dir: Path | None = None,
          spec: MethodSpec | None = None) -> dict:
    """Train ``config.method`` (``spec``, looked up when not given) on ``adapter`` into ``run_dir``; returns the
    final record (on every rank)."""
    rt = runtime(device)
    git_commit()  # the code that trains, read before it does (the record names it even if the checkout moves)
    spec = spec or get_method(config.method)
    run_dir = Path(run_dir)
    last_path = run_dir / "last.pt"
    if resume and not last_path.is_file():
        raise UdcbenchError(f"nothing to resume in {run_dir} (no last.pt)")
    if resume:
        config = _resumed_config(config, run_dir, rt)
    # the method's arguments, those the config leaves out at their defaults; a misspelt one fails here, before
    # the data loads
    config = replace(config, method_args=spec.args_for(config))
    config.validate()
    if not rt.cuda:
        cpu_has_bf16()  # a malformed UDCBENCH_CPU_BF16 is said here, before the data loads
    if config.compile:
        compile_backend()
    per_rank = rt.per_rank(config.batch_size)
    torch.manual_seed(config.seed)
    data = load_run_data(config, adapter, rt, cache_dir)
    num_classes = adapter.num_classes

    model = rt.place(spec.build(num_classes, config))
    model.set_schedule(config.epochs)
    init = _load_weights(model, spec, config, rt)
    precision = rt.precision(config.amp)
    if rt.main and config.amp and precision == "fp32":
        why = ("UDCBENCH_CPU_BF16=0 asks for fp32" if os.environ.get("UDCBENCH_CPU_BF16") == "0" else
               "this CPU has no native bf16 (AVX512-BF16/AMX), where bf16 autocast is slower than fp32")
        stderr.print(f"[yellow]note:[/] amp: {why}: training in fp32 (recorded as precision=fp32)")
    notes: dict = {}
    if spec.prepare is not None and not resume:
        stage1_run = config.method_args.get(spec.stage1_arg) if spec.stage1 else None
        spec.prepare(model, PrepareContext(adapter, data.plan.train, data.train, data.widths,
                                           lambda images: normalise(images, config), config, rt.device,
                                           cache_dir, Path(stage1_run) if stage1_run else None, notes))
    params = sum(p.numel() for p in model.parameters())
    macs = count_macs(model, config.input_size, rt.device) if not getattr(model, "uses_labels_at_eval", False) \
        else None
    state = setup(config, spec, data, rt, model, last_path if resume else None)
    if not resume and rt.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        mark_run_folder(run_dir)
        write_json(run_dir / "config.json", config.to_json())
        (run_dir / "metrics.jsonl").write_text("")
    elif rt.main:  # the epochs of the checkpoint resumed from: a kill after an epoch's line, before its checkpoint,
        # left that epoch's line, which the resumed run writes again
        remove_stale_temporaries(run_dir)
        write_atomic(run_dir / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in state.history))
    curves = StepCurves(run_dir, keep_epochs=len(state.history)) if rt.main else None
    distributed.barrier()

    history = state.history
    train_seconds, trained_images = sum(h["train_seconds"] for h in history), sum(h["images"] for h in history)
    waits = [h["data_wait_share"] for h in history if "data_wait_share" in h]
    test = None
    with TrainingProgress(config.method, config.epochs, state.steps_per_epoch, state.start_epoch,
                          enabled=rt.main) as progress:
        for epoch in range(state.start_epoch, config.epochs):
            stats = train_one_epoch(state, data, config, rt, epoch, progress, last_path)
            step_losses = stats.pop("step_losses")  # into steps.jsonl, not the epoch's line
            train_seconds += stats["train_seconds"]
            trained_images += stats["images"]
            waits.append(stats["data_wait_share"])
            val = evaluate(model, data.val, data.val_labels, config, rt, num_classes)
            test = evaluate(model, data.test, data.test_labels, config, rt, num_classes, keep_predictions=True)
            predictions = np.stack([data.test_labels, test.pop("predictions")])
            entry = {"epoch": epoch + 1, **stats, "val_accuracy": val["accuracy"],
                     "test_accuracy": test["accuracy"], "test_mean_class_accuracy": test["mean_class_accuracy"],
                     "lr": state.optimizer.param_groups[0]["lr"],
                     "relabelled": int((state.labels.cpu().numpy() != data.given_labels).sum())}
            history.append(entry)
            save_epoch(state, config, rt, run_dir, entry, val, test, epoch, predictions)
            if rt.main:
                curves.epoch(epoch, state.steps_per_epoch, step_losses, entry)
            progress.epoch(epoch, f"train {100 * stats['train_accuracy']:.1f} %, val {100 * val['accuracy']:.1f} % "
                                  f"({stats['train_seconds']:.0f} s)")

    if test is None:  # resumed after its last epoch (its record was lost): the last epoch's model, tested again
        test = evaluate(model, data.test, data.test_labels, config, rt, num_classes)
    execution = {"world_size": rt.world, "per_rank_batch": per_rank, "sync_bn": sync_batch_norm(config, rt),
                 "num_workers": resolve_workers(config.num_workers, rt.cuda, rt.world), "compile": config.compile,
                 "data_wait_share": float(np.mean(waits)) if waits else None}
    record = train_record(config, spec, adapter, data.plan, run_dir, rt, init=init, best=state.best, last_test=test,
                          params=params, macs=macs, notes=notes, precision=precision, execution=execution,
                          images_per_second=trained_images / max(train_seconds, 1e-9), minutes=train_seconds / 60)
    if rt.main:
        write_json(run_dir / "results.json", record)
        _publish_model(run_dir, record, adapter)
        if store is not None:
            try:
                save_result(store, record)
            except UdcbenchError as exc:  # the run is finished and its record on disk: the store is rebuilt from it
                stderr.print(f"[yellow]warning:[/] the run finished (its record: {run_dir / 'results.json'}), but "
                             f"the store could not take it ({exc}); 'udcbench runs --rebuild' adds it, nothing needs "
                             "retraining", highlight=False)
    distributed.barrier()
    return record
