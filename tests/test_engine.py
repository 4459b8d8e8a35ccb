import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import udcbench.engine.runtime as runtime_module
import udcbench.engine.trainer as trainer
from udcbench.cli import app
from udcbench.config import apply_overrides
from udcbench.datasets import create_dataset
from udcbench.engine.data import plan_splits
from udcbench.engine.metrics import classification_metrics
from udcbench.engine.store import load_results
from udcbench.errors import UdcbenchError
from udcbench.methods import create_method, get_method

from conftest import REPO, write_png

runner = CliRunner()


def small_synthetic():
    return create_dataset("synthetic", n_train=84, n_test=35, size=32)


def smoke_config(**overrides):
    config = get_method("test_cnn").config("smoke")
    config.max_steps = 3
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def test_metrics_by_hand():
    m = classification_metrics([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], 3)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["per_class_accuracy"] == [0.5, 1.0, 0.0]
    assert m["mean_class_accuracy"] == pytest.approx(0.5)
    # F1: class 0 p=1/2 r=1/2 -> 1/2 ; class 1 p=2/3 r=1 -> 0.8 ; class 2 -> 0
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 0) / 3)
    assert m["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]


def test_validation_never_comes_from_the_test_split(tmp_path: Path):
    for split in ("train", "valid"):  # like FERPlus without its test folder: valid is the test split
        for cls in ("neutral", "happy", "surprise", "sad", "angry", "disgust", "fear"):
            for i in range(4):
                write_png(tmp_path / "f" / split / cls / f"{i}.png", i, (8, 8))
    plan = plan_splits(create_dataset("imagefolder", tmp_path / "f"), 0.5, 0)
    assert plan.test_split == "valid" and "train" in plan.val_source and len(plan.val) == 14
    assert not {r.id for r in plan.val} & {r.id for r in plan.test}
    assert not {r.id for r in plan.val} & {r.id for r in plan.train}
    syn = plan_splits(small_synthetic(), 0.1, 0)
    assert len(syn.val) == 7 and len(syn.train) == 77 and syn.test_split == "test"


def test_missing_class_and_bad_overrides_are_refused(tmp_path: Path):
    for split, classes in (("train", ["happy", "sad"]), ("test", ["happy"])):
        for cls in classes:
            for i in range(2):
                write_png(tmp_path / "f" / split / cls / f"{i}.png", i)
    with pytest.raises(UdcbenchError, match="no image of class"):
        plan_splits(create_dataset("imagefolder", tmp_path / "f"), 0.5, 0)
    # selection never looks at the test split: no validation part, no run
    with pytest.raises(UdcbenchError, match="no validation part .* pass --set val_fraction=0.1"):
        plan_splits(create_dataset("imagefolder", tmp_path / "f"), 0.0, 0)
    config = smoke_config()
    with pytest.raises(UdcbenchError, match="unknown field"):
        apply_overrides(config, ["lrr=1"])
    assert apply_overrides(config, ["lr=0.5", "epochs=4", "amp=false"]).lr == 0.5
    scn = get_method("scn").config("cpu")
    with pytest.raises(UdcbenchError, match="method_args.relabel_start: expected a number, got 'abc'"):
        apply_overrides(scn, ["method_args.relabel_start=abc"])
    assert apply_overrides(scn, ["method_args.relabel_start=1"]).method_args["relabel_start"] == 1.0
    assert isinstance(scn.method_args["relabel_start"], float)


def test_train_writes_records_and_resume_matches_an_uninterrupted_run(tmp_path: Path, monkeypatch):
    ds = small_synthetic()
    config = smoke_config(epochs=3)
    whole = trainer.train(config, ds, tmp_path / "whole", store=tmp_path / "results.sqlite")
    for name in ("config.json", "metrics.jsonl", "results.json", "best.pt", "last.pt"):
        assert (tmp_path / "whole" / name).is_file(), name
    assert len((tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()) == 3
    assert whole["init"] == "scratch" and whole["condition"] == "clean" and whole["params"] > 0
    assert [r["method"] for r in load_results(tmp_path / "results.sqlite")] == ["test_cnn"]

    real = trainer.evaluate
    calls = {"n": 0}

    def killed(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # during epoch 2, after epoch 1 was checkpointed
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "evaluate", killed)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(config, ds, tmp_path / "cut")
    monkeypatch.setattr(trainer, "evaluate", real)
    resumed = trainer.train(config, ds, tmp_path / "cut", resume=True)
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("train_seconds", "data_wait_share")} for r in rows]  # noqa: E731
    history = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    history_cut = [json.loads(line) for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert strip(history) == strip(history_cut)
    assert resumed["test_at_last"]["confusion"] == whole["test_at_last"]["confusion"]
    a = torch.load(tmp_path / "whole" / "last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "cut" / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_record_names_the_commit_its_process_loaded_not_a_later_checkout(monkeypatch):
    from udcbench.engine import records

    loaded = records.git_commit()
    moved = "f" * 40  # the checkout is updated to another commit while a run trains

    def git(args, **kwargs):
        return subprocess.CompletedProcess(args, 0, stdout=moved if "rev-parse" in args else "", stderr="")

    monkeypatch.setattr(records.subprocess, "run", git)
    try:
        assert records.git_commit() == loaded
        records.git_commit.cache_clear()  # a new process reads the checkout as it is then
        assert records.git_commit() == moved
    finally:
        records.git_commit.cache_clear()


def test_a_second_stage_method_killed_in_its_stage_1_before_the_first_epoch_ends_trains_it_again(tmp_path: Path,
                                                                                                    monkeypatch):
    """What ``reproduce`` does after a kill during LRDif's first stage (skip_finished): the stage-1 folder holds only
    what the trainer writes before its first checkpoint, and the same call trains it again and goes on."""
    from udcbench.engine.runs import train_method

    ds = small_synthetic()
    real = trainer.evaluate

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the first validation of stage 1: before its first checkpoint

    monkeypatch.setattr(trainer, "evaluate", killed)
    with pytest.raises(KeyboardInterrupt):
        train_method("lrdif", ds, tmp_path, preset="smoke", skip_finished=True, log=lambda _: None)
    first = next(tmp_path.glob("*/lrdif-s1-smoke-s0"))
    assert (first / "config.json").is_file() and not (first / "last.pt").exists()
    monkeypatch.setattr(trainer, "evaluate", real)
    record = train_method("lrdif", ds, tmp_path, preset="smoke", skip_finished=True, log=lambda _: None)
    assert record["method"] == "lrdif" and (first / "results.json").is_file()


def test_grad_clip_bounds_the_gradient_norm_of_each_step(tmp_path: Path, monkeypatch):
    norms: list[float] = []
    real = trainer.make_optimizer

    def recording(params, config):
        optimizer = real(params, config)

        def record(optimizer, args, kwargs):
            grads = [p.grad.norm() for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
            norms.append(torch.linalg.vector_norm(torch.stack(grads)).item())

        optimizer.register_step_pre_hook(record)
        return optimizer

    monkeypatch.setattr(trainer, "make_optimizer", recording)
    trainer.train(smoke_config(epochs=1), small_synthetic(), tmp_path / "free")
    free = list(norms)
    norms.clear()
    trainer.train(smoke_config(epochs=1, grad_clip=1e-3), small_synthetic(), tmp_path / "clipped")
    assert min(free) > 1e-2 and len(norms) == len(free)
    assert max(norms) == pytest.approx(1e-3, rel=1e-3)


def test_sam_steps_from_the_gradient_at_the_perturbed_weights():
    from udcbench.engine.optim import SharpnessAware

    w = torch.tensor([3.0, -4.0], requires_grad=True)  # loss sum(w^4): gradient 4 w^3
    optimizer = torch.optim.SGD([w], lr=0.1)
    sam = SharpnessAware([w], rho=0.5)
    (w**4).sum().backward()
    g = torch.tensor([108.0, -256.0])
    sam.perturb()
    perturbed = torch.tensor([3.0, -4.0]) + 0.5 * g / g.norm()
    torch.testing.assert_close(w.detach(), perturbed)
    optimizer.zero_grad()
    (w**4).sum().backward()
    sam.restore()
    optimizer.step()
    torch.testing.assert_close(w.detach(), torch.tensor([3.0, -4.0]) - 0.1 * 4 * perturbed**3)


def test_sam_moves_nothing_on_a_non_finite_or_zero_gradient_and_never_reads_the_norm_back():
    from udcbench.engine.optim import SharpnessAware

    for bad in (float("inf"), float("nan"), 0.0):
        w = torch.tensor([3.0, -4.0], requires_grad=True)
        w.grad = torch.tensor([bad, 0.0])
        sam = SharpnessAware([w], rho=0.5)
        sam.perturb()
        assert torch.equal(w.detach(), torch.tensor([3.0, -4.0]))
        sam.restore()
        assert torch.equal(w.detach(), torch.tensor([3.0, -4.0]))
    w = torch.tensor([3.0, -4.0], requires_grad=True)
    w.grad = torch.tensor([1.0, 1.0])
    original = torch.Tensor.__bool__
    try:  # a host read of a device value (if norm == 0: ...) would call __bool__ or item()
        torch.Tensor.__bool__ = lambda self: (_ for _ in ()).throw(AssertionError("read back to the host"))
        SharpnessAware([w], rho=0.5).perturb()
    finally:
        torch.Tensor.__bool__ = original
    torch.testing.assert_close(w.detach(), torch.tensor([3.0, -4.0]) + 0.5 / 2**0.5)


def test_sam_runs_two_passes_per_step_in_the_trainer(tmp_path: Path, monkeypatch):
    from baselines.tiny import TinyCNN

    calls = []
    real = TinyCNN.training_step
    monkeypatch.setattr(TinyCNN, "training_step", lambda self, b, e: calls.append(1) or real(self, b, e))
    trainer.train(smoke_config(epochs=1), small_synthetic(), tmp_path / "plain")
    plain = len(calls)
    calls.clear()
    trainer.train(smoke_config(epochs=1, sam_rho=0.05), small_synthetic(), tmp_path / "sam")
    assert plain == 3 and len(calls) == 2 * plain


def test_non_finite_loss_stops_with_a_clear_message(tmp_path: Path, monkeypatch):
    from baselines.tiny import TinyCNN

    real = TinyCNN.training_step

    def poisoned(self, batch, epoch):
        out = real(self, batch, epoch)
        if epoch == 1:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(TinyCNN, "training_step", poisoned)
    with pytest.raises(trainer.TrainingError, match="loss became nan at epoch 2"):
        trainer.train(smoke_config(epochs=3), small_synthetic(), tmp_path / "run")
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=False)["epoch"] == 0


def test_cli_train_eval_runs_methods(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert runner.invoke(app, ["generate", "--n-train", "70", "--n-test", "35", "--size", "32"]).exit_code == 0
    args = ["train", "test_cnn", "--data", "data/synthetic", "--preset", "smoke", "--set", "max_steps=2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "synthetic" / "test_cnn-smoke-s0"
    assert (run / "results.json").is_file()
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "--overwrite" in again.output
    result = runner.invoke(app, ["eval", str(run), "--data", "synthetic", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["kind"] == "eval"
    listed = json.loads(runner.invoke(app, ["runs", "--json"]).stdout)
    assert {r["kind"] for r in listed} == {"train", "eval"}
    methods = json.loads(runner.invoke(app, ["methods", "--json"]).stdout)
    names = [m["name"] for m in methods]
    assert names[:5] == ["resnet18", "scn", "rul", "eac", "dan"] and "test_cnn" not in names
    assert {"lrdif", "lrdif-s1", "lrdif-s2-v1", "lrdif-s2-v2", "lrdif-s2-v4"} <= set(names)
    assert methods[1]["presets"]["paper"]["epochs"] == 70
    bad = runner.invoke(app, ["train", "nosuch", "--data", "data/synthetic"])
    assert bad.exit_code == 2 and "unknown method" in bad.output
    missing = runner.invoke(app, ["train", "test_cnn", "--data", "data/synthetic", "--weights", "none.pth",
                                  "--preset", "smoke", "--overwrite"])
    assert missing.exit_code == 2 and "no pretrained backbone" in missing.output


@pytest.mark.slow(reason="starts two torchrun processes that import torch: about 15 s")
@pytest.mark.skipif(sys.platform != "linux", reason="torchrun with gloo is tested on Linux")
def test_ddp_under_torchrun_on_cpu(tmp_path: Path):
    env = {**os.environ, "UDCBENCH_QUIET": "1", "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "udcbench", "generate", "--n-train", "70", "--n-test", "35", "--size", "32"],
                   cwd=tmp_path, env=env, check=True, capture_output=True)
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "udcbench", "train", "test_cnn", "--data", "data/synthetic", "--preset", "smoke", "--device", "cpu",
         "--json"],
        cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads((tmp_path / "runs" / "synthetic" / "test_cnn-smoke-s0" / "results.json").read_text())
    assert record["device"] == "cpu x2"


def test_amp_on_cpu_means_bf16_only_where_the_cpu_has_it(monkeypatch):
    rt = runtime_module.Runtime(torch.device("cpu"))
    monkeypatch.setenv("UDCBENCH_CPU_BF16", "0")
    assert rt.precision(True) == "fp32" and rt.precision(False) == "fp32"
    with rt.autocast(True):
        assert not torch.is_autocast_enabled("cpu")
    monkeypatch.setenv("UDCBENCH_CPU_BF16", "1")
    assert rt.precision(True) == "bf16" and rt.precision(False) == "fp32"
    with rt.autocast(True):
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")
    monkeypatch.delenv("UDCBENCH_CPU_BF16")
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert runtime_module.cpu_has_bf16() == native
    monkeypatch.setattr(runtime_module, "cuda_has_bf16", lambda device: False)  # before Ampere: fp16 + scaler
    assert runtime_module.Runtime(torch.device("cuda")).precision(True) == "fp16"
    monkeypatch.setattr(runtime_module, "cuda_has_bf16", lambda device: True)
    assert runtime_module.Runtime(torch.device("cuda")).precision(True) == "bf16"
    assert runtime_module.Runtime(torch.device("cuda")).precision(False) == "fp32"


def test_cnn_baselines_run_in_nhwc_and_others_do_not():
    rt = runtime_module.Runtime(torch.device("cpu"))
    cnn = rt.place(create_method("resnet18", 8, get_method("resnet18").config("smoke")))
    assert cnn.trunk[0].weight.is_contiguous(memory_format=torch.channels_last)
    tiny = rt.place(create_method("test_cnn", 8, smoke_config()))
    assert all(p.is_contiguous() for p in tiny.parameters())


def test_a_training_log_gets_its_first_line_at_the_first_step_then_every_n_steps(capsys, tmp_path: Path,
                                                                                 monkeypatch):
    from udcbench.progress import TrainingProgress

    monkeypatch.setenv("UDCBENCH_QUIET", "0")  # the suite runs quiet

    with TrainingProgress("m", epochs=2, steps_per_epoch=5, every_s=1e9, every_steps=2) as progress:
        for step in range(5):
            progress.step(0, step, 8, 1.5)
        progress.epoch(0, "val 0.5")
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["m epoch 1/2 step 1/5", "m epoch 1/2 step 3/5",
                                                     "m epoch 1/2 step 5/5", "m epoch 1/2"]
    assert "loss 1.5000" in lines[0] and "images/s" in lines[0] and "left" in lines[0]
    trainer.train(smoke_config(epochs=1), small_synthetic(), tmp_path / "run")  # the engine's own log
    log = capsys.readouterr().err
    assert "test_cnn epoch 1/1 step 1/3: loss" in log and "test_cnn epoch 1/1: train" in log


def test_the_step_builds_no_tensor_from_python_data_and_a_resume_loads_on_the_cpu():
    """Where CUDA is absent the property is checked by structure: a ``torch.tensor(...)`` of Python numbers inside a
    step function is a blocking host-to-device copy on a GPU, and a checkpoint loaded onto the GPU puts Adam's step
    counters there (non-capturable Adam then syncs twice per parameter per step)."""
    import ast
    import inspect

    from lrdif.diffusion import EPRDiffusion
    from udcbench.engine import augment

    for function in (augment.to_input, augment.augment, EPRDiffusion.predict_x0, EPRDiffusion.reverse):
        tree = ast.parse(inspect.getsource(function).lstrip())  # methods are indented
        calls = [ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)]
        assert "torch.tensor" not in calls, f"{function.__qualname__} builds a tensor from Python data"
    source = inspect.getsource(trainer.setup)
    assert 'load_checkpoint(resume_from, "cpu")' in source


def test_the_process_group_waits_long_enough_for_rank_zeros_preparation(monkeypatch):
    from datetime import timedelta

    from udcbench.engine.runtime import DDP_TIMEOUT_MINUTES, process_group_timeout

    assert process_group_timeout() == timedelta(minutes=DDP_TIMEOUT_MINUTES) > timedelta(minutes=10)  # NCCL's default
    monkeypatch.setenv("UDCBENCH_DDP_TIMEOUT_MIN", "45")
    assert process_group_timeout() == timedelta(minutes=45)
    monkeypatch.setenv("UDCBENCH_DDP_TIMEOUT_MIN", "soon")
    with pytest.raises(UdcbenchError, match="UDCBENCH_DDP_TIMEOUT_MIN"):
        process_group_timeout()
    calls = []
    monkeypatch.delenv("UDCBENCH_DDP_TIMEOUT_MIN")
    monkeypatch.setattr(runtime_module.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(runtime_module.dist, "init_process_group", lambda *a, **kw: calls.append(kw))
    monkeypatch.setattr(runtime_module.distributed, "bind", lambda device: None)
    monkeypatch.setenv("WORLD_SIZE", "2")
    runtime_module.runtime("cpu")  # gloo: its own 30 minutes, unless asked
    monkeypatch.setenv("UDCBENCH_DDP_TIMEOUT_MIN", "90")
    runtime_module.runtime("cpu")
    assert calls == [{}, {"timeout": timedelta(minutes=90)}]
    source = inspect.getsource(runtime_module.runtime)  # NCCL (no GPU here): always given the long timeout
    assert 'init_process_group("nccl", device_id=dev, timeout=process_group_timeout())' in source


def test_sync_bn_is_chosen_by_the_per_rank_batch_on_gpus_refused_elsewhere_and_said_in_tables():
    from udcbench.config import TrainConfig
    from udcbench.engine.runtime import Runtime
    from udcbench.engine.trainer import sync_batch_norm
    from udcbench.errors import UdcbenchError
    from udcbench.reports.tables import _world_notes

    gpus = Runtime(torch.device("cuda", 0), rank=0, world=8, ddp=True)
    assert sync_batch_norm(TrainConfig(batch_size=64), gpus)  # 8 images a rank: its BN statistics are synchronised
    assert not sync_batch_norm(TrainConfig(batch_size=256), gpus)  # 32 a rank: as one GPU's own
    assert not sync_batch_norm(TrainConfig(batch_size=64, sync_bn="off"), gpus)
    assert sync_batch_norm(TrainConfig(batch_size=256, sync_bn="on"), gpus)
    one = Runtime(torch.device("cuda", 0))
    assert not sync_batch_norm(TrainConfig(batch_size=8, sync_bn="on"), one)  # one process: nothing to synchronise
    cpus = Runtime(torch.device("cpu"), rank=0, world=2, ddp=True)
    assert not sync_batch_norm(TrainConfig(batch_size=8), cpus)
    with pytest.raises(UdcbenchError, match="needs GPUs"):
        sync_batch_norm(TrainConfig(batch_size=8, sync_bn="on"), cpus)
    with pytest.raises(UdcbenchError, match="unknown sync_bn"):
        TrainConfig(sync_bn="yes").validate()
    runs = [{"method": "scn", "record": {"execution": {"world_size": 1}}},
            {"method": "lrdif", "record": {"execution": {"world_size": 4, "sync_bn": True}}}]
    assert _world_notes(runs) == ["mixes runs trained on different numbers of processes (1 process: scn; "
                                  "4 processes, sync BN: lrdif)"]
    assert _world_notes(runs[:1]) == []
