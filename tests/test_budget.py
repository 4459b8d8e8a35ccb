"""The quick study's cost plan (``reproduce --dry-run``) against its budget, and the image cache."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from udcbench.budget import (
    QUICK_BUDGET_MINUTES,
    REFERENCE_SPEED,
    UNCOUNTED_SHARE,
    budget_units,
    run_units,
    split_counts,
    unit_cost,
)
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


def test_a_plan_on_a_gpu_prices_each_run_from_the_gpu_table_and_says_which_figures_are_measured(tmp_path):
    from udcbench.gpu_cost import gpu_row, plan_on_gpu

    plan = plan_study("quick", _empty_workspace(tmp_path))
    on_gpu = plan_on_gpu(plan, "h100", gpus=4)
    runs = [entry for entry in on_gpu.items if entry.item.work is not None]
    assert runs and len(runs) == sum(item.work is not None for item in plan.items)
    for entry in runs:  # trained / training images/s + evaluated / inference images/s + the rest on the CPU
        w, row = entry.item.work, gpu_row("h100", entry.item.work.method, entry.item.work.input_size)
        seconds = w.trained / row["train_images_per_s"] + w.evaluated / row["infer_images_per_s"] + \
            w.other_units / REFERENCE_SPEED
        assert entry.minutes == pytest.approx(seconds / 60) and entry.source == row["source"]
    others = [e for e in on_gpu.items if e.item.work is None]
    assert {e.source for e in others if not e.item.inference} == {"cpu"}  # drawing faces, synthesis
    sweep = next(e for e in others if e.item.what == "UDC-C sweep")  # its inference on the GPU, its synthesis not
    scored = sum(w.evaluated / gpu_row("h100", w.method, w.input_size)["infer_images_per_s"]
                 for w in sweep.item.inference)
    assert sweep.minutes > scored / 60 and sweep.source in ("measured", "estimated")
    assert on_gpu.minutes == pytest.approx(sum(e.minutes for e in on_gpu.items) * (1 + UNCOUNTED_SHARE))
    assert on_gpu.minutes / 4 < on_gpu.side_by_side_minutes < on_gpu.minutes
    stage2 = next(i for i in plan.items if i.what == "train lrdif")
    assert plan.items[stage2.after].what == "train lrdif-s1" and plan.items[stage2.after].condition == stage2.condition
    with pytest.raises(UdcbenchError, match="unknown GPU 'tpu'"):
        plan_on_gpu(plan, "tpu")


def test_runs_side_by_side_wait_for_their_first_stage():
    from udcbench.budget import PlanItem, RunWork
    from udcbench.gpu_cost import GpuItem, GpuPlan

    def run(what, minutes, after=None):
        return GpuItem(PlanItem(what, "d", "c", 0, work=RunWork(what, 48, 8, 1, 1, 0), after=after), minutes, "x")

    synth = GpuItem(PlanItem("synthesise toled", "d", "c", 0), 3.0, "cpu")
    items = [synth, run("stage 1", 10), run("stage 2", 10, after=1), run("other", 5),
             GpuItem(PlanItem("t-SNE", "d", "c", 0), 2.0, "cpu")]
    # GPU 0: stage 1 (0-10) then other (10-15); GPU 1 idles until stage 1 ends, then stage 2 (10-20)
    share = 1 + UNCOUNTED_SHARE  # start-up, figures and tables on top
    assert GpuPlan("h100", items, 2).side_by_side_minutes == pytest.approx((3 + 20 + 2) * share)
    items[2].item.after = None  # without the dependency: stage 2 on GPU 1 at once, other after stage 1
    assert GpuPlan("h100", items, 2).side_by_side_minutes == pytest.approx((3 + 15 + 2) * share)
    assert GpuPlan("h100", items, 1).side_by_side_minutes == pytest.approx(GpuPlan("h100", items, 1).minutes)


def test_dry_run_on_a_gpu_from_the_command_line(tmp_path, monkeypatch):
    in_default_workspace(monkeypatch, tmp_path)
    result = runner.invoke(app, ["reproduce", "--study", "quick", "--dry-run", "--gpu", "h100", "--gpus", "0,1",
                                 "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["gpu"] == "h100" and plan["gpus"] == 2 and plan["side_by_side_minutes"] < plan["minutes"]
    assert {i["source"] for i in plan["items"]} <= {"measured", "estimated", "cpu"}
    shown = runner.invoke(app, ["reproduce", "--study", "quick", "--dry-run", "--gpu", "h100", "--gpus", "0,1"])
    assert shown.exit_code == 0 and "NVIDIA H100" in shown.stdout and "2 GPUs, one run per GPU" in shown.stdout
    wrong = runner.invoke(app, ["reproduce", "--study", "quick", "--gpu", "h100"])
    assert wrong.exit_code == 2 and "use it with --dry-run" in wrong.output
    assert not any(tmp_path.iterdir())
