import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import udcbench.synthesis as synthesis
from degradations import load_recipe
from udcbench.cli import app
from udcbench.datasets import create_dataset
from udcbench.errors import UdcbenchError
from udcbench.synthesis import Shard, synthesize

from conftest import tree_digest, write_png

runner = CliRunner()


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(synthesis, "CHUNK", 3)


def image_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.suffix.lower() in (".png", ".jpg") and p.name != "preview.png"}


def test_synth_keeps_the_layout_and_writes_manifest_and_preview(rafdb_root: Path, tmp_path: Path, small_chunks):
    before = tree_digest(rafdb_root)
    adapter = create_dataset("rafdb", rafdb_root)
    out = tmp_path / "udc-rafdb"
    report = synthesize(adapter, out, load_recipe("toled"), seed=0)
    assert report.complete and report.written == 20 and not report.skipped  # aligned + original images
    assert tree_digest(rafdb_root) == before
    assert (out / "EmoLabel" / "list_patition_label.txt").read_text() == (
        rafdb_root / "EmoLabel" / "list_patition_label.txt").read_text()
    degraded = create_dataset("rafdb", out)
    assert [(r.id, r.label) for r in degraded.records()] == [(r.id, r.label) for r in adapter.records()]
    assert degraded.load_image(degraded.records()[0]).shape == (100, 100, 3)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["written"] == 20 and manifest["recipe"]["name"] == "toled"
    lines = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert {e["file"] for e in lines} == set(image_bytes(out))
    assert all(len(e["params"]["gains"]) == 3 and len(e["sha256"]) == 64 for e in lines)
    assert (out / "preview.png").is_file()


def test_output_is_byte_identical_whatever_workers_and_shards(ferplus_root: Path, tmp_path: Path, small_chunks):
    adapter = create_dataset("ferplus", ferplus_root)
    recipe = load_recipe("poled")
    synthesize(adapter, tmp_path / "one", recipe, seed=3)
    synthesize(adapter, tmp_path / "two", recipe, seed=3, workers=2)
    for i in range(2):
        synthesize(adapter, tmp_path / "shards", recipe, seed=3, shard=Shard(i, 2))
    reference = image_bytes(tmp_path / "one")
    assert len(reference) == 8
    assert image_bytes(tmp_path / "two") == reference
    assert image_bytes(tmp_path / "shards") == reference
    assert json.loads((tmp_path / "shards" / "manifest.json").read_text())["complete"]
    other_seed = synthesize(adapter, tmp_path / "seed4", recipe, seed=4)
    assert other_seed.complete and image_bytes(tmp_path / "seed4") != reference


def test_resume_after_a_kill_gives_the_same_bytes(ferplus_root: Path, tmp_path: Path, small_chunks, monkeypatch):
    adapter = create_dataset("ferplus", ferplus_root)
    recipe = load_recipe("toled")
    synthesize(adapter, tmp_path / "whole", recipe)
    real = synthesis.degrade_chunk
    calls = {"n": 0}

    def killed_after_one_chunk(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 1:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(synthesis, "degrade_chunk", killed_after_one_chunk)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        synthesize(adapter, out, recipe)
    listed = [json.loads(line)["file"] for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert 0 < len(listed) < 8 and all((out / f).is_file() for f in listed)
    with (out / "manifest.jsonl").open("a") as f:
        f.write('{"file": "FER2013Train/fer00')  # a line torn by the kill
    with pytest.raises(UdcbenchError, match="--resume"):
        synthesize(adapter, out, recipe)
    monkeypatch.setattr(synthesis, "degrade_chunk", real)
    report = synthesize(adapter, out, recipe, resume=True)
    assert report.complete and report.already_done == len(listed)
    assert image_bytes(out) == image_bytes(tmp_path / "whole")
    with pytest.raises(UdcbenchError, match="another seed"):
        synthesize(adapter, out, recipe, seed=9, resume=True)


def test_refuses_the_source_folder_and_reports_corrupt_images(ferplus_root: Path, tmp_path: Path):
    adapter = create_dataset("ferplus", ferplus_root)
    with pytest.raises(UdcbenchError, match="source folder"):
        synthesize(adapter, ferplus_root / "udc", load_recipe("toled"))
    (ferplus_root / "FER2013Train" / "fer0000002.png").write_bytes(b"\x89PNG broken")
    report = synthesize(adapter, tmp_path / "out", load_recipe("toled"))
    assert report.complete and [e["file"] for e in report.skipped] == ["FER2013Train/fer0000002.png"]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["written"] == 7 and manifest["skipped"][0]["file"] == "FER2013Train/fer0000002.png"


def test_cli_synth_with_default_workspace_paths(ferplus_root: Path, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    ferplus_root.rename(tmp_path / "data" / "ferplus")
    result = runner.invoke(app, ["synth", "ferplus", "--export", "hf"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "data" / "udc-ferplus" / "manifest.json").is_file()
    assert (tmp_path / "data" / "udc-ferplus-hf" / "dataset_dict.json").is_file()
    again = runner.invoke(app, ["synth", "ferplus"])
    assert again.exit_code == 2 and "--resume" in again.output
    resumed = runner.invoke(app, ["synth", "ferplus", "--resume"])
    assert resumed.exit_code == 0 and "8 already done" in resumed.output
    write_png(tmp_path / "data" / "ferplus" / "FER2013Valid" / "zz.png", 0)
    (tmp_path / "data" / "ferplus" / "FER2013Valid" / "zz.png").write_bytes(b"junk")
    broken = runner.invoke(app, ["synth", "ferplus", "--preset", "lowlight"])
    assert broken.exit_code == 3 and "zz.png" in broken.output
    assert (tmp_path / "data" / "ll-ferplus" / "manifest.json").is_file()
    assert runner.invoke(app, ["synth", "ferplus", "--preset", "nope"]).exit_code == 2
    assert runner.invoke(app, ["synth", "ferplus", "--shard", "3/2"]).exit_code == 2
