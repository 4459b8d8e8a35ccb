"""UDC-C: severities, the sweep of any trained or exported model, its cache, CE and mCE (issue 45)."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from degradations import load_recipe
from degradations.severity import AXES, LEVELS, severity_recipe
from udcbench import robustness
from udcbench.cli import app

from conftest import in_default_workspace

runner = CliRunner()


def test_level_3_is_the_preset_and_every_axis_gets_harsher_with_the_level():
    for name in ("toled", "poled", "lowlight"):
        preset = load_recipe(name)
        recipes = [severity_recipe(preset, level) for level in LEVELS]
        assert recipes[2] is preset and recipes[2].digest == preset.digest
        assert len({r.digest for r in recipes}) == 5 and [r.name for r in recipes][:2] == [f"{name}-s1", f"{name}-s2"]
        if preset.kind == "udc":
            faces = [r.face_px("ferplus") for r in recipes]
            photons = [r.raw["photons"][0] for r in recipes]
            veils = [r.raw["veil"][1] for r in recipes]
            blue = [r.raw["gains"]["b"][0] for r in recipes]
            scattered = [r.raw["scatter"]["fraction"][0] for r in recipes]
            assert faces == sorted(faces, reverse=True) and faces[0] == 2 * faces[2] and faces[4] == faces[2] / 2
            assert photons == sorted(photons, reverse=True) and photons[0] == 4 * photons[2]
            assert veils == sorted(veils) and veils[4] == pytest.approx(2 * veils[2])
            # a panel twice as thick: its transmission squared (Beer-Lambert), its unscattered share squared
            assert blue == sorted(blue, reverse=True) and blue[4] == pytest.approx(blue[2] ** 4)
            assert scattered == sorted(scattered) and 1 - scattered[3] == pytest.approx((1 - scattered[2]) ** 2)
            assert all(r.raw["read_noise"] == preset.raw["read_noise"] for r in recipes)  # the sensor as measured
        else:
            means = [r.raw["darken"]["mean"] for r in recipes]
            assert means == sorted(means, reverse=True) and means[0] == pytest.approx(0.4)
    assert {a.kind for a in AXES} == {"udc", "lowlight"}
    with pytest.raises(ValueError):
        severity_recipe(load_recipe("toled"), 6)


def test_corruption_error_is_imagenet_cs_ratio_of_summed_errors():
    def cells(clean, by_panel):
        out = [{"panel": "clean", "severity": 0, "accuracy": clean}]
        return out + [{"panel": p, "severity": s, "accuracy": a} for p, accs in by_panel.items()
                      for s, a in zip((1, 3, 5), accs)]

    model = cells(90, {"a": [80, 70, 60], "b": [85, 85, 85]})
    reference = cells(80, {"a": [70, 50, 30], "b": [75, 70, 80]})
    scores = robustness.corruption_errors(model, reference)
    ce_a = 100 * (0.2 + 0.3 + 0.4) / (0.3 + 0.5 + 0.7)
    ce_b = 100 * (0.15 * 3) / (0.25 + 0.30 + 0.20)
    assert scores["per_panel"] == pytest.approx({"a": ce_a, "b": ce_b})
    assert scores["overall"] == pytest.approx((ce_a + ce_b) / 2)
    rce_a = 100 * ((0.2 - 0.1) + (0.3 - 0.1) + (0.4 - 0.1)) / ((0.3 - 0.2) + (0.5 - 0.2) + (0.7 - 0.2))
    rce_b = 100 * (3 * (0.15 - 0.1)) / ((0.25 - 0.2) + (0.3 - 0.2) + (0.2 - 0.2))
    assert scores["relative_per_panel"] == pytest.approx({"a": rce_a, "b": rce_b})
    assert scores["relative_overall"] == pytest.approx((rce_a + rce_b) / 2)
    assert robustness.corruption_errors(model, model)["overall"] == pytest.approx(100)
    same = cells(80, {"a": [80, 80, 80], "b": [80, 80, 80]})  # a reference that loses nothing: no relative CE
    assert robustness.corruption_errors(model, same)["relative_overall"] is None


def test_severities_parse_and_refuse_in_one_line():
    assert robustness.parse_severities("1-5") == LEVELS
    assert robustness.parse_severities("5,1,3") == (1, 3, 5)
    for bad in ("0-2", "x", "6"):
        with pytest.raises(robustness.UdcbenchError):
            robustness.parse_severities(bad)


@pytest.fixture
def trained(tmp_path, monkeypatch):
    in_default_workspace(monkeypatch, tmp_path)
    assert runner.invoke(app, ["generate", "--n-train", "70", "--n-test", "14", "--size", "32"]).exit_code == 0
    result = runner.invoke(app, ["train", "resnet18", "--data", "data/synthetic", "--budget", "smoke",
                                 "--set", "input_size=32"])
    assert result.exit_code == 0, result.output
    return tmp_path / "runs" / "synthetic" / "resnet18-smoke-s0"


def _sweep(model: Path, reference: Path, *extra: str) -> dict:
    result = runner.invoke(app, ["robustness", str(model), "--data", "data/synthetic", "--panels", "toled,lowlight",
                                 "--severities", "1,5", "--reference", str(reference), "--precision", "fp32",
                                 "--workers", "1", "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_a_run_folder_and_its_exported_models_score_alike_and_reuse_the_cache(trained, monkeypatch):
    calls = []
    real = robustness.synthesise_set
    monkeypatch.setattr(robustness, "synthesise_set", lambda *a, **k: calls.append(a[2].name) or real(*a, **k))
    run = _sweep(trained, trained)
    cells = {(c["panel"], c["severity"]): c for c in run["cells"]}
    assert set(cells) == {("clean", 0), ("toled", 1), ("toled", 5), ("lowlight", 1), ("lowlight", 5)}
    assert all(0 <= c["accuracy"] <= 100 and "mean_class_accuracy" in c for c in run["cells"])
    assert set(run["mce"]["per_panel"]) == {"toled", "lowlight"} and run["mce"]["overall"] == pytest.approx(100)
    assert sorted(calls) == ["lowlight-s1", "lowlight-s5", "toled-s1", "toled-s5"] and run["synthesised"] == 4
    stored = json.loads(Path(run["record_file"]).read_text())
    assert stored["kind"] == "robustness" and stored["cells"] == run["cells"]

    exported = {}
    for fmt, name in (("torchscript", "m.pt"), ("torch.export", "m.pt2"), ("onnx", "m.onnx")):
        made = runner.invoke(app, ["export-model", str(trained), "--format", fmt, "--out", name])
        assert made.exit_code == 0, made.output
        exported[fmt] = _sweep(Path(name), trained)
    assert len(calls) == 4  # every later model read the cache: nothing synthesised again
    for fmt, record in exported.items():
        assert record["synthesised"] == 0 and record["format"] == fmt
        for cell in record["cells"]:
            assert cell["accuracy"] == pytest.approx(cells[(cell["panel"], cell["severity"])]["accuracy"], abs=0.1)

    changed = load_recipe("toled").raw | {"photons": [2000, 5000], "name": "toled-mine"}
    Path("mine.yaml").write_text(yaml.safe_dump(changed))
    mine = runner.invoke(app, ["robustness", str(trained), "--data", "data/synthetic", "--panels", "mine.yaml",
                               "--severities", "1,5", "--workers", "1", "--no-train-reference", "--json"])
    assert mine.exit_code == 0, mine.output
    assert calls[4:] == ["toled-mine-s1", "toled-mine-s5"]  # a changed recipe is synthesised again
    found = json.loads(mine.stdout)  # the reference found in the store: the run itself (the control, trained clean)
    assert [Path(r).resolve() for r in found["reference"]["runs"]] == [trained.resolve()]
    assert found["mce"]["overall"] == pytest.approx(100)


def test_a_cached_cell_is_what_synth_writes(trained):
    from udcbench.datasets import create_dataset
    from udcbench.engine.data import resize_image
    from udcbench.synthesis import synthesize

    clean = create_dataset("synthetic", Path("data/synthetic"))
    recipe = load_recipe("toled")
    synthesize(clean, Path("data/udc-synthetic"), recipe)
    _, records = robustness.test_records(clean)
    digest = robustness.source_digest(clean, records)
    images, made = robustness.degraded_set(clean, records, recipe, 0, 32, Path(".udcbench-cache"), digest)
    assert made
    copy = create_dataset("synthetic", Path("data/udc-synthetic"))
    written = np.stack([resize_image(copy.load_image(r), 32) for r in copy.records(robustness.test_records(copy)[0])])
    assert written.shape == images.shape and np.abs(written.astype(int) - images.astype(int)).max() <= 1
    again, made = robustness.degraded_set(clean, records, recipe, 0, 32, Path(".udcbench-cache"), digest)
    assert not made and np.array_equal(again, images)
    cached = robustness.cache_path(Path(".udcbench-cache"), clean, recipe, digest, 0, 32)
    np.save(cached, np.zeros((3, 32, 32, 3), np.uint8))  # an entry of another set under its name: refused
    with pytest.raises(robustness.UdcbenchError, match="holds 3 images"):
        robustness.degraded_set(clean, records, recipe, 0, 32, Path(".udcbench-cache"), digest)


def test_robustness_refuses_a_degraded_copy_and_an_unknown_panel_in_one_line(trained):
    from udcbench.datasets import create_dataset
    from udcbench.synthesis import synthesize

    synthesize(create_dataset("synthetic", Path("data/synthetic")), Path("data/udc-synthetic"), load_recipe("toled"))
    for args, said in ((["--data", "data/udc-synthetic"], "clean"), (["--data", "data/synthetic", "--panels", "nope"],
                                                                    "no preset or recipe file"),
                       (["--data", "data/synthetic", "--severities", "7"], "levels run from")):
        result = runner.invoke(app, ["robustness", str(trained), *args, "--no-train-reference"])
        assert result.exit_code == 2 and said in result.output and len(result.output.strip().splitlines()) == 1


def _record(method: str, seed: int, mce: float, trained_on: str = "clean") -> dict:
    cells = [{"panel": "clean", "severity": 0, "accuracy": 80.0, "mean_class_accuracy": 70.0},
             *({"panel": p, "severity": s, "accuracy": 80.0 - 5 * s, "mean_class_accuracy": 60.0}
               for p in ("toled", "poled") for s in (1, 5))]
    return {"run_id": f"/runs/ferplus/{method}-cpu-s{seed}::robustness::ferplus:abc", "kind": "robustness",
            "method": method, "preset": "cpu", "init": "scratch", "input_size": 64, "dataset": "ferplus",
            "condition": trained_on, "test_split": "valid", "seed": seed, "precision": "fp32",
            "test_at_best": {"accuracy": 0.8, "mean_class_accuracy": 0.7}, "cells": cells,
            "panels": [{"name": "toled"}, {"name": "poled"}], "severities": [1, 5], "limit": None,
            "mce": {"overall": mce, "per_panel": {"toled": mce, "poled": mce}, "relative_overall": mce,
                    "relative_per_panel": {"toled": mce, "poled": mce}},
            "created": f"2026-12-0{seed + 1}T00:00:00+00:00", "run_dir": None}


def test_the_robustness_table_leaderboard_and_cards_read_the_sweeps(tmp_path, monkeypatch):
    from huggingface_hub import ModelCard

    from udcbench.engine.store import load_results, save_result
    from udcbench.reports.leaderboard import model_card
    from udcbench.reports.robustness import mce_by_model, robustness_leaderboard

    in_default_workspace(monkeypatch, tmp_path)
    store = tmp_path / "runs" / "results.sqlite"
    scores = {"resnet18": (100.0, 100.4, 99.6), "scn": (90.0, 90.5, 89.5), "rul": (99.0, 80.0, 118.0)}
    for method, values in scores.items():
        for seed, value in enumerate(values):
            save_result(store, _record(method, seed, value))
    table = runner.invoke(app, ["table", "robustness", "--json"])
    assert table.exit_code == 0, table.output
    rows = {r["method"]: r for r in json.loads(table.stdout)["rows"]}
    assert rows["scn"]["mce"] == "90.00" and rows["scn"]["seeds"] == 3 and rows["scn"]["mce_ci95"]
    assert rows["resnet18"]["ce_toled"] == "100.00"
    board = {r["method"]: r for r in robustness_leaderboard(load_results(store))}
    # SCN is separated from the control (tight seeds, 10 points apart); RUL's seeds spread too wide to rank
    assert board["scn"]["rank"] == 1 and board["resnet18"]["rank"] == 2 and board["rul"]["rank"] == 1
    shown = runner.invoke(app, ["leaderboard", "--robustness", "--json"])
    assert shown.exit_code == 0 and len(json.loads(shown.stdout)["rows"]) == 3
    mce = mce_by_model(load_results(store))
    assert mce[("scn", "cpu", "scratch", "clean")] == (pytest.approx(90.0), 3)
    row = {"method": "scn", "title": "SCN", "preset": "cpu", "init": "scratch", "input_size": "64",
           "dataset": "ferplus", "condition": "clean", "draw": "", "test_split": "valid", "seeds": 3,
           "accuracy": 83.0, "accuracy_std": 0.3, "mean_class_accuracy": 61.0}
    card = ModelCard(model_card([row], mce))
    metrics = {(r.metric_type, r.metric_value) for r in card.data.eval_results}
    assert ("mce", 90.0) in metrics and ("accuracy", 83.0) in metrics
    assert card.data.pipeline_tag == "image-classification"


def test_figure_severities_draws_every_level_of_every_panel(tmp_path, monkeypatch):
    in_default_workspace(monkeypatch, tmp_path)
    result = runner.invoke(app, ["figure", "severities", "--data", "synthetic", "--out", "figs"])
    assert result.exit_code == 0, result.output
    import cv2

    image = cv2.imread(result.stdout.strip())
    assert image.shape[0] == 24 + 3 * 160 and image.shape[1] == 90 + 6 * 160  # 3 panels x (clean + 5 levels)
    tiles = [image[24 + 160 : 24 + 320, 90 + k * 160 : 90 + (k + 1) * 160].astype(float) for k in range(6)]
    assert all(np.abs(tiles[0] - t).mean() > 5 for t in tiles[1:])  # every P-OLED level changes the face
