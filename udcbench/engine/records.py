"""What a run records: its configuration changes, the data's condition and manifest digest, the model's
MACs, the git commit, and the finished run's ``results.json``."""

from __future__ import annotations

import platform
import subprocess
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from udcbench import __version__
from udcbench.config import RUN_SETTINGS, TrainConfig
from udcbench.datasets.base import DatasetAdapter
from udcbench.engine.data import SplitPlan
from udcbench.engine.runtime import Runtime
from udcbench.files import check_name
from udcbench.methods import MethodSpec

#: What makes no result: a commit with uncommitted changes anywhere else in the checkout is marked ``+dirty``.
NOT_CODE = ("docs", "benchmarks", "tests", "*.md")


@cache
def git_commit() -> str | None:
    """The checkout's commit, with ``+dirty`` when the code (all but :data:`NOT_CODE`) has uncommitted changes: a
    result then comes from code no commit holds. None outside a git checkout (an installed package). Read once per
    process (the trainer reads it as it starts): a checkout updated while a run trains does not rename the code that
    trained it."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        commit = out.stdout.strip()
        if not commit:
            return None
        spec = [":/", *(f":(exclude,top){path}" for path in NOT_CODE)]
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *spec], cwd=here,
                                 capture_output=True, text=True, timeout=5)
        return commit + ("+dirty" if changed.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def config_changes(config: TrainConfig, spec: MethodSpec) -> dict[str, Any]:
    """Fields of ``config`` that differ from its preset in ``spec`` (the ``--set`` overrides), besides seed,
    weights, the run settings (:data:`~udcbench.config.RUN_SETTINGS`), the argument naming a stage-1 run and those
    naming weights files (``MethodSpec.file_args``)."""
    preset = spec.config(config.preset)
    ours, theirs = config.to_json(), preset.to_json()
    changes = {k: v for k, v in ours.items()
               if k not in ("seed", "weights", "method_args", *RUN_SETTINGS) and theirs[k] != v}
    for key in set(config.method_args) | set(preset.method_args):
        if key not in (spec.stage1_arg, *spec.file_args) and config.method_args.get(key) != preset.method_args.get(key):
            changes[f"method_args.{key}"] = config.method_args.get(key)
    return changes


def dataset_condition(adapter: DatasetAdapter) -> tuple[str, str | None]:
    """("clean" or the UDC recipe's name, sha256 of the dataset's manifest.json or None)."""
    name = adapter.manifest.get("recipe_name") or "clean"
    return check_name(name, f"{adapter.root}/manifest.json recipe_name"), adapter.manifest_sha256


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


def train_record(config: TrainConfig, spec: MethodSpec, adapter: DatasetAdapter, plan: SplitPlan, run_dir: Path,
                 rt: Runtime, *, init: dict, best: dict, last_test: dict, params: int, macs: float | None,
                 notes: dict, precision: str, execution: dict, images_per_second: float, minutes: float
                 ) -> dict:
    """A finished training run's ``results.json``: metrics at the epoch chosen on validation and at the last,
    and provenance (method, init, data and its manifest, split, seed, device, versions, commit), and how it executed
    (``execution``: world size, per-rank batch, loader workers, compile, the share of time spent waiting for data),
    which leaves its numbers as they are."""
    condition, manifest_sha = dataset_condition(adapter)
    return {
        "run_id": str(run_dir.resolve()),
        "kind": "train",
        "method": config.method,
        "method_title": spec.title,
        "paper": spec.paper,
        "backbone": spec.backbone,
        **init,
        "preset": config.preset,
        "input_size": config.input_size,
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
        "test_at_last": last_test,
        "params": params,
        "gmacs": None if macs is None else macs / 1e9,
        "notes": notes,
        "train_images_per_second": images_per_second,
        "inference_images_per_second": last_test["images_per_second"],
        "minutes": minutes,
        "device": str(rt.device) + (f" x{rt.world}" if rt.world > 1 else "") + (" (DDP)" if rt.ddp and rt.world == 1
                                                                                 else ""),
        "precision": precision,
        "execution": execution,
        "versions": {"udcbench": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "git_commit": git_commit(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run_dir": str(run_dir),
    }
