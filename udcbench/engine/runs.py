"""Run folders and the two-stage logic shared by ``udcbench train`` and ``udcbench reproduce``."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from udcbench import __version__
from udcbench.config import RUN_SETTINGS, TrainConfig, apply_overrides
from udcbench.datasets.base import DatasetAdapter
from udcbench.errors import UdcbenchError
from udcbench.files import check_name, folder_lock, read_json, write_json
from udcbench.methods import MethodSpec, get_method

STORE = "results.sqlite"


def run_folder(out: Path, data_tag: str, method: str, preset: str, seed: int, tag: str = "") -> Path:
    """``runs/<data folder>/<method>-<preset>-s<seed>[-<tag>]``, always inside ``out``."""
    name = f"{method}-{preset}-s{seed}" + (f"-{tag}" if tag else "")
    return Path(out) / check_name(data_tag, "data folder name") / check_name(name, "run folder name")


def data_tag(adapter: DatasetAdapter) -> str:
    """The run folder's data part: the dataset folder's own name (``d/syn/train/..`` is ``syn``)."""
    return Path(os.path.abspath(adapter.root)).name if adapter.root is not None else adapter.name


def finished(run_dir: Path) -> dict | None:
    """The record of a finished run, or None; its ``run_dir`` is where the folder lies now (a moved or copied
    workspace), not where it was trained."""
    record = read_json(Path(run_dir) / "results.json")
    if isinstance(record, dict) and record.get("run_dir"):
        record["run_dir"] = str(run_dir)
    return record


#: The first file the trainer writes in a run folder: it marks the folder as udcbench's own, so that only such
#: folders are ever replaced (``--overwrite``, a run stopped before its first epoch).
RUN_MARKER = "udcbench-run.json"


def mark_run_folder(run_dir: Path) -> None:
    """Write the marker (the trainer does, before anything else in the folder)."""
    write_json(Path(run_dir) / RUN_MARKER, {"udcbench_version": __version__, "created": datetime.now().isoformat()})


def own_run_folder(run_dir: Path) -> bool:
    """Whether udcbench wrote ``run_dir``: its marker, or (folders from before the marker) a finished run's record
    naming a udcbench version."""
    run_dir = Path(run_dir)
    if run_dir.is_symlink() or not run_dir.is_dir():
        return False
    if isinstance(read_json(run_dir / RUN_MARKER), dict):
        return True
    record = read_json(run_dir / "results.json")
    return isinstance(record, dict) and bool((record.get("versions") or {}).get("udcbench"))


def _never_trained(run_dir: Path) -> bool:
    """A run folder of udcbench's holding only what the trainer writes before the first epoch ends."""
    return own_run_folder(run_dir) and {p.name for p in run_dir.iterdir()} <= {RUN_MARKER, "config.json",
                                                                               "metrics.jsonl", "steps.jsonl",
                                                                               "tensorboard"}


def _refuse_foreign(run_dir: Path) -> None:
    if run_dir.exists() and not own_run_folder(run_dir):
        raise UdcbenchError(f"refusing to replace {run_dir}: udcbench did not write it (no {RUN_MARKER} or run "
                            "record); move it away or pass --tag NAME to train into another folder")


def run_config(method: str, preset: str, seed: int, overrides: list[str] | None, weights: Path | None) -> TrainConfig:
    """The configuration ``udcbench train METHOD`` trains with: the preset, ``--set``, seed and ``--weights``."""
    config = apply_overrides(get_method(method).config(preset), overrides)
    config.seed = seed
    if weights is not None:
        config.weights = str(weights)
    return config


def _differences(run_dir: Path, config: TrainConfig) -> list[str] | None:
    """The settings in which the run in ``run_dir`` was trained otherwise than ``config`` would train it ([] when
    alike, None when the folder holds no run)."""
    saved = read_json(run_dir / "config.json")
    if saved is None:
        return None
    spec = get_method(config.method)
    wanted = replace(config, method_args=spec.args_for(config)).to_json()
    saved = TrainConfig.from_json(saved).to_json()
    differ = [k for k in wanted if k not in (*RUN_SETTINGS, "method_args", "weights") and saved[k] != wanted[k]]
    if not _same_weights(run_dir, saved["weights"], wanted["weights"]):
        differ.append("weights")
    return differ + [f"method_args.{k}" for k in wanted["method_args"]
                     if saved["method_args"].get(k) != wanted["method_args"][k]]


