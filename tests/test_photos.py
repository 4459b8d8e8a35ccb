"""Your own images: degrade a photo, predict on photos, export a model, read saved HF datasets (issue 37)."""

import importlib.util
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from udcbench.cli import app
from udcbench.datasets import create_dataset

from conftest import in_default_workspace

runner = CliRunner()


def _photo(path: Path, index: int = 0) -> Path:
    """A 640 x 480 photo: one built-in face (drawn at 200 px, one OpenCV's detector finds) on a plain background."""
    faces = create_dataset("synthetic", n_train=4, n_test=1, size=200)
    canvas = np.full((480, 640, 3), 90, np.uint8)
    canvas[140:340, 250:450] = faces.load_image(faces.records("train")[index])
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), canvas[..., ::-1])
    return path


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    in_default_workspace(monkeypatch, tmp_path)
    assert runner.invoke(app, ["generate", "--n-train", "70", "--n-test", "14", "--size", "32"]).exit_code == 0
    return tmp_path


def _trained(workspace: Path, method: str = "test_cnn") -> Path:
    result = runner.invoke(app, ["train", method, "--data", "data/synthetic", "--preset", "smoke",
                                 "--set", "input_size=32"])
    assert result.exit_code == 0, result.output
    return workspace / "runs" / "synthetic" / f"{method}-smoke-s0"


