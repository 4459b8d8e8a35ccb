"""The prepared GPU check: everything udcbench does on a GPU, in one run of under 8 minutes, into one CSV.

    python benchmarks/gpu/check.py [--out DIR] [--budget-s 450]          # on a machine with an NVIDIA GPU
    python benchmarks/gpu/check.py --cpu --methods test_cnn resnet18     # the CPU fallback (what the tests run)

Run it through ``check.sh`` beside it, which installs udcbench and the carried wheels first (README.md there).
Rows (``check`` column), each with its status (``ok``, ``FAIL: ...`` or ``skipped: ...``):

- ``environment``: the device, torch, the precision ``amp`` means there.
- ``smoke``: every registered method trains at the ``smoke`` budget on the device (stage 1 before stage 2).
- ``resume``: a run stopped after its first of two epochs resumes on the device and records both.
- ``sync``: a few training steps and an eval batch of every method under ``torch.cuda.set_sync_debug_mode("error")``
  (no read back to the host inside the step; GPU only).
- ``ddp``: ``torchrun --nproc_per_node 1 -m udcbench train resnet18`` under NCCL (gloo on the CPU): DDP, the
  collectives and their devices, in one process.
- ``throughput``: training images/s and the share of step time spent waiting for data, at the second epoch (the
  first holds cuDNN's autotuning and compilation), with the real pipeline (cache, loader, device augmentation):
  ``resnet18`` at 224 px and ``lrdif`` at the paper's 112 px (and compiled), on the built-in faces.
- ``launches``: kernels (CPU: outermost ATen operators) in one training step, eager and compiled.
- ``cost``: the engine's training step and an inference batch of each method at its ``paper`` batch and input size
  (random data): images/s of both, peak GPU memory, kernels; ``benchmarks/gpu_cost.py --from-check`` makes them
  the measured rows of ``udcbench reproduce --dry-run --gpu``.
- ``paper_epoch``: one full epoch of ``resnet18 --preset paper`` on the built-in faces, with its evaluation.

Sections past ``--budget-s`` are skipped (and say so), and a row past its own limit (120 s, the sync rows 60 s)
fails with that said, so that the script ends inside its lease. Every row names the device.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from udcbench.datasets import create_dataset  # noqa: E402
from udcbench.datasets.generate import generate_synthetic  # noqa: E402
from udcbench.engine.runs import train_method  # noqa: E402
from udcbench.methods import create_method, get_method, method_names  # noqa: E402

COLUMNS = ("check", "method", "status", "seconds", "images_per_second", "data_wait_share", "peak_gb",
           "kernels_per_step", "precision", "device", "detail")


class RowTimeout(Exception):
    """A row past its wall-clock limit."""


class Check:
    def __init__(self, budget_s: float, device: str = "cpu", row_limit_s: float = 120.0):
        self.rows: list[dict] = []
        self.start = time.perf_counter()
        self.budget_s = budget_s
        self.device = device
        self.row_limit_s = row_limit_s

    def over(self) -> bool:
        return time.perf_counter() - self.start > self.budget_s

    def add(self, row: dict) -> None:
        self.rows.append({"device": self.device, **row})

    def run(self, check: str, method: str, fn, limit_s: float | None = None) -> None:
        """Run ``fn() -> dict`` as one row: its values, ``ok``, or the error's first line. A row is stopped at its
        wall-clock limit (``limit_s``, else the default; never past the script's budget)."""
        if self.over():
            self.add({"check": check, "method": method, "status": "skipped: past the time budget"})
            return
        left = self.budget_s - (time.perf_counter() - self.start)
        limit = max(1, int(min(limit_s or self.row_limit_s, left)))
        start = time.perf_counter()

        def stop(signum, frame):
            raise RowTimeout(f"over its {limit} s")

        previous = signal.signal(signal.SIGALRM, stop)
        signal.alarm(limit)
        try:
            values = fn() or {}
            status = "ok"
        except RowTimeout as exc:
            values, status = {}, f"FAIL: {exc}"
        except Exception as exc:  # a failing item is a row, not the end of the check
            first = str(exc).strip().splitlines()[0][:600] if str(exc).strip() else ""
            values, status = {}, f"FAIL: {type(exc).__name__}: {first}"
            traceback.print_exc()
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
        row = {"check": check, "method": method, "status": status, "seconds": round(time.perf_counter() - start, 2),
               **values}
        self.add(row)
        print(" ".join(f"{k}={row[k]}" for k in row), file=sys.stderr, flush=True)


def with_repo_on_path(environ) -> dict:
    """``environ`` with the repository first on PYTHONPATH, the folders already there kept (the carried wheels that
    ``check.sh`` put there hold kornia and open_clip on a machine without them)."""
    kept = [p for p in environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {**environ, "PYTHONPATH": os.pathsep.join([str(REPO), *kept])}


def second_epoch(record: dict) -> dict:
    """Images/s and data-wait share of a run's last epoch (metrics.jsonl)."""
    lines = (Path(record["run_dir"]) / "metrics.jsonl").read_text().splitlines()
    last = json.loads(lines[-1])
    return {"images_per_second": round(last["images"] / last["train_seconds"], 1),
            "data_wait_share": round(last["data_wait_share"], 4), "precision": record["precision"]}


def fair_model(method: str) -> list[str]:
    """``--set`` pairs that give a method with CLIP encoders its fair model (the baselines' trunk): its paper
    preset's own model needs a CLIP checkpoint (``--clip``), which this machine does not have; [] otherwise."""
    spec = get_method(method)
    return [f"method_args.{k}={json.dumps(v)}" for k, v in spec.cpu_method_args.items()] \
        if "clip_weights" in spec.file_args else []


def paper_config(method: str):
    """The paper preset's configuration (the fair model where the paper's needs CLIP: :func:`fair_model`)."""
    from udcbench.config import apply_overrides

    return apply_overrides(get_method(method).config("paper"), fair_model(method))


def launches(method: str, size: int, batch: int, device: str, compiled: bool) -> dict:
    """Kernels (on a CPU: outermost ATen operators) that one training step issues, after three warm-up steps."""
    from udcbench.engine.runtime import runtime
    from udcbench.engine.step_cost import count_kernels, synthetic_steps

    rt = runtime(device)
    config = paper_config(method)
    config.input_size, config.batch_size, config.compile = size, batch, compiled
    steps = synthetic_steps(create_method(method, 7, config), config, rt)
    for _ in range(3):
        steps.train()
    return {"kernels_per_step": count_kernels(steps.train, rt.cuda), "precision": rt.precision(config.amp),
            "detail": f"{size} px, batch {batch}"}


def no_host_sync(method: str, device: str, steps: int = 3) -> dict:
    """A few training steps and one evaluation batch of ``method`` under ``torch.cuda.set_sync_debug_mode("error")``:
    any read of a GPU value back to the host inside the step (``.item()``, ``bool(tensor)``, a blocking copy)
    raises. The engine's own checks (every 10 steps, at an epoch's end) are outside these steps."""
    from baselines.base import Batch
    from udcbench.engine.augment import eval_input
    from udcbench.engine.runtime import runtime
    from udcbench.engine.trainer import _wrap

    rt = runtime(device)
    if not rt.cuda:
        raise RuntimeError("the sync check needs a GPU")
    config = paper_config(method)
    config.input_size, config.batch_size = min(config.input_size, 112), 16
    model = rt.place(create_method(method, 7, config))
    step = _wrap(model, config, rt)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad])
    size = config.input_size
    batches = [Batch(torch.randn(16, 3, size, size, device=rt.device).contiguous(memory_format=torch.channels_last),
                     torch.randint(0, 7, (16,), device=rt.device), torch.arange(16, device=rt.device))
               for _ in range(steps + 1)]
    images = torch.randint(0, 255, (16, size, size, 3), dtype=torch.uint8, device=rt.device)
    with rt.autocast(config.amp):  # the first step (cuDNN's autotuning) outside the check
        loss = step(batches[0], 0).loss
    loss.backward()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for data in batches[1:]:
            with rt.autocast(config.amp):
                loss = step(data, 0).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad(), rt.autocast(config.amp):
            model(eval_input(images, config))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return {"precision": rt.precision(config.amp), "detail": f"{steps} training steps and an eval batch, {size} px"}