def _same_weights(run_dir: Path, saved: str | None, wanted: str | None) -> bool:
    """Whether a run started from ``saved`` weights starts from ``wanted``: the same file by content (sha256: the
    run's record keeps its digest), wherever either lies, so that a moved or copied workspace is the same study."""
    if saved is None or wanted is None:
        return saved == wanted
    from baselines.backbone import sha256_file

    if not Path(wanted).is_file():
        return Path(saved) == Path(wanted)
    record = read_json(run_dir / "results.json")
    digest = record.get("weights_sha256") if isinstance(record, dict) else None
    if digest is None and Path(saved).is_file():
        digest = sha256_file(saved)
    return digest == sha256_file(wanted) if digest else Path(saved) == Path(wanted)


def stage1_plan(method: str, adapter: DatasetAdapter, out: Path, preset: str, seed: int,
                overrides: list[str] | None, weights: Path | None, tag: str = "") -> tuple[Path, list[str]]:
    """Where a second-stage method's stage 1 trains, and the overrides it trains with (all but those of the
    arguments only the second stage reads).

    The untagged folder every variant shares, when it holds this stage 1 or nothing yet; with a tag, a stage 1
    that the overrides or ``weights`` change (or that the shared folder holds otherwise trained) gets the
    tagged folder, so that an ablation (``--set method_args.captions=false --tag nocap``) trains its own. A
    folder holding a stage 1 trained with other settings is refused, never reused."""
    from udcbench.engine.records import config_changes  # imports torch, which `--help` never does

    spec = get_method(method)
    second_only = {f"method_args.{name}" for name in spec.stage2_args}
    kept = [p for p in overrides or [] if p.partition("=")[0].strip().replace("-", "_") not in second_only]
    config = run_config(spec.stage1, preset, seed, kept, weights)
    changed = bool(config_changes(config, get_method(spec.stage1))) or weights is not None
    folder = run_folder(out, data_tag(adapter), spec.stage1, preset, seed)
    differ = _differences(folder, config)
    if tag and (differ or (differ is None and changed)):
        folder = run_folder(out, data_tag(adapter), spec.stage1, preset, seed, tag)
        differ = _differences(folder, config)
    if differ:
        raise UdcbenchError(f"{folder} holds a stage 1 trained with other {', '.join(differ)}; pass "
                            f"{'another ' if tag else ''}--tag NAME to train this run's own, or --from RUN")
    return folder, kept


@dataclass(frozen=True)
class Stage:
    """One training run of a resolved run: the method, its final configuration, its folder and what to do there."""

    spec: MethodSpec
    config: TrainConfig
    run_dir: Path
    action: str  # "train", "resume", "retrain" (the folder is replaced first) or "finished" (read back)
    note: str = ""  # said before it runs


@dataclass(frozen=True)
class ResolvedRun:
    """What ``udcbench train METHOD`` does, decided once from the arguments and the run folders before anything is
    written: a second-stage method's stage 1 (when it still trains) and the method's own run."""

    stages: tuple[Stage, ...]
    adapter: DatasetAdapter
    store: Path


