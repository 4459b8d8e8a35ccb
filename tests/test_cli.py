import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from udcbench.cli import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def workspace(tmp_path: Path, monkeypatch) -> Path:
    """Each CLI test runs in an empty workspace folder."""
    monkeypatch.chdir(tmp_path)
    for var in ("UDCBENCH_DATA", "UDCBENCH_RUNS", "UDCBENCH_RESULTS", "UDCBENCH_CACHE", "UDCBENCH_DEBUG"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def run(*args: str):
    return runner.invoke(app, list(args))


def test_help_lists_the_data_commands_with_examples():
    result = run("--help")
    assert result.exit_code == 0
    for name in ("datasets", "info", "generate", "export", "landmarks"):
        assert name in result.output
    for name in ("datasets", "info", "generate", "export", "landmarks"):
        sub = run(name, "--help")
        assert sub.exit_code == 0 and "Example" in sub.output, name


def test_datasets_json():
    result = run("datasets", "--json")
    assert result.exit_code == 0
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert set(rows) == {"rafdb", "ferplus", "kdef", "imagefolder", "synthetic", "hf"}
    assert rows["ferplus"]["options"]["label_mode"]["default"] == "majority"
    assert rows["rafdb"]["default_location"].endswith("data/rafdb")


def test_info_on_a_folder_and_by_name(ferplus_root: Path, workspace: Path):
    result = run("info", str(ferplus_root), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["split_totals"] == {"train": 4, "valid": 2}
    assert summary["splits"]["train"]["contempt"] == 1 and summary["absent_splits"] == ["test"]
    result = run("info", str(ferplus_root), "-o", "label_mode=majority7")
    assert result.exit_code == 0 and "contempt" not in result.stdout
    (workspace / "data").mkdir()
    ferplus_root.rename(workspace / "data" / "ferplus")
    result = run("info", "ferplus", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["total"] == 6


def test_known_errors_are_one_line_without_traceback(workspace: Path, monkeypatch):
    for args, message in (
        (("info", "nowhere"), "neither a folder nor a dataset name"),
        (("info", "rafdb"), "RAF-DB not found at"),
        (("info", str(workspace)), "no known dataset layout"),
        (("export", "celeba", "--out", "x"), "unknown dataset 'celeba'"),
        (("info", "synthetic", "-o", "bogus"), "not KEY=VALUE"),
    ):
        result = run(*args)
        assert result.exit_code == 2, args
        assert message in result.output, (args, result.output)
        assert "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
    monkeypatch.setenv("UDCBENCH_DEBUG", "1")
    result = run("info", "nowhere")
    assert result.exit_code != 0 and result.exception is not None


def test_rafdb_missing_error_says_where_to_get_it():
    result = run("info", "rafdb")
    assert "whdeng.cn" in result.output and "data/rafdb" in result.output


def test_generate_then_info_export_and_landmarks(workspace: Path):
    result = run("generate", "--n-train", "28", "--n-test", "14", "--size", "48", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["split_totals"] == {"train": 28, "test": 14}
    out = workspace / "data" / "synthetic"
    assert (out / "landmarks.npz").is_file() and (out / "manifest.json").is_file()
    again = run("generate", "--n-train", "28", "--n-test", "14", "--size", "48", "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["generation"]["skipped"]  # already there
    other = run("generate", "--n-train", "7", "--n-test", "0")
    assert other.exit_code == 2 and "--overwrite" in other.output  # other data: never overwritten silently

    result = run("landmarks", str(out), "--split", "test", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["methods"] == {"ground_truth": 14} and not report["cached"]
    assert json.loads(run("landmarks", str(out), "--split", "test", "--json").stdout)["cached"]

    result = run("export", "imagefolder", "--src", str(out), "--out", str(workspace / "hf"))
    assert result.exit_code == 0, result.output
    assert "train 28" in result.stdout and (workspace / "hf" / "dataset_dict.json").is_file()


def test_generate_is_independent_of_workers(workspace: Path):
    assert run("generate", "a", "--n-train", "14", "--n-test", "0", "--size", "32").exit_code == 0
    assert run("generate", "b", "--n-train", "14", "--n-test", "0", "--size", "32", "--workers", "2").exit_code == 0
    files_a = sorted(p.relative_to(workspace / "a") for p in (workspace / "a").rglob("*.png"))
    files_b = sorted(p.relative_to(workspace / "b") for p in (workspace / "b").rglob("*.png"))
    assert files_a == files_b and len(files_a) == 14
    for rel in files_a:
        assert (workspace / "a" / rel).read_bytes() == (workspace / "b" / rel).read_bytes()


def _one_line_error(result, *words: str) -> None:
    """Exit status 2 and a single line on the output that names ``words``."""
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert all(w in lines[0] for w in words), lines[0]


def test_bad_values_and_missing_things_fail_in_one_line(workspace: Path):
    (workspace / "afile.txt").write_text("x")
    _one_line_error(run("info", "afile.txt"), "is a file, not a dataset folder")
    _one_line_error(run("table", "abc"), "'abc' is not a table")
    _one_line_error(run("train", "resnet18", "--preset", "bogus"), "--preset", "bogus")
    _one_line_error(run("train", "test_cnn", "--preset", "smoke", "--device", "gpu"), "not a device")
    absent = run("info", "rafdb")
    _one_line_error(absent, "RAF-DB not found", "give its folder as the first argument")
    assert "--src" not in absent.output
    assert not (workspace / "data").exists() and not (workspace / "runs").exists()  # nothing acted first


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_device_cuda_without_a_gpu_is_one_line_before_any_work(workspace: Path):
    _one_line_error(run("train", "test_cnn", "--preset", "smoke", "--device", "cuda"), "no CUDA GPU")
    assert not (workspace / "runs").exists() and not (workspace / "data").exists()


def test_reproduce_checks_its_arguments_before_drawing_anything(workspace: Path):
    _one_line_error(run("reproduce", "--methods", "foo"), "unknown method 'foo'")
    _one_line_error(run("reproduce", "--datasets", "nosuch"), "nosuch")
    assert not (workspace / "data").exists()


def test_synth_of_only_unreadable_images_names_no_preview(workspace: Path):
    source = workspace / "broken"
    for label in ("happiness", "sadness"):
        (source / "train" / label).mkdir(parents=True)
        (source / "train" / label / "a.png").write_bytes(b"not a png")
    result = run("synth", "imagefolder", "--src", str(source), "--out", str(workspace / "out"))
    assert result.exit_code == 3, result.output
    assert "no preview: no image was written" in result.output and not (workspace / "out" / "preview.png").exists()


def test_runs_fits_80_columns_and_wide_shows_every_column(workspace: Path):
    assert run("train", "test_cnn", "--preset", "smoke", "--set", "max_steps=2").exit_code == 0
    narrow = runner.invoke(app, ["runs"], env={"COLUMNS": "80"})
    assert narrow.exit_code == 0
    assert all(len(line) <= 80 for line in narrow.output.splitlines())
    assert "test_cnn-smoke-s0" in narrow.output and "synthetic" in narrow.output  # whole cells, not pieces
    wide = runner.invoke(app, ["runs", "--wide"], env={"COLUMNS": "200"})
    assert "MCA %" in wide.output and "MCA %" not in narrow.output


def test_a_budget_a_panel_and_a_study_each_have_their_own_name_and_the_old_one_still_works(tmp_path, monkeypatch):
    from conftest import in_default_workspace

    in_default_workspace(monkeypatch, tmp_path)
    for args in (["reproduce", "--study", "quick", "--dry-run", "--json"],
                 ["reproduce", "--preset", "quick", "--dry-run", "--json"]):
        result = run(*args)
        assert result.exit_code == 0 and json.loads(result.stdout)["preset"] == "quick", result.output
    clash = run("reproduce", "--study", "quick", "--preset", "cpu", "--dry-run")
    assert clash.exit_code == 2 and "disagree" in clash.output
    helps = {cmd: run(cmd, "--help").output for cmd in ("train", "synth", "reproduce")}
    assert "--budget" in helps["train"] and "--panel" in helps["synth"] and "--study" in helps["reproduce"]
    assert all("--preset" not in text for text in helps.values())  # the old name is hidden


def test_every_command_that_writes_something_has_json(tmp_path, monkeypatch):
    from conftest import in_default_workspace

    in_default_workspace(monkeypatch, tmp_path)
    assert run("generate", "--n-train", "14", "--n-test", "7", "--size", "32").exit_code == 0
    synth = run("synth", "synthetic", "--src", "data/synthetic", "--out", "data/udc", "--json")
    assert synth.exit_code == 0 and json.loads(synth.stdout)["complete"] and json.loads(synth.stdout)["written"] == 21
    export = run("export", "imagefolder", "--src", "data/udc", "--out", "hf", "--json")
    assert export.exit_code == 0 and json.loads(export.stdout)["counts"] == {"train": 14, "test": 7}
    figure = run("figure", "3", "--clean", "data/synthetic", "--udc", "data/udc", "--json")
    assert figure.exit_code == 0 and Path(json.loads(figure.stdout)["files"][0]).is_file()


def test_runs_json_gives_accuracies_in_percent_as_the_tables(tmp_path, monkeypatch):
    from conftest import in_default_workspace

    in_default_workspace(monkeypatch, tmp_path)
    assert run("generate", "--n-train", "28", "--n-test", "14", "--size", "32").exit_code == 0
    trained = run("train", "test_cnn", "--data", "data/synthetic", "--budget", "smoke", "--json")
    record = json.loads(trained.stdout[trained.stdout.index("{"):])
    (row,) = json.loads(run("runs", "--json").stdout)
    assert row["accuracy"] == pytest.approx(100 * record["test_at_best"]["accuracy"], abs=1e-3)


def test_log_lines_are_not_wrapped_in_a_pipe(capsys):
    from udcbench.progress import stderr

    path = "/a/" + "long-folder-name/" * 12 + "run"
    stderr.print(f"training resnet18 -> {path}")
    assert capsys.readouterr().err == f"training resnet18 -> {path}\n"  # one line, the path whole


def test_a_path_that_reads_as_markup_prints_as_text(tmp_path, capsys):
    from udcbench.progress import stderr

    odd = "runs/[/x]/[abc]/model"
    stderr.print(f"[yellow]note:[/] training into {odd}")  # raised MarkupError before
    assert odd in capsys.readouterr().err
    folder = tmp_path / "[/x]"
    result = runner.invoke(app, ["generate", str(folder), "--n-train", "14", "--n-test", "7", "--size", "32"])
    assert result.exit_code == 0 and "Traceback" not in result.output


def test_slots_and_gpus_are_checked_before_any_work(tmp_path, monkeypatch):
    from udcbench.scheduler import parse_slots

    monkeypatch.chdir(tmp_path)
    both = runner.invoke(app, ["reproduce", "--study", "smoke", "--slots", "2", "--gpus", "0"])
    assert both.exit_code == 2 and "not both" in both.output
    slots = parse_slots(None, 2)
    assert [s.name for s in slots] == ["cpu-0", "cpu-1"] and all(s.device == "cpu" for s in slots)
    assert slots[0].env["CUDA_VISIBLE_DEVICES"] == "" and slots[0].threads >= 1
    if not __import__("torch").cuda.is_available():
        none = runner.invoke(app, ["reproduce", "--study", "smoke", "--gpus", "all"])
        assert none.exit_code == 2 and "no CUDA device" in none.output and not (tmp_path / "runs").exists()