def resumed(train) -> dict:
    """A run stopped after its first of two epochs and resumed: its checkpoint loads on the CPU and the optimizer
    state follows the model to the device; the resumed run ends with both epochs recorded."""
    from udcbench.engine import trainer

    real = trainer.save_epoch

    class Stop(Exception):
        pass

    def stop_after_the_first(*args, **kwargs):
        real(*args, **kwargs)
        raise Stop

    trainer.save_epoch = stop_after_the_first
    try:
        train("resnet18", "smoke", ["epochs=2", "max_steps=2"], "resume")
    except Stop:
        pass
    finally:
        trainer.save_epoch = real
    record = train("resnet18", "smoke", ["epochs=2", "max_steps=2"], "resume", resume=True)
    epochs = len((Path(record["run_dir"]) / "metrics.jsonl").read_text().splitlines())
    if epochs != 2:
        raise RuntimeError(f"the resumed run recorded {epochs} epochs, not 2")
    return {"precision": record["precision"], "detail": "stopped after epoch 1 of 2, resumed: 2 epochs recorded"}


def step_cost(method: str, device: str, size: int | None = None, batch: int | None = None) -> dict:
    """The engine's training step and an inference batch of ``method`` at its paper batch and input size (or those
    given), random data: images/s of both after warm-up, peak GPU memory, the step's kernels. ``benchmarks/gpu_cost.py
    --from-check`` turns these rows into the measured rows of ``reproduce --dry-run --gpu``."""
    from udcbench.engine.records import git_commit
    from udcbench.engine.runtime import runtime
    from udcbench.engine.step_cost import count_kernels, images_per_second, synthetic_steps

    rt = runtime(device)
    config = paper_config(method)
    config.input_size, config.batch_size = size or config.input_size, batch or config.batch_size
    if rt.cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    steps = synthetic_steps(create_method(method, 7, config), config, rt)
    repeats = 10 if rt.cuda else 2
    train = images_per_second(steps.train, steps.batch_size, rt, steps=repeats)
    peak = round(torch.cuda.max_memory_allocated() / 2**30, 2) if rt.cuda else ""
    infer = images_per_second(steps.infer, steps.batch_size, rt, steps=repeats)
    detail = {"input_size": config.input_size, "batch_size": config.batch_size, "infer_images_per_second":
              round(infer, 1), "fair_model": bool(fair_model(method)), "commit": git_commit() or ""}
    return {"images_per_second": round(train, 1), "peak_gb": peak, "kernels_per_step": count_kernels(steps.train,
            rt.cuda), "precision": rt.precision(config.amp), "detail": json.dumps(detail)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu", action="store_true", help="the CPU fallback: small sizes, gloo, no peak memory")
    parser.add_argument("--methods", nargs="*", help="methods of the smoke, sync and cost rows (default: all)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results", help="folder of the CSV")
    parser.add_argument("--budget-s", type=float, default=450.0, help="skip sections started after this")
    parser.add_argument("--workspace", type=Path, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    os.environ.setdefault("UDCBENCH_QUIET", "1")
    cuda = not args.cpu and torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    methods = args.methods or method_names(include_test=True)
    check = Check(args.budget_s, "cuda" if not args.cpu and torch.cuda.is_available() else "cpu")
    work = Path(args.workspace or tempfile.mkdtemp(prefix="udcbench-gpu-check-"))
    runs, cache = work / "runs", work / ".udcbench-cache"

    name = torch.cuda.get_device_name() if cuda else "cpu"
    check.run("environment", "-", lambda: {"detail": f"{name}; torch {torch.__version__}; "
                                                     f"{os.cpu_count()} cores; bf16 "
                                                     f"{torch.cuda.is_bf16_supported() if cuda else '-'}"})
    n_train, n_test, size = (2800, 700, 100) if cuda else (70, 35, 32)
    generate_synthetic(work / "faces", n_train=n_train, n_test=n_test, size=size, workers=min(16, os.cpu_count() or 1))
    faces = create_dataset("imagefolder", work / "faces")

    def train(method: str, preset: str, overrides: list[str], tag: str = "", resume: bool = False) -> dict:
        return train_method(method, faces, runs, preset=preset, overrides=overrides, tag=tag, overwrite=not resume,
                            skip_finished=resume, device=device, cache_dir=cache,
                            log=lambda line: print(line, file=sys.stderr))

    # the cheap, decisive rows first: every method trains, a resume, no host sync in the step
    for method in methods:
        check.run("smoke", method, lambda m=method: {"precision": train(m, "smoke", [])["precision"]})
    check.run("resume", "resnet18", lambda: resumed(train))
    for method in methods:
        if cuda:
            check.run("sync", method, lambda m=method: no_host_sync(m, device), limit_s=60)
        else:
            check.add({"check": "sync", "method": method, "status": "skipped: no GPU"})

    def ddp() -> dict:
        out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
                              "-m", "udcbench", "train", "resnet18", "--data",
                              str(work / "faces"), "--preset", "smoke", "--device", device, "--out", str(work / "ddp"),
                              "--overwrite", "--json"],
                             cwd=work, capture_output=True, text=True, timeout=300,
                             env=with_repo_on_path(os.environ))
        if out.returncode:  # the tail of its stderr, not torchrun's banner line
            raise RuntimeError(" | ".join(out.stderr.strip().splitlines()[-6:]) or f"exit {out.returncode}")
        record = json.loads(out.stdout)
        if "(DDP)" not in record["device"]:
            raise RuntimeError(f"not under DDP: {record['device']}")
        return {"precision": record["precision"], "detail": f"{record['device']}, {'nccl' if cuda else 'gloo'}"}

    check.run("ddp", "resnet18", ddp)

    speed = [("resnet18", 224, []), ("lrdif", 112, []), ("lrdif", 112, ["compile=true"])] if cuda else \
        [("resnet18", 32, []), ("lrdif", 32, [])]
    steps = 40 if cuda else 3
    for method, px, extra in speed:
        tag = "speed" + ("-compiled" if extra else "")
        check.run("throughput", method + (" (compiled)" if extra else ""), lambda m=method, p=px, e=extra, t=tag: {
            **second_epoch(train(m, "paper", [f"input_size={p}", "epochs=2", f"max_steps={steps}", *e,
                                              *fair_model(m)] + ([] if cuda else ["batch_size=16"]), t)),
            "detail": f"{p} px, epoch 2 of 2, {steps} steps" + (", the fair model" if fair_model(m) else "")})
    for method, px, compiled in (("resnet18", 224, False), ("lrdif", 112, False), ("lrdif", 112, True)):
        if not cuda:
            if compiled:  # inductor builds C++ for minutes, and a compiled graph is one operator to the profiler
                check.add({"check": "launches", "method": f"{method} (compiled)",
                                   "status": "skipped: measured on a GPU only"})
                continue
            px = 32
        check.run("launches", method + (" (compiled)" if compiled else ""),
                  lambda m=method, p=px, c=compiled: launches(m, p, 64 if cuda else 4, device, c))
    for method in methods:
        check.run("cost", method, lambda m=method: step_cost(m, device) if cuda else step_cost(m, device, 32, 4))

    def paper_epoch() -> dict:
        record = train("resnet18", "paper", ["epochs=1"] + ([] if cuda else ["input_size=32", "max_steps=3"]),
                       "epoch")
        return {**second_epoch(record), "detail": f"test accuracy {100 * record['test_at_best']['accuracy']:.1f} % "
                                                  f"after 1 epoch, {record['minutes'] * 60:.1f} s of training"}

    check.run("paper_epoch", "resnet18", paper_epoch)

    def robustness() -> dict:
        """A UDC-C sweep with the degradation on this device against the same sweep synthesised on the CPU: the
        cached images (at most a level or two apart: float order) and the accuracies."""
        import numpy as np

        from udcbench.robustness import load_model, load_panels, sweep

        run_dir = Path(train("resnet18", "smoke", [], "robustness")["run_dir"])
        panels, levels, limit = load_panels(["toled", "lowlight"]), (1, 5), 350 if cuda else 35
        start = time.perf_counter()
        here = sweep(load_model(run_dir, device, "fp32"), faces, panels, levels, cache / "here", device=device,
                     limit=limit)
        seconds = time.perf_counter() - start
        cpu = sweep(load_model(run_dir, "cpu", "fp32"), faces, panels, levels, cache / "cpu", workers=4, limit=limit)
        arrays = [sorted((cache / name / "robustness").glob("*.npy")) for name in ("here", "cpu")]
        gap = max(int(np.abs(np.load(a).astype(int) - np.load(b).astype(int)).max()) for a, b in zip(*arrays))
        accuracy = max(abs(a["accuracy"] - b["accuracy"]) for a, b in zip(here.cells, cpu.cells))
        if gap > 2 or accuracy > 1.0:
            raise RuntimeError(f"{device} synthesis differs from the CPU's: {gap} levels, {accuracy:.2f} points")
        return {"detail": f"{len(here.cells)} cells x {here.images} images in {seconds:.1f} s on {device}; vs CPU "
                          f"synthesis: max {gap} levels, accuracy within {accuracy:.2f} points"}

    check.run("robustness", "resnet18", robustness)

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"gpu_check{'' if cuda else '-cpu'}.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, restval="")
        writer.writeheader()
        writer.writerows(check.rows)
    failed = [r for r in check.rows if r["status"].startswith("FAIL")]
    for row in check.rows:
        print(",".join(str(row.get(c, "")) for c in COLUMNS))
    print(f"wrote {path}: {len(check.rows)} rows, {len(failed)} failed, {time.perf_counter() - check.start:.0f} s")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