def resolve_run(method: str, adapter: DatasetAdapter, out: Path, preset: str = "cpu", seed: int = 0,
                overrides: list[str] | None = None, weights: Path | None = None, tag: str = "", resume: bool = False,
                overwrite: bool = False, skip_finished: bool = False, from_run: Path | None = None) -> ResolvedRun:
    """Resolve one method's run: the spec, each stage's configuration and folder, and whether it trains, resumes or
    is finished. Every argument is checked here, before any data loads.

    A second-stage method (LRDif and its variants) first trains its stage 1 into that method's own
    folder (shared by every variant; ``stage1_plan``) unless ``from_run`` names one.
    ``skip_finished`` reads a finished run back and resumes an unfinished one (what ``reproduce`` needs after a
    kill); otherwise an existing folder needs ``resume`` or ``overwrite``."""
    spec = get_method(method)
    checked = apply_overrides(spec.config(preset), overrides)
    checked = replace(checked, method_args=spec.args_for(checked))
    checked.validate()
    if spec.check is not None:
        spec.check(checked)
    if weights is not None:  # a missing or refused weights file is said before any folder is replaced
        from baselines.backbone import WeightsError, read_checkpoint

        if not spec.backbone_weights:
            raise UdcbenchError(f"{method} has no pretrained backbone to load --weights into")
        try:
            read_checkpoint(Path(weights))
        except WeightsError as exc:
            raise UdcbenchError(str(exc)) from None
    out = Path(out)
    stages: list[Stage] = []
    extra = {}
    if spec.stage1:
        if from_run is not None:
            first = Path(from_run)
            if finished(first) is None:
                raise UdcbenchError(f"{first} is not a finished stage-1 run (no results.json)")
        else:
            first, pairs = stage1_plan(method, adapter, out, preset, seed, overrides, weights, tag)
            if finished(first) is None:  # killed before its first epoch ended: trained again, as the method's own
                action = "resume" if (first / "last.pt").is_file() else "retrain" if _never_trained(first) else "train"
                stages.append(Stage(get_method(spec.stage1), run_config(spec.stage1, preset, seed, pairs, weights),
                                    first, action))
        extra[spec.stage1_arg] = str(first)
    run_dir = run_folder(out, data_tag(adapter), method, preset, seed, tag)
    done, has_last = finished(run_dir) is not None, (run_dir / "last.pt").is_file()
    note = ""
    if _never_trained(run_dir):  # stopped before its first epoch ended (e.g. a non-finite loss): start again
        action = "retrain"
    elif skip_finished:
        action = "finished" if done else "resume" if has_last else "retrain" if run_dir.exists() else "train"
    elif resume and done:
        action, note = "finished", f"{run_dir} is finished; nothing to resume (--overwrite trains it again)"
    elif resume and has_last:
        action = "resume"
    elif resume and not run_dir.exists():
        action, note = "train", f"nothing to resume at {run_dir} yet: starting it"
    elif resume:
        raise UdcbenchError(f"nothing to resume in {run_dir} (no last.pt)")
    elif run_dir.exists():
        if not overwrite:
            hint = "--overwrite to train again" if done else "--resume to continue it, or --overwrite"
            raise UdcbenchError(f"{run_dir} exists ({'finished' if done else 'unfinished'}); pass {hint}")
        action = "retrain"
    else:
        action = "train"
    if action == "retrain":
        _refuse_foreign(run_dir)
    config = run_config(method, preset, seed, overrides, weights)
    config.method_args.update(extra)
    stages.append(Stage(spec, config, run_dir, action, note))
    return ResolvedRun(tuple(stages), adapter, out / STORE)


def execute(run: ResolvedRun, device: str | None = None, cache_dir: Path | None = None,
            log: Callable[[str], None] = print) -> dict:
    """Train a resolved run's stages in order and return the final record. Under ``torchrun`` every rank resolves
    alike (they all read the folders before any rank writes: the barrier below) and rank 0 alone replaces a
    folder."""
    from baselines import distributed
    from udcbench.engine.runtime import runtime
    from udcbench.engine.store import check_store
    from udcbench.engine.trainer import train

    rt = runtime(device)
    if rt.main:  # a store that cannot take the record is said (or rebuilt) now, not after the training
        check_store(run.store)
    distributed.barrier()  # every rank has resolved before rank 0 changes a folder
    record: dict = {}
    for stage in run.stages:
        if stage.note:
            log(stage.note)
        if stage.action == "finished":
            record = finished(stage.run_dir) or {}
            continue
        with folder_lock(stage.run_dir, "run folder") if rt.main else nullcontext():  # one writer per run folder
            if rt.main:
                _check_unchanged(stage)
            if stage.action == "retrain" and rt.main:
                shutil.rmtree(stage.run_dir)
            distributed.barrier()
            log(f"training {stage.spec.name} ({stage.config.preset}) on {run.adapter.describe()} -> {stage.run_dir}"
                + (" (resumed)" if stage.action == "resume" else ""))
            record = train(stage.config, run.adapter, stage.run_dir, store=run.store,
                           resume=stage.action == "resume", device=device, cache_dir=cache_dir, spec=stage.spec)
    return record


def _check_unchanged(stage: Stage) -> None:
    """Under the folder's lock: the folder is as the run was resolved (another command may have written it in
    between), and a folder to be replaced is udcbench's."""
    if stage.action == "train" and stage.run_dir.exists() and any(stage.run_dir.iterdir()):
        raise UdcbenchError(f"{stage.run_dir} was written by another command meanwhile; run again to resume it")
    if stage.action == "retrain":
        _refuse_foreign(stage.run_dir)


def train_method(method: str, adapter: DatasetAdapter, out: Path, preset: str = "cpu", seed: int = 0,
                 overrides: list[str] | None = None, weights: Path | None = None, tag: str = "",
                 resume: bool = False, overwrite: bool = False, skip_finished: bool = False,
                 from_run: Path | None = None, device: str | None = None, cache_dir: Path | None = None,
                 log: Callable[[str], None] = print) -> dict:
    """:func:`resolve_run`, then :func:`execute`: train one method into its run folder and return the final
    record."""
    run = resolve_run(method, adapter, out, preset, seed, overrides, weights, tag, resume, overwrite, skip_finished,
                      from_run)
    return execute(run, device, cache_dir, log)