def test_degrade_writes_the_photo_at_its_size_and_a_figure_large_enough_to_judge(tmp_path):
    photo = _photo(tmp_path / "me.jpg")
    result = runner.invoke(app, ["degrade", str(photo), "--panel", "poled", "--out", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    degraded = cv2.imread(row["degraded"])
    figure = cv2.imread(row["figure"])
    assert degraded.shape == (480, 640, 3) and figure.shape[1] >= 2 * 768
    assert row["face_box"] is not None and "detected" in row["scale_from"]
    assert row["psf_scale"] == pytest.approx(row["face_box"][2] / 512, rel=1e-6)  # the face at the panel's scale
    assert np.abs(degraded.astype(int) - cv2.imread(str(photo)).astype(int)).mean() > 5  # the panel did something
    again = runner.invoke(app, ["degrade", str(photo), "--panel", "poled", "--out", str(tmp_path / "again")])
    assert again.exit_code == 0
    assert (tmp_path / "again" / "me-poled.png").read_bytes() == Path(row["degraded"]).read_bytes()  # per seed
    other = runner.invoke(app, ["degrade", str(photo), "--panel", "poled", "--seed", "1", "--out",
                                str(tmp_path / "s1")])
    assert other.exit_code == 0
    assert (tmp_path / "s1" / "me-poled.png").read_bytes() != Path(row["degraded"]).read_bytes()
    scaled = json.loads(runner.invoke(app, ["degrade", str(photo), "--face-px", "256", "--out", str(tmp_path / "f"),
                                            "--json"]).stdout)[0]
    assert scaled["psf_scale"] == pytest.approx(0.5) and "--face-px" in scaled["scale_from"]


def test_predict_gives_probabilities_the_same_class_as_eval_and_writes_nothing_to_the_store(workspace):
    from udcbench.engine.evaluation import evaluate, load_test_split, load_trained
    from udcbench.engine.runtime import runtime

    run = _trained(workspace)
    store = workspace / "runs" / "results.sqlite"
    before = store.read_bytes()
    folder = workspace / "data" / "synthetic" / "test"
    images = sorted(folder.rglob("*.png"))
    result = runner.invoke(app, ["predict", str(run), *map(str, images), "--crop", "none", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [Path(r["file"]).name for r in rows] == [p.name for p in images]
    assert all(sum(r["probabilities"].values()) == pytest.approx(1, abs=1e-4) for r in rows)
    # eval's own path on the same images (the test split, in its order) predicts the same classes
    adapter = create_dataset("imagefolder", workspace / "data" / "synthetic")
    rt = runtime("cpu")
    trained = load_trained(run, adapter, rt)
    _, records, loaded = load_test_split(adapter, trained.config)
    preds = evaluate(trained.model, loaded, np.array([r.label for r in records]), trained.config, rt,
                     trained.num_classes, keep_predictions=True)["predictions"]
    by_file = {Path(r["file"]).name: r["predicted"] for r in rows}
    assert [by_file[r.path.name] for r in records] == [adapter.classes[p] for p in preds]
    assert store.read_bytes() == before and not list(run.glob("eval-*"))


def test_predict_finds_the_face_in_a_photo_and_says_so_in_one_line_when_there_is_none(workspace):
    run = _trained(workspace)
    _photo(workspace / "photos" / "me.png")
    cv2.imwrite(str(workspace / "photos" / "wall.png"), np.full((300, 400, 3), 200, np.uint8))
    result = runner.invoke(app, ["predict", str(run), str(workspace / "photos"), "--panel", "toled", "--json",
                                 "--csv", str(workspace / "p.csv")])
    assert result.exit_code == 0, result.output
    rows = {Path(r["file"]).name: r for r in json.loads(result.stdout[: result.stdout.rindex("]") + 1])}
    assert rows["me.png"]["face"] == "detected" and 200 <= rows["me.png"]["box"][0] + rows["me.png"]["box"][2] <= 500
    assert set(rows["me.png"]["panel_probabilities"]) == set(rows["me.png"]["probabilities"])
    assert rows["wall.png"]["face"] == "none found" and "probabilities" not in rows["wall.png"]
    said = [line for line in result.output.splitlines() if "no face found" in line]
    assert len(said) == 1 and "wall.png" in said[0]
    assert (workspace / "p.csv").read_text().count("\n") == 3
    if importlib.util.find_spec("dlib") is not None:  # the landmarks extra (in dev): dlib's detector finds it too
        dlib = runner.invoke(app, ["predict", str(run), str(workspace / "photos" / "me.png"), "--detector", "dlib",
                                   "--json"])
        assert dlib.exit_code == 0 and json.loads(dlib.stdout)[0]["face"] == "detected", dlib.output
    missing = runner.invoke(app, ["predict", str(run), str(workspace / "nowhere.png")])
    assert missing.exit_code == 2 and len(missing.output.strip().splitlines()) == 1


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_an_exported_model_reproduces_the_runs_logits(workspace, fmt):
    if fmt == "onnx" and importlib.util.find_spec("onnxruntime") is None:
        pytest.skip("onnxruntime is not installed (pip install 'udcbench[onnx]' onnxruntime)")
    from udcbench.predict import Predictor

    run = _trained(workspace, "resnet18")
    out = workspace / ("model.pt" if fmt == "torchscript" else "model.onnx")
    result = runner.invoke(app, ["export-model", str(run), "--format", fmt, "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    sidecar = json.loads(Path(f"{out}.json").read_text())
    assert sidecar["labels"][0] == "neutral" and sidecar["input_size"] == 32 and sidecar["check"]["compared"]
    predictor = Predictor.load(run, "cpu")
    x = torch.rand(5, 3, 32, 32)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (predictor.config.mean, predictor.config.std))
    with torch.no_grad():
        expected = predictor.model.float()((x - mean) / std).numpy()
    if fmt == "torchscript":
        extra = {"udcbench.json": ""}
        got = torch.jit.load(str(out), _extra_files=extra)(x).detach().numpy()
        assert np.abs(got - expected).max() <= 1e-5
        embedded = json.loads(extra["udcbench.json"])
    else:
        import onnx
        import onnxruntime

        got = onnxruntime.InferenceSession(str(out)).run(None, {"image": x.numpy()})[0]
        assert np.abs(got - expected).max() <= 1e-4
        props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
        embedded = {k: v if k in ("method", "source", "checkpoint_sha256", "input", "output") else json.loads(v)
                    for k, v in props.items()}
    # the file carries what the sidecar says (labels, input, preprocessing step by step), and no machine path
    assert embedded["labels"] == sidecar["labels"] and embedded["input_size"] == 32
    assert any("INTER_CUBIC" in step for step in embedded["preprocessing"]["steps"])
    assert str(workspace) not in json.dumps(sidecar) and sidecar["source"] == run.name
    again = runner.invoke(app, ["export-model", str(run), "--format", fmt, "--out", str(out)])
    assert again.exit_code == 2 and "exists" in again.output


def _scores(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "images_per_second"}


def test_a_saved_hf_dataset_trains_and_evaluates_like_its_source(workspace):
    assert runner.invoke(app, ["export", "imagefolder", "--src", "data/synthetic", "--out", "hf"]).exit_code == 0
    info = runner.invoke(app, ["info", "hf", "--json"])
    assert info.exit_code == 0, info.output
    records = {}
    for data in ("data/synthetic", "hf"):
        result = runner.invoke(app, ["train", "test_cnn", "--data", data, "--preset", "smoke", "--json"])
        assert result.exit_code == 0, result.output
        records[data] = json.loads(result.stdout[result.stdout.index("{"):])
    source, exported = records["data/synthetic"], records["hf"]
    assert exported["dataset"] == source["dataset"] == "synthetic"
    assert exported["counts"] == source["counts"]
    assert _scores(exported["test_at_best"]) == _scores(source["test_at_best"])
    run = Path(exported["run_id"])
    scores = []
    for data in ("hf", "data/synthetic"):
        evaluated = runner.invoke(app, ["eval", str(run), "--data", data, "--json"])
        assert evaluated.exit_code == 0, evaluated.output
        scores.append(_scores(json.loads(evaluated.stdout)["test_at_best"]))
    assert scores[0] == scores[1]  # the same images, read from either
    synth = runner.invoke(app, ["synth", "hf", "--src", "hf", "--out", "data/udc-hf"])
    assert synth.exit_code == 0, synth.output
    assert json.loads((workspace / "data" / "udc-hf" / "manifest.json").read_text())["images"] == 84


def test_a_udc_export_carries_its_recipe_and_its_card_loads_with_huggingface_hub(workspace):
    from huggingface_hub import DatasetCard

    assert runner.invoke(app, ["synth", "synthetic", "--src", "data/synthetic", "--out", "data/udc"]).exit_code == 0
    assert runner.invoke(app, ["export", "imagefolder", "--src", "data/udc", "--out", "hf"]).exit_code == 0
    card = DatasetCard.load(workspace / "hf" / "README.md")  # the hub's own parser
    meta = card.data.to_dict()
    assert (meta["license"], meta["size_categories"], meta["source_datasets"]) == ("apache-2.0", ["n<1K"], ["original"])
    assert meta["udcbench_degradation"]["recipe"] == "toled" and meta["udcbench_degradation"]["seed"] == 0
    assert "toled" in card.text
    assert json.loads((workspace / "hf" / "manifest.json").read_text())["recipe_name"] == "toled"
    # published as what it is, with no folder of this machine in it
    assert meta["pretty_name"] == "Synthetic faces behind the toled panel (udcbench export)"
    assert "@software{udcbench" in card.text and str(workspace) not in card.text
    from datasets import load_from_disk

    sources = set(load_from_disk(str(workspace / "hf"))["test"]["source"])
    assert sources == {"Synthetic faces, toled panel (udcbench synth)"}
    assert str(workspace) not in (workspace / "hf" / "udcbench-export.json").read_text()


def test_predict_levels_the_face_by_its_eyes_for_runs_trained_on_aligned_faces():
    """RAF-DB's faces are aligned: a photo turned by 12 degrees is levelled before it is cropped (dlib's landmarks,
    the landmarks extra), so that its crop is close to the upright photo's."""
    if importlib.util.find_spec("dlib") is None:
        pytest.skip("dlib (the landmarks extra) is not installed")
    from types import SimpleNamespace

    from udcbench.datasets import get_adapter_class
    from udcbench.predict import Predictor

    assert get_adapter_class("rafdb").spec.aligned and not get_adapter_class("ferplus").spec.aligned
    faces = create_dataset("synthetic", n_train=4, n_test=1, size=200)
    canvas = np.full((480, 640, 3), 90, np.uint8)
    canvas[140:340, 250:450] = faces.load_image(faces.records("train")[0])
    turned = cv2.warpAffine(canvas, cv2.getRotationMatrix2D((350, 240), 12, 1.0), (640, 480),
                            borderMode=cv2.BORDER_REPLICATE)
    box = [270, 160, 160, 160]
    make = lambda aligned: Predictor(None, SimpleNamespace(input_size=64), (), 0.2, False, None, "", "haar",  # noqa: E731
                                     aligned)
    upright = make(False).crop_at(canvas, box).astype(float)
    levelled, as_turned = (make(a).crop_at(turned, box).astype(float) for a in (True, False))
    assert np.abs(levelled - upright).mean() < 0.7 * np.abs(as_turned - upright).mean()


def test_predict_says_a_run_of_drawn_faces_learnt_drawn_faces_and_predicts_in_the_runs_precision(workspace):
    from udcbench.predict import Predictor

    run = _trained(workspace)
    photo = _photo(workspace / "me.png")
    result = runner.invoke(app, ["predict", str(run), str(photo), "--crop", "none"])
    assert result.exit_code == 0 and "learnt udcbench's drawn faces, not real ones" in result.output
    record = json.loads((run / "results.json").read_text())
    for trained, amp in (("fp32", False), ("bf16", True)):
        (run / "results.json").write_text(json.dumps({**record, "precision": trained}))
        assert Predictor.load(run, "cpu").config.amp is amp  # as the run evaluated, whatever this CPU has


def test_degrade_never_replaces_a_file_it_did_not_write_and_gives_colliding_names_distinct_outputs(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    mine = out / "x-toled.png"
    mine.write_bytes(b"my own picture")
    photo = _photo(tmp_path / "x.png")
    refused = runner.invoke(app, ["degrade", str(photo), "--out", str(out)])
    assert refused.exit_code == 2 and "udcbench did not write it" in refused.output and "--overwrite" in refused.output
    assert mine.read_bytes() == b"my own picture"
    assert runner.invoke(app, ["degrade", str(photo), "--out", str(out), "--overwrite"]).exit_code == 0
    assert mine.read_bytes() != b"my own picture"
    assert runner.invoke(app, ["degrade", str(photo), "--out", str(out)]).exit_code == 0  # its own file now
    # one stem in two formats and two folders, and a 250-byte name: 4 photos, 4 results, none replaced
    same = [_photo(tmp_path / "a.png"), _photo(tmp_path / "a.jpg", 1), _photo(tmp_path / "b" / "a.png", 2),
            _photo(tmp_path / ("n" * 246 + ".png"), 3)]
    result = runner.invoke(app, ["degrade", *map(str, same), "--out", str(tmp_path / "many"), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len({r["degraded"] for r in rows}) == 4 and all(Path(r["degraded"]).is_file() for r in rows)
    assert all(len(Path(r["figure"]).name.encode()) <= 255 for r in rows)


def test_export_probes_a_model_at_its_own_size_and_never_replaces_a_sidecar_it_did_not_write(workspace):
    result = runner.invoke(app, ["train", "rul", "--data", "data/synthetic", "--preset", "smoke",
                                 "--set", "input_size=48"])
    assert result.exit_code == 0, result.output
    run = workspace / "runs" / "synthetic" / "rul-smoke-s0"
    out = workspace / "rul.pt"
    exported = runner.invoke(app, ["export-model", str(run), "--out", str(out), "--json"])
    assert exported.exit_code == 0, exported.output  # RUL's head is bound to its size: a 32-px probe crashed
    assert json.loads(exported.stdout)["input_size"] == 48
    mine = workspace / "m.pt.json"
    mine.write_text("my notes")
    refused = runner.invoke(app, ["export-model", str(run), "--out", str(workspace / "m.pt")])
    assert refused.exit_code == 2 and "m.pt.json exists" in refused.output and mine.read_text() == "my notes"
    assert not (workspace / "m.pt").exists()


def test_predict_goes_on_past_a_bad_image_and_lists_it(workspace, tmp_path):
    run = _trained(workspace)
    folder = tmp_path / "photos"
    good = _photo(folder / "a.png")
    (folder / "b.png").write_bytes(b"not an image at all")
    result = runner.invoke(app, ["predict", str(run), str(folder), "--crop", "none", "--json", "--csv",
                                 str(tmp_path / "rows.csv")])
    assert result.exit_code == 0, result.output
    rows = {Path(r["file"]).name: r for r in json.loads(result.stdout)}
    assert rows["a.png"]["predicted"] and rows["b.png"]["face"] == "unreadable" and rows["b.png"]["error"]
    assert "unreadable:" in result.output and good.exists()
    table = runner.invoke(app, ["predict", str(run), str(folder), "--crop", "none"])
    assert table.exit_code == 0 and "unreadable" in table.stdout


def test_degrade_refuses_a_photo_over_its_memory_budget_in_one_line(tmp_path, monkeypatch):
    photo = _photo(tmp_path / "big.png")  # 640 x 480: about 0.05 GB at the panel's scale
    monkeypatch.setenv("UDCBENCH_DEGRADE_MEMORY_GB", "0.02")  # as an 81-megapixel photo against the default 8 GB
    result = runner.invoke(app, ["degrade", str(photo), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "over the budget of 0.02 GB" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out" / "big-toled.png").exists()


def test_an_allocation_the_machine_refuses_is_one_line(tmp_path, monkeypatch):
    import udcbench.photos as photos

    def refuse(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(photos, "degrade_files", refuse)
    result = runner.invoke(app, ["degrade", str(_photo(tmp_path / "a.png")), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and "out of memory" in result.output and "Traceback" not in result.output


def test_tiny_images_are_one_line_not_an_opencv_traceback(tmp_path, monkeypatch):
    thin, dot = tmp_path / "thin.png", tmp_path / "dot.png"
    assert cv2.imwrite(str(thin), np.full((1, 5000, 3), 100, np.uint8))
    assert cv2.imwrite(str(dot), np.full((1, 1, 3), 100, np.uint8))
    degraded = runner.invoke(app, ["degrade", str(thin), "--out", str(tmp_path / "out")])
    assert degraded.exit_code == 2 and "at least 16 on each side" in degraded.output
    calibrated = runner.invoke(app, ["calibrate", "--clean", str(dot), "--udc", str(dot), "--out",
                                     str(tmp_path / "p.yaml")])
    assert calibrated.exit_code == 2 and "at least 32 on each side" in calibrated.output
    import udcbench.photos as photos

    def opencv_fails(*args, **kwargs):  # whatever else OpenCV refuses is one line too
        cv2.resize(np.zeros((1, 1, 3), np.uint8), (0, 0))

    monkeypatch.setattr(photos, "degrade_files", opencv_fails)
    other = runner.invoke(app, ["degrade", str(_photo(tmp_path / "a.png")), "--out", str(tmp_path / "o2")])
    assert other.exit_code == 2 and "OpenCV cannot process this image" in other.output
    assert "Traceback" not in degraded.output + calibrated.output + other.output


def test_export_removes_what_a_killed_export_left(workspace):
    from udcbench.files import temp_path

    run = _trained(workspace)
    out = workspace / "models" / "m.pt"
    out.parent.mkdir()
    left = temp_path(out).with_name(temp_path(out).name.replace(f".{os.getpid()}.", ".999999999."))
    left.write_bytes(bytes(1000))  # a temporary of a process long gone (a SIGKILL mid-write)
    mine = out.parent / "notes.txt"
    mine.write_text("keep")
    assert runner.invoke(app, ["export-model", str(run), "--out", str(out)]).exit_code == 0
    assert not left.exists() and mine.read_text() == "keep" and out.is_file()


def test_a_runs_model_folder_loads_in_predict_and_in_the_docs_plain_torch_example(workspace, tmp_path):
    import re

    run = _trained(workspace, "resnet18")
    folder = run / "model"
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "resnet18" and config["id2label"]["0"] == "neutral"
    assert config["input_size"] == 32 and config["crop"]["grayscale"] is False
    assert (folder / "model.safetensors").is_file()
    face = sorted((workspace / "data" / "synthetic" / "test").rglob("*.png"))[0]
    expected = json.loads(runner.invoke(app, ["predict", str(run), str(face), "--crop", "none", "--json"]).stdout)[0]
    from_folder = json.loads(runner.invoke(app, ["predict", str(folder), str(face), "--crop", "none",
                                                 "--json"]).stdout)[0]
    assert from_folder["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-6)
    page = (Path(__file__).resolve().parents[1] / "docs" / "photos.md").read_text()
    code = re.search(r"## A run's model, as the field loads it.*?```python\n(.*?)```", page, re.S).group(1)
    namespace: dict = {}
    exec(code.replace("RUN", str(run)).replace("FACE.png", str(face)), namespace)  # the page's own example
    assert namespace["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-4)


def test_a_failing_onnx_export_says_one_line_on_stderr_and_nothing_on_stdout(workspace, monkeypatch, capfd):
    run = _trained(workspace, "resnet18")

    def failing(*args, **kwargs):  # what the legacy exporter does on an operator it lacks: a graph dump, then raise
        print("graph(%image : Float(1, 3, 32, 32)) ... " * 2000)
        os.write(1, b"native graph dump\n")
        raise RuntimeError("Exporting the operator 'aten::nosuch' to ONNX opset version 17 is not supported")

    monkeypatch.setattr(torch.onnx, "export", failing)
    result = runner.invoke(app, ["export-model", str(run), "--format", "onnx", "--out", "m.onnx", "--json"])
    assert result.exit_code == 2 and result.stdout == ""
    assert "does not export to ONNX (Exporting the operator 'aten::nosuch'" in result.stderr
    assert "graph dump" not in capfd.readouterr().out  # native writes went to stderr as well
    assert not (workspace / "m.onnx").exists()
