"""The prepared GPU check's CPU fallback (``benchmarks/gpu/check.sh --cpu``): every section runs and writes its
rows; on a GPU machine the same script measures what the CSV's rows name (benchmarks/gpu/README.md)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO


@pytest.mark.slow(reason="trains three methods, two of them twice, and a one-process DDP run: about 30 s")
@pytest.mark.skipif(sys.platform != "linux", reason="torchrun with gloo is tested on Linux")
def test_the_gpu_checks_cpu_fallback_writes_every_section(tmp_path: Path):
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out"), "UDCBENCH_WHEELS": str(tmp_path),
           "OMP_NUM_THREADS": "1"}
    result = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu" / "check.sh"), "--cpu", "--methods", "test_cnn",
                             "lrdif", "--workspace", str(tmp_path / "work")],
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    with (tmp_path / "out" / "gpu_check-cpu.csv").open() as f:
        rows = list(csv.DictReader(f))
    by_check = {(r["check"], r["method"]): r for r in rows}
    assert [r for r in rows if r["status"].startswith("FAIL")] == []
    assert {("smoke", "test_cnn"), ("smoke", "lrdif"), ("ddp", "resnet18"), ("throughput", "resnet18"),
            ("throughput", "lrdif"), ("launches", "lrdif"), ("cost", "lrdif"), ("paper_epoch", "resnet18"),
            ("robustness", "resnet18"), ("resume", "resnet18"), ("sync", "lrdif")} <= set(by_check)
    assert by_check[("resume", "resnet18")]["status"] == "ok" and by_check[("sync", "lrdif")]["status"].startswith(
        "skipped")
    assert {r["device"] for r in rows} == {"cpu"}
    assert "vs CPU synthesis: max 0 levels" in by_check[("robustness", "resnet18")]["detail"]
    assert "(DDP), gloo" in by_check[("ddp", "resnet18")]["detail"]
    assert float(by_check[("throughput", "lrdif")]["images_per_second"]) > 0
    assert 0 <= float(by_check[("throughput", "resnet18")]["data_wait_share"]) < 1
    assert int(by_check[("launches", "lrdif")]["kernels_per_step"]) > int(by_check[("launches", "resnet18")][
        "kernels_per_step"])
    cost = by_check[("cost", "lrdif")]
    assert float(cost["images_per_second"]) > 0 and int(cost["kernels_per_step"]) > 0 and cost["peak_gb"] == ""
    assert json.loads(cost["detail"])["infer_images_per_second"] > 0


def test_the_ddp_row_keeps_the_carried_wheels_on_the_path():
    """The check's torchrun row once replaced PYTHONPATH with the repository alone: kornia, carried as wheels on
    PYTHONPATH, was gone and the row failed with ModuleNotFoundError."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu" / "check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    env = module.with_repo_on_path({"PYTHONPATH": os.pathsep.join(["/tmp/site", "/opt/more"]), "HOME": "/root"})
    assert env["PYTHONPATH"].split(os.pathsep) == [str(REPO), "/tmp/site", "/opt/more"] and env["HOME"] == "/root"
    assert module.with_repo_on_path({})["PYTHONPATH"] == str(REPO)


def test_a_row_past_its_limit_fails_and_says_so_and_the_rest_goes_on():
    import importlib.util
    import time

    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu" / "check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    check = module.Check(budget_s=60, device="cuda")
    check.run("slow", "-", lambda: time.sleep(5), limit_s=1)
    check.run("fast", "-", lambda: {"detail": "done"})
    assert check.rows[0]["status"] == "FAIL: over its 1 s" and check.rows[0]["seconds"] < 3
    assert check.rows[1]["status"] == "ok" and {r["device"] for r in check.rows} == {"cuda"}
