"""A study's runs side by side: one process per slot (a GPU, or a share of the CPU's cores standing in for one),
in dependency order (a second stage after its stage 1), each with its own log.

A study is many independent runs; splitting each run's batch over N GPUs (DDP) makes every one of them
launch-bound, where one run per GPU finishes the study about N times sooner. DDP stays the tool for one big run.
Every run is :func:`udcbench.engine.runs.train_method` with ``skip_finished``: a finished run is read back, an
unfinished one resumed, so a killed study (or one slot's process) continues where it stopped when started again.
"""

from __future__ import annotations

import multiprocessing
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from udcbench.errors import UdcbenchError

#: Seconds between looks at the running processes.
POLL_S = 0.2


@dataclass(frozen=True)
class Slot:
    """Where one run at a time trains: ``device`` (cuda or cpu) and the environment its process gets."""

    name: str
    device: str
    env: dict[str, str] = field(default_factory=dict)
    threads: int | None = None  # torch threads of a CPU slot


def parse_slots(gpus: str | None, cpu_slots: int | None) -> list[Slot]:
    """``--gpus 0,1,3`` (or ``all``: every visible GPU), or ``--slots N``: N CPU slots, each its share of the cores."""
    if gpus and cpu_slots:
        raise UdcbenchError("give --gpus or --slots, not both")
    if gpus:
        import torch

        visible = torch.cuda.device_count()
        if not visible:
            raise UdcbenchError("--gpus: no CUDA device is visible here (--slots N runs N processes on the CPU)")
        try:
            ids = list(range(visible)) if gpus == "all" else [int(g) for g in gpus.split(",")]
        except ValueError:
            raise UdcbenchError(f"--gpus takes device numbers such as 0,1,2 or all, not '{gpus}'") from None
        if not ids or len(set(ids)) != len(ids) or not all(0 <= g < visible for g in ids):
            raise UdcbenchError(f"--gpus {gpus}: {visible} GPU(s) visible here (0-{visible - 1}), each at most once")
        return [Slot(f"cuda:{g}", "cuda", {"CUDA_VISIBLE_DEVICES": str(g)}) for g in ids]
    if cpu_slots is None or cpu_slots < 1:
        raise UdcbenchError("--slots is a number of processes, at least 1")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = max(1, cores // cpu_slots)
    env = {"OMP_NUM_THREADS": str(threads), "CUDA_VISIBLE_DEVICES": ""}
    return [Slot(f"cpu-{k}", "cpu", env, threads) for k in range(cpu_slots)]


@dataclass(frozen=True)
class Task:
    """One run: where it trains, what trains it (:func:`train_method`'s arguments) and the run folders that must be
    finished before it starts."""

    run_dir: Path
    method: str
    data: tuple[str, str | None, dict[str, Any]]  # the adapter's name, folder and options
    arguments: dict[str, Any]  # train_method's other keyword arguments (out, preset, seed, overrides, weights, tag)
    after: tuple[Path, ...] = ()


def _run(task: Task, slot: Slot, cache_dir: str | None, log_path: str) -> None:
    """A slot's process: its environment, its log as stdout and stderr, then the run (exit 1 on an error, its
    traceback in the log)."""
    os.environ.update(slot.env)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    try:
        import torch

        from udcbench.datasets import create_dataset
        from udcbench.engine.runs import train_method

        if slot.threads:
            torch.set_num_threads(slot.threads)
        name, root, options = task.data
        adapter = create_dataset(name, Path(root) if root else None, **options)
        train_method(task.method, adapter, device=slot.device, cache_dir=Path(cache_dir) if cache_dir else None,
                     skip_finished=True, log=lambda line: print(line, flush=True), **task.arguments)
    except BaseException:  # noqa: BLE001 - any failure: its traceback in the run's log, exit 1
        traceback.print_exc()
        os._exit(1)


def run_tasks(tasks: list[Task], slots: list[Slot], logs: Path, cache_dir: Path | None,
              log: Callable[[str], None] = print) -> None:
    """Train ``tasks`` on ``slots``, each as soon as a slot is free and the runs it comes after are finished; the
    others go on when one fails, and the failures (with their logs) are raised together at the end."""
    from udcbench.engine.runs import finished

    known: set[Path] = set()  # runs seen finished (their results.json is read until then, not at every poll after)

    def done(folder: Path) -> bool:
        if folder not in known and finished(folder) is not None:
            known.add(folder)
        return folder in known

    logs.mkdir(parents=True, exist_ok=True)
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: CUDA_VISIBLE_DEVICES before torch starts
    pending, running, failed = list(tasks), {}, {}
    free = list(slots)
    while pending or running:
        for task in [t for t in pending if any(d in failed for d in t.after)]:  # its first stage failed: skipped
            pending.remove(task)
            failed[task.run_dir] = f"not run: {', '.join(str(d) for d in task.after if d in failed)} failed"
        while free:
            ready = next((t for t in pending if all(done(d) for d in t.after)), None)
            if ready is None:
                break
            pending.remove(ready)
            slot = free.pop(0)
            log_path = logs / f"{ready.run_dir.parent.name}-{ready.run_dir.name}.log"
            process = context.Process(target=_run, args=(ready, slot, str(cache_dir) if cache_dir else None,
                                                         str(log_path)), daemon=False)
            process.start()
            running[ready.run_dir] = (ready, slot, process, log_path)
            log(f"{slot.name} (pid {process.pid}): {ready.method} -> {ready.run_dir} (log: {log_path})")
        if pending and not running:  # nothing runs and nothing can start: a dependency is missing
            missing = sorted({str(d) for t in pending for d in t.after if not done(d)})
            raise UdcbenchError(f"the study's runs wait for runs that no task trains: {', '.join(missing)}")
        time.sleep(POLL_S)
        for run_dir, (task, slot, process, log_path) in list(running.items()):
            if process.exitcode is None:
                continue
            process.join()
            del running[run_dir]
            free.append(slot)
            if process.exitcode != 0:
                failed[run_dir] = f"exit {process.exitcode}, log {log_path}"
                log(f"{slot.name}: {task.method} failed ({failed[run_dir]})")
    if failed:
        raise UdcbenchError(f"{len(failed)} run(s) of the study did not finish: "
                            + "; ".join(f"{d.name} ({why})" for d, why in failed.items())
                            + ". Run the same command again to resume them")
