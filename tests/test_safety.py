"""Files a user is handed run no code: checkpoints load tensors-only (issue 19)."""

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from udcbench.checkpoints import load_checkpoint, save_checkpoint
from udcbench.cli import app
from udcbench.errors import UdcbenchError

runner = CliRunner()


class _Payload:
    """Unpickling this writes a marker file: what a crafted checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.write_text, (self.marker, "code ran")


def _crafted(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": {"w": torch.zeros(1)}, "epoch": 0, "config": {}, "payload": _Payload(marker)}, path)


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for var in ("UDCBENCH_DATA", "UDCBENCH_RUNS", "UDCBENCH_RESULTS", "UDCBENCH_CACHE"):
        monkeypatch.delenv(var, raising=False)
    assert runner.invoke(app, ["generate", "--n-train", "70", "--n-test", "14", "--size", "32"]).exit_code == 0
    return tmp_path


def _train(*extra: str):
    return runner.invoke(app, ["train", "test_cnn", "--data", "data/synthetic", "--preset", "smoke", *extra])


def test_a_crafted_best_checkpoint_runs_nothing_in_eval(workspace):
    assert _train().exit_code == 0
    run, marker = workspace / "runs" / "synthetic" / "test_cnn-smoke-s0", workspace / "marker.txt"
    _crafted(run / "best.pt", marker)
    result = runner.invoke(app, ["eval", str(run), "--data", "synthetic"])
    assert result.exit_code == 2 and "not a tensors-only checkpoint" in result.output
    assert str(run / "best.pt") in result.output.replace("\n", "")
    assert not marker.exists()


def test_a_crafted_last_checkpoint_runs_nothing_on_resume(workspace):
    assert _train("--set", "epochs=2").exit_code == 0
    run, marker = workspace / "runs" / "synthetic" / "test_cnn-smoke-s0", workspace / "marker.txt"
    (run / "results.json").unlink()  # as if killed before the end
    _crafted(run / "last.pt", marker)
    result = _train("--set", "epochs=2", "--resume")
    assert result.exit_code == 2 and "not a tensors-only checkpoint" in result.output
    assert not marker.exists()


def test_a_crafted_stage_one_checkpoint_runs_nothing_in_stage_two(workspace):
    first, marker = workspace / "shared" / "lrdif-s1-run", workspace / "marker.txt"
    _crafted(first / "best.pt", marker)
    (first / "results.json").write_text(json.dumps({"method": "lrdif-s1"}))
    result = runner.invoke(app, ["train", "lrdif", "--data", "data/synthetic", "--preset", "smoke", "--stage", "2",
                                 "--from", str(first)])
    assert result.exit_code == 2 and "not a tensors-only checkpoint" in result.output
    assert not marker.exists()


def test_the_engines_checkpoints_load_tensors_only(workspace):
    assert _train("--set", "epochs=2").exit_code == 0
    run = workspace / "runs" / "synthetic" / "test_cnn-smoke-s0"
    for name in ("best.pt", "last.pt"):
        state = torch.load(run / name, weights_only=True)  # raises if anything but tensors and plain data
        assert "model" in state and "config" in state
    assert isinstance(torch.load(run / "last.pt", weights_only=True)["labels"], torch.Tensor)


def test_checkpoint_helpers(tmp_path):
    save_checkpoint({"model": {"w": torch.ones(2)}}, tmp_path / "a.pt")
    assert torch.equal(load_checkpoint(tmp_path / "a.pt")["model"]["w"], torch.ones(2))
    assert not list(tmp_path.glob(".*tmp"))  # the temporary file was renamed
    with pytest.raises(UdcbenchError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UdcbenchError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")
