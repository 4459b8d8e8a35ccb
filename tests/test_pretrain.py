"""Face pre-training (``udcbench pretrain``): a trunk that every method loads through ``--weights``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from udcbench.cli import app
from udcbench.config import TrainConfig
from udcbench.datasets.synthetic_faces import SyntheticFaceGenerator
from udcbench.errors import UdcbenchError
from udcbench.methods import get_method
from udcbench.pretrain import FacePretraining, draw_pretraining_faces, pretrained_trunk

from conftest import in_default_workspace

runner = CliRunner()
TINY = FacePretraining(images=64, epochs=1, input_size=32, batch_size=32)


def test_the_pretraining_faces_are_other_faces_than_the_studys():
    generator = SyntheticFaceGenerator(seed=0, size=64)
    pretrain, train = generator.draw("pretrain", 3), generator.draw("train", 3)
    assert pretrain.image.shape == train.image.shape and not np.array_equal(pretrain.image, train.image)
    images, identities = draw_pretraining_faces(FacePretraining(images=10, input_size=32, views=4))
    assert images.shape == (10, 32, 32, 3) and images.dtype == np.uint8
    assert identities.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    images, points = draw_pretraining_faces(FacePretraining(images=5, input_size=32, task="landmarks"))
    assert points.shape == (5, 136) and np.abs(points).max() < 0.5  # landmarks inside the image, centred


def test_an_identity_is_one_person_in_every_view_and_its_expression_is_drawn_apart_from_it():
    from udcbench.datasets.synthetic_faces import IDENTITY_DRAWS

    generator = SyntheticFaceGenerator(seed=0, size=64)
    views = 8
    faces = generator.draw_identities("pretrain", range(400 * views), views)
    labels = np.array([f.label for f in faces]).reshape(400, views)
    # the expression is the view's own: an identity shows several, and across identities the classes are balanced
    assert (np.array([len(set(row)) for row in labels]) > 1).mean() > 0.95
    counts = np.bincount(labels.ravel(), minlength=7) / labels.size
    assert np.abs(counts - 1 / 7).max() < 0.02
    # the label of one view says nothing of the identity: its share per class is flat over the first view's label
    first = labels[:, 0]
    assert all(abs((labels[first == c, 1:] == c).mean() - 1 / 7) < 0.05 for c in range(7))
    # what makes the person is shared by the views, the pose and light are not
    people = generator.identity_draws("pretrain", [0, 0, 1])
    assert people.shape == (3, len(IDENTITY_DRAWS)) and np.array_equal(people[0], people[1])
    assert not np.array_equal(people[0], people[2])
    assert not np.array_equal(faces[0].landmarks, faces[1].landmarks)
    # drawing the study's own faces is unchanged: one person per image, label = index % 7
    assert [f.label for f in generator.draw_batch("train", range(9))] == [i % 7 for i in range(9)]


def test_the_trunk_loads_into_every_method_and_is_reused(tmp_path):
    folder = tmp_path / "faces"
    trunk = pretrained_trunk(folder, TINY, "cpu", log=lambda _: None)
    record = json.loads((folder / "record.json").read_text())
    assert record["recipe"]["images"] == 64 and len(record["losses"]) == 1 and np.isfinite(record["losses"][0])
    assert record["device"] == "cpu" and record["precision"] in ("fp32", "bf16")
    state = torch.load(trunk, weights_only=True)
    assert "layer4.1.bn2.running_mean" in state and not any(k.startswith("fc.") for k in state)
    for name in ("resnet18", "eac", "dan", "lrdif-s1"):
        config = TrainConfig(method=name, input_size=32, method_args=get_method(name).config("cpu").method_args)
        model = get_method(name).build(7, config)
        provenance = model.load_backbone_weights(trunk)
        assert provenance["init"] == str(trunk)
        assert torch.equal(model.trunk[0].weight, state["conv1.weight"])
    mtime = trunk.stat().st_mtime_ns
    assert pretrained_trunk(folder, TINY, "cpu", log=lambda _: None) == trunk and trunk.stat().st_mtime_ns == mtime


def test_a_folder_it_did_not_write_or_of_another_recipe_is_refused(tmp_path):
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(UdcbenchError, match="not empty"):
        pretrained_trunk(other, TINY, "cpu", log=lambda _: None)
    assert (other / "notes.txt").read_text() == "keep me"
    folder = tmp_path / "faces"
    pretrained_trunk(folder, TINY, "cpu", log=lambda _: None)
    with pytest.raises(UdcbenchError, match="another recipe"):
        pretrained_trunk(folder, FacePretraining(images=96, epochs=1, input_size=32, batch_size=32), "cpu",
                         log=lambda _: None)


@pytest.mark.parametrize("args, message", [
    (["--images", "10"], "at least 64 images"), (["--epochs", "0"], "at least one epoch"),
    (["--input-size", "16"], "at least 32 px"), (["--task", "expression"], "identity or landmarks"),
    (["--views", "1"], "2 or more views"),
])
def test_the_command_refuses_a_recipe_that_cannot_train_in_one_line(tmp_path, args, message):
    result = runner.invoke(app, ["pretrain", "--out", str(tmp_path / "p"), *args])
    assert result.exit_code == 2 and message in result.output and not (tmp_path / "p").exists()


def test_the_command_writes_a_trunk_for_weights(tmp_path):
    result = runner.invoke(app, ["pretrain", "--out", str(tmp_path / "p"), "--images", "64", "--epochs", "1",
                                 "--input-size", "32", "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["weights"] == str(tmp_path / "p" / "trunk.pt") and report["recipe"]["epochs"] == 1


@pytest.mark.slow(reason="a smoke study of two methods from a face pre-training: about 10 s")
def test_a_study_with_a_pretraining_trains_it_once_and_starts_every_run_from_it(tmp_path, monkeypatch):
    import dataclasses

    from udcbench import reproduce as study_module
    from udcbench.datasets.generate import generate_synthetic

    generate_synthetic(tmp_path / "data" / "synthetic", n_train=56, n_test=21, size=48)
    smoke = dataclasses.replace(study_module.STUDY_PRESETS["smoke"], pretrain=TINY, steps=())
    monkeypatch.setitem(study_module.STUDY_PRESETS, "smoke", smoke)
    in_default_workspace(monkeypatch, tmp_path)
    result = runner.invoke(app, ["reproduce", "--preset", "smoke", "--methods", "resnet18", "--methods", "eac",
                                 "--json"])
    assert result.exit_code == 0, result.output
    trunk = tmp_path / "runs" / "pretrained" / TINY.folder_name() / "trunk.pt"
    records = [json.loads((Path(r) / "results.json").read_text()) for r in json.loads(result.stdout)["runs"]]
    assert len(records) == 4 and {Path(r["init"]).resolve() for r in records} == {trunk.resolve()}
    table = (tmp_path / "results" / "tables" / "table2-synthetic.md").read_text()
    assert "pre-trained on the identities of built-in faces" in table and f"| {TINY.folder_name()}/trunk.pt |" in table
    assert all(r["init_task"] == "identities of built-in faces (udcbench pretrain)" for r in records)
    for run in json.loads(result.stdout)["runs"]:  # the chosen epoch's test predictions, for udcbench compare
        labels, predictions = np.load(Path(run) / "test_predictions.npy")
        assert labels.shape == predictions.shape == (21,) and set(labels.tolist()) <= set(range(7))


#: The smoke study with the face pre-training, run as a process of its own (so that it can be killed).
PRETRAINING_STUDY = f"""
import dataclasses
from udcbench import reproduce
from udcbench.pretrain import FacePretraining
tiny = FacePretraining(**{json.dumps(vars(TINY))})
reproduce.STUDY_PRESETS["smoke"] = dataclasses.replace(reproduce.STUDY_PRESETS["smoke"], pretrain=tiny, steps=())
from udcbench.cli import app
app(["reproduce", "--study", "smoke", "--methods", "lrdif"])
"""


@pytest.mark.slow(reason="a smoke study of LRDif from a face pre-training, killed once, run three times: about 30 s")
def test_a_study_from_a_pretraining_runs_again_and_moved_as_finished(tmp_path, monkeypatch):
    """The README's command run twice: a study killed in its pre-training, re-run with the same command, continues;
    its stage 1 was trained from the pre-training, and is the same stage 1 wherever the workspace now lies."""
    import dataclasses
    import os
    import shutil
    import signal
    import subprocess
    import sys

    from udcbench import reproduce as study_module
    from udcbench.datasets.generate import generate_synthetic

    smoke = dataclasses.replace(study_module.STUDY_PRESETS["smoke"], pretrain=TINY, steps=())
    monkeypatch.setitem(study_module.STUDY_PRESETS, "smoke", smoke)
    first = tmp_path / "first"
    generate_synthetic(first / "data" / "synthetic", n_train=56, n_test=21, size=48)
    # SIGKILL as the pre-training starts (drawing its faces): nothing of it finished
    process = subprocess.Popen([sys.executable, "-c", PRETRAINING_STUDY], cwd=first, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "UDCBENCH_QUIET": "1"})
    said = []
    for line in process.stderr:
        said.append(line)
        if "face pre-training on identity" in line:
            process.send_signal(signal.SIGKILL)
            break
    process.wait()
    assert process.returncode == -signal.SIGKILL, "".join(said)[-2000:]
    pretrained = first / "runs" / "pretrained" / TINY.folder_name()
    assert not (pretrained / "record.json").exists()
    in_default_workspace(monkeypatch, first)
    args = ["reproduce", "--study", "smoke", "--methods", "lrdif", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads((pretrained / "record.json").read_text())["recipe"] == vars(TINY)
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["trained_now"] == 0
    moved = tmp_path / "moved"
    shutil.copytree(first, moved, symlinks=True)
    shutil.rmtree(first)
    in_default_workspace(monkeypatch, moved)
    there = runner.invoke(app, args)
    assert there.exit_code == 0, there.output
    assert json.loads(there.stdout)["trained_now"] == 0


@pytest.mark.slow(reason="a smoke study from a face pre-training: about 15 s")
def test_no_file_the_study_writes_for_others_names_the_workspace(tmp_path, monkeypatch):
    """Tables, leaderboard and report name the pre-training's weights relative to the workspace: a published
    results folder leaks no machine path."""
    import dataclasses

    from udcbench import reproduce as study_module
    from udcbench.datasets.generate import generate_synthetic

    smoke = dataclasses.replace(study_module.STUDY_PRESETS["smoke"], pretrain=TINY, steps=())
    monkeypatch.setitem(study_module.STUDY_PRESETS, "smoke", smoke)
    generate_synthetic(tmp_path / "data" / "synthetic", n_train=56, n_test=21, size=48)
    in_default_workspace(monkeypatch, tmp_path)
    result = runner.invoke(app, ["reproduce", "--study", "smoke", "--methods", "resnet18"])
    assert result.exit_code == 0, result.output
    leaks = [p for p in (tmp_path / "results").rglob("*") if p.is_file() and str(tmp_path).encode() in p.read_bytes()]
    assert leaks == []
    table = (tmp_path / "results" / "tables" / "table2-synthetic.md").read_text()
    assert f"runs/pretrained/{TINY.folder_name()}/trunk.pt" in table
