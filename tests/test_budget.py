"""The quick study's cost plan (``reproduce --dry-run``) against its budget, and the image cache."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from udcbench.budget import QUICK_BUDGET_MINUTES, REFERENCE_SPEED, budget_units, run_units, split_counts, unit_cost
from udcbench.cli import app
from udcbench.datasets import create_dataset
from udcbench.datasets.generate import generate_synthetic
from udcbench.engine.data import forget_decoded, load_images
from udcbench.errors import UdcbenchError
from udcbench.methods import get_method, study_methods
from udcbench.reproduce import STUDY_PRESETS, plan_study
from udcbench.workspace import Workspace

from conftest import in_default_workspace

runner = CliRunner()


def _empty_workspace(root) -> Workspace:
    return Workspace(root / "data", root / "runs", root / "results", root / "cache")


def test_the_quick_study_fits_its_budget_on_the_reference_machine(tmp_path):
    plan = plan_study("quick", _empty_workspace(tmp_path))
    assert budget_units() == QUICK_BUDGET_MINUTES * 60 * REFERENCE_SPEED
    assert plan.units <= budget_units(), f"quick study: {plan.minutes():.1f} min on the reference machine"
    trained = {(item.what, item.condition) for item in plan.items}
    udc = STUDY_PRESETS["quick"].condition
    for method in study_methods(quick=True):  # every method of the quick study, clean and UDC
        if get_method(method).ablation_only:  # Table 5's variants: where Table 5 is measured only
            assert (f"train {method}", udc) in trained and (f"train {method}", "clean") not in trained
        else:
            assert {(f"train {method}", "clean"), (f"train {method}", udc)} <= trained
    assert not any(get_method(m).in_quick_study for m in ("dacl", "arm", "manet", "posterpp"))
    assert ("train lrdif-s1", udc) in trained  # stage 1 once per condition, shared by the variants
    assert sum(item.what == "train lrdif-s1" for item in plan.items) == 2
    # the paper's main comparison: Table 5's variants and Figure 6's sweep are left to the cpu and paper studies
    assert STUDY_PRESETS["quick"].steps == () and not any(" T=" in i.what or "lrdif-s2" in i.what for i in plan.items)
    assert {"draw faces", f"synthesise {udc}", "t-SNE resnet18", "t-SNE lrdif"} <= {i.what for i in plan.items}
    # one face pre-training for the whole study, counted until it is done
    assert [i.what for i in plan.items].count("face pre-training") == 1
    workspace = _empty_workspace(tmp_path)
    (workspace.runs / "pretrained" / STUDY_PRESETS["quick"].pretrain.folder_name()).mkdir(parents=True)
    assert "face pre-training" not in [i.what for i in plan_study("quick", workspace).items]


def test_a_run_costs_its_steps_evaluations_and_set_up():
    config = get_method("resnet18").config("quick")
    counts = split_counts(2520, 280, 700)
    units, detail = run_units(config, counts)
    steps = 2520 // config.batch_size
    expected = (config.epochs * steps * config.batch_size * unit_cost("resnet18", 48)
                + config.epochs * 980 * unit_cost("resnet18", 48, "infer") + 3500 * unit_cost("load_image")
                + config.epochs * unit_cost("epoch_setup") + unit_cost("run_setup"))
    assert units == pytest.approx(expected)
    assert f"{steps} steps of {config.batch_size}, 48 px" in detail
    assert run_units(config, counts, decode=False)[0] == pytest.approx(expected - 3500 * unit_cost("load_image"))
    config.max_steps = 5
    assert run_units(config, counts)[0] < units


def test_a_size_without_a_measured_cost_is_a_one_line_error():
    with pytest.raises(UdcbenchError, match="method_speed.py --cost-table"):
        unit_cost("resnet18", 37)


def test_dry_run_prints_the_plan_and_trains_nothing(tmp_path, monkeypatch):
    in_default_workspace(monkeypatch, tmp_path)
    result = runner.invoke(app, ["reproduce", "--preset", "quick", "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["budget_minutes"] == QUICK_BUDGET_MINUTES and plan["reference_minutes"] <= QUICK_BUDGET_MINUTES
    assert plan["units"] == pytest.approx(sum(item["units"] for item in plan["items"]))
    shown = runner.invoke(app, ["reproduce", "--preset", "quick", "--dry-run"])
    assert shown.exit_code == 0 and f"budget {QUICK_BUDGET_MINUTES:.0f} min" in shown.stdout
    assert "train dan" in shown.stdout and "face pre-training" in [item["what"] for item in plan["items"]]
    assert not any(tmp_path.iterdir())  # nothing drawn, synthesised or trained


def test_images_are_decoded_once_per_process(tmp_path, monkeypatch):
    generate_synthetic(tmp_path / "faces", n_train=14, n_test=7, size=40)
    adapter = create_dataset("imagefolder", tmp_path / "faces")
    records = adapter.records("train")
    forget_decoded()
    calls = []
    original = type(adapter).load_image
    monkeypatch.setattr(type(adapter), "load_image", lambda self, r: calls.append(r.id) or original(self, r))
    widths: list[int] = []
    first = load_images(adapter, records, 32, "loading", sizes=widths)
    with pytest.raises(ValueError):  # read-only: the one decoded copy is shared, never copied
        first[:] = 0
    again, widths_again = load_images(adapter, records, 32, "loading", sizes=[]), []
    load_images(adapter, records, 32, "loading", sizes=widths_again)
    assert len(calls) == len(records) and widths == widths_again == [40] * len(records)
    assert again.any() and again.shape == (len(records), 32, 32, 3)
    load_images(adapter, records, 24, "loading")  # another size is decoded again
    assert len(calls) == 2 * len(records)
    forget_decoded()
    np.testing.assert_array_equal(load_images(adapter, records, 32, "loading"), again)
    assert len(calls) == 3 * len(records)


def test_dry_run_without_the_datasets_is_a_one_line_error(tmp_path, monkeypatch):
    in_default_workspace(monkeypatch, tmp_path)
    result = runner.invoke(app, ["reproduce", "--preset", "cpu", "--dry-run"])
    assert result.exit_code == 2 and "none of rafdb, ferplus, kdef found" in result.output
