"""Training under ``torchrun`` (gloo, 2 CPU processes): every registered method, ``reproduce``, and the rule that
every collective's tensor is on the run's device."""

from __future__ import annotations

import ast
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from baselines import distributed
from udcbench.methods import method_names

from conftest import REPO, module_folder

pytestmark = [pytest.mark.skipif(sys.platform != "linux", reason="torchrun with gloo is tested on Linux"),
              pytest.mark.slow(reason="two torchrun processes per launch: 40 s for every method, 20 s for reproduce"),
              pytest.mark.xdist_group("ddp")]  # one worker draws the module's faces once
ENV = {**os.environ, "UDCBENCH_QUIET": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _torchrun(args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, Path]:
    """torchrun with 2 processes on a free port (``--standalone``), each rank's output in its own log file."""
    logs = cwd / "torchrun-logs"
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "--log-dir", str(logs), "--redirects", "3", *args],
                            cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600)
    return result, logs


def _rank_output(logs: Path, rank: int, stream: str = "stdout") -> str:
    return "".join(p.read_text() for p in logs.rglob(f"{rank}/{stream}.log"))


def _failure(result: subprocess.CompletedProcess, logs: Path) -> str:
    """What a failed launch printed: torchrun's own output and each rank's error output (a crash on rank 1
    shows on rank 0 only as "Connection closed by peer")."""
    return "\n".join([result.stderr[-1500:], *(f"--- rank {r} ---\n" + _rank_output(logs, r, "stderr")[-1500:]
                                              for r in (0, 1))])


def _json_documents(text: str) -> list:
    decoder, docs, i = json.JSONDecoder(), [], 0
    while text[i:].strip():
        i = len(text) - len(text[i:].lstrip())
        doc, end = decoder.raw_decode(text[i:])
        docs.append(doc)
        i += end
    return docs


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Iterator[Path]:
    with module_folder(tmp_path_factory, "ddp") as root:
        subprocess.run([sys.executable, "-m", "udcbench", "generate", "--n-train", "70", "--n-test", "35", "--size",
                        "32"], cwd=root, env=ENV, check=True, capture_output=True)
        yield root


def test_every_method_trains_under_torchrun_to_one_record_with_the_same_weights_on_both_ranks(faces: Path):
    result, logs = _torchrun([str(REPO / "tests" / "ddp_worker.py"), str(faces), str(faces / "report.json")], faces)
    assert result.returncode == 0, _failure(result, logs)
    report = json.loads((faces / "report.json").read_text())
    methods = method_names(include_test=True)
    assert set(report) == set(methods)
    assert [m for m, r in report.items() if not r["same_weights"]] == []
    assert _rank_output(logs, 1) == ""  # rank 1 prints nothing
    records = _json_documents(_rank_output(logs, 0))
    assert [r["method"] for r in records] == methods  # one record per method, from rank 0
    assert all(r["device"] == "cpu x2" and r["execution"]["world_size"] == 2 for r in records)
    assert all(r["execution"]["per_rank_batch"] == 4 for r in records)  # smoke's global batch of 8, split
    assert all(not r["config_changes"] for r in records)  # the preset's recipe: it enters the tables
    with sqlite3.connect(faces / "runs" / "results.sqlite") as db:
        rows = db.execute("select method, count(*) from results group by method").fetchall()
    assert dict(rows) == dict.fromkeys(methods, 1)


def test_reproduce_under_torchrun_completes_once(tmp_path: Path):
    subprocess.run([sys.executable, "-m", "udcbench", "generate", "--n-train", "56", "--n-test", "21", "--size", "48"],
                   cwd=tmp_path, env=ENV, check=True, capture_output=True)
    result, logs = _torchrun(["-m", "udcbench", "reproduce", "--study", "smoke", "--methods", "resnet18", "--json"],
                             tmp_path)
    assert result.returncode == 0, _failure(result, logs)
    assert _rank_output(logs, 1) == ""
    (summary,) = _json_documents(_rank_output(logs, 0))
    assert len(summary["runs"]) == 2  # clean and UDC
    assert json.loads((tmp_path / "data" / "udc-synthetic" / "manifest.json").read_text())["complete"]
    assert (tmp_path / "results" / "leaderboard.csv").is_file()


def test_a_collective_refuses_a_tensor_off_the_runs_device():
    distributed.bind(torch.device("cpu"))
    distributed.check_device(torch.zeros(1))
    with pytest.raises(distributed.CollectiveDeviceError, match="meta"):
        distributed.check_device(torch.zeros(1, device="meta"))


def test_collectives_are_called_only_through_baselines_distributed():
    """Every collective passes the device check: none calls torch.distributed's collectives directly."""
    collectives = {"all_reduce", "all_gather", "broadcast", "reduce_scatter", "all_to_all", "gather", "scatter",
                   "broadcast_object_list", "all_gather_object"}
    offenders = []
    for path in sorted([*REPO.glob("udcbench/**/*.py"), *REPO.glob("baselines/*.py"), *REPO.glob("lrdif/*.py")]):
        if path.name == "distributed.py" and path.parent.name == "baselines":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in collectives \
                    and ast.unparse(node.value) in ("dist", "torch.distributed"):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []


def test_lrdifs_evaluation_is_the_same_on_one_and_on_two_ranks(faces: Path):
    """LRDif samples at inference: each test image's noise comes from its own position (per-image keys), so the
    sharded evaluation of two ranks gives one process's predictions, confusion matrix included."""
    run = faces / "runs/synthetic/lrdif-smoke-s0"  # trained by the every-method test where it ran first
    if not (run / "results.json").is_file():
        trained = subprocess.run([sys.executable, "-m", "udcbench", "train", "lrdif", "--data", "data/synthetic",
                                  "--budget", "smoke", "--tag", "worlds"], cwd=faces, env=ENV, capture_output=True,
                                 text=True)
        assert trained.returncode == 0, trained.stderr[-2000:]
        run = faces / "runs/synthetic/lrdif-smoke-s0-worlds"
    run, data = str(run), str(faces / "data/synthetic")
    one = subprocess.run([sys.executable, "-m", "udcbench", "eval", run, "--data", data, "--json"],
                         cwd=faces, env=ENV, capture_output=True, text=True)
    here = faces / "eval-on-two-ranks"  # its own torchrun logs
    here.mkdir()
    two, logs = _torchrun(["-m", "udcbench", "eval", run, "--data", data, "--json"], here)
    assert one.returncode == 0 and two.returncode == 0, _failure(two, logs)
    scores = [{k: v for k, v in json.loads(text)["test_at_best"].items() if k != "images_per_second"}
              for text in (one.stdout, _rank_output(logs, 0))]
    assert scores[0] == scores[1] and sum(map(sum, scores[0]["confusion"])) == 35


def test_the_image_cache_is_decoded_by_each_machines_local_rank_zero(monkeypatch):
    monkeypatch.setattr(distributed, "active", lambda: True)
    monkeypatch.setattr(distributed, "rank", lambda: 5)  # global rank 5 of a second machine...
    monkeypatch.setenv("LOCAL_RANK", "0")  # ...is that machine's first process: it decodes its disk's cache
    assert distributed.local_rank() == 0
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.local_rank() == 1
    monkeypatch.setattr(distributed, "active", lambda: False)
    assert distributed.local_rank() == 0
