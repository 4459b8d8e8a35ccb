"""Files a user is handed run no code: checkpoints load tensors-only (issue 19)."""

import json
import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from udcbench.checkpoints import load_checkpoint, save_checkpoint
from udcbench.cli import app
from udcbench.errors import UdcbenchError

from conftest import in_default_workspace

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
    in_default_workspace(monkeypatch, tmp_path)
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
    _crafted(first / "last.pt", marker)  # stage 2 starts from stage 1's last epoch
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


def test_a_checkpoint_write_that_fails_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.ones(2)}}, path)
    real_save = torch.save

    def full_disk(obj, f):
        real_save(obj, f)  # the partial file exists when the disk fills, as in torch's zip writer
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 25973120 vs 25973016")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(UdcbenchError, match=r"could not write the checkpoint .*last.pt \(\d+ MiB free"):
        save_checkpoint({"model": {"w": torch.zeros(2)}}, path)
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(2))
    assert not list(tmp_path.glob(".*tmp"))  # no partial file left behind to fill the disk further


# -- crash-safety of records (items 6 and 7) ---------------------------------------------------------------
def test_a_record_write_that_fails_keeps_the_old_file(tmp_path, monkeypatch):
    import errno
    import os

    from udcbench.files import write_json

    path = write_json(tmp_path / "results.json", {"accuracy": 0.5})
    real_fsync = os.fsync

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError):
        write_json(path, {"accuracy": 0.9})
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert json.loads(path.read_text()) == {"accuracy": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary file left behind


def test_a_run_whose_record_was_torn_resumes_and_evaluates(workspace):
    assert _train("--set", "epochs=2").exit_code == 0
    run = workspace / "runs" / "synthetic" / "test_cnn-smoke-s0"
    first = json.loads((run / "results.json").read_text())
    (run / "results.json").write_text("")  # what a full disk left before records were written atomically
    evaluated = runner.invoke(app, ["eval", str(run), "--data", "synthetic", "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    resumed = _train("--set", "epochs=2", "--resume", "--json")
    assert resumed.exit_code == 0, resumed.output
    record = json.loads(resumed.stdout)
    assert record["test_at_best"] == first["test_at_best"] and record["best_epoch"] == first["best_epoch"]
    assert record["test_at_last"]["accuracy"] == first["test_at_last"]["accuracy"]
    assert json.loads((run / "results.json").read_text())["run_id"] == first["run_id"]


def test_resuming_a_finished_run_says_so(workspace):
    assert _train().exit_code == 0
    again = _train("--resume")
    assert again.exit_code == 0 and "finished; nothing to resume" in again.output


@pytest.mark.parametrize("setting, message", [("epochs=0", "epochs must be positive"),
                                              ("batch_size=0", "batch_size must be positive"),
                                              ("val_fraction=1.5", "val_fraction must be in")])
def test_impossible_settings_are_refused_before_anything_is_written(workspace, setting, message):
    result = _train("--set", setting)
    assert result.exit_code == 2 and message in result.output
    assert not (workspace / "runs").exists()


# -- nothing deleted or written where it should not be (items 2-5) ------------------------------------------
def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_export_never_deletes_the_source_or_a_folder_udcbench_did_not_write(tmp_path):
    from udcbench.datasets import create_dataset
    from udcbench.datasets.export import export_hf
    from udcbench.datasets.generate import generate_synthetic

    src = tmp_path / "faces"
    generate_synthetic(src, n_train=14, n_test=7, size=32)
    before = _tree(src)
    adapter = create_dataset("imagefolder", src)
    with pytest.raises(UdcbenchError, match="overlaps"):
        export_hf(adapter, src, overwrite=True, progress=False)  # what `synth --export hf` did to OUT-hf == src
    with pytest.raises(UdcbenchError, match="overlaps"):
        export_hf(adapter, tmp_path, overwrite=True, progress=False)  # a folder holding the source
    assert _tree(src) == before
    other = tmp_path / "thesis"
    other.mkdir()
    (other / "thesis.txt").write_text("years of work")
    with pytest.raises(UdcbenchError, match="refusing to delete"):
        export_hf(adapter, other, overwrite=True, progress=False)
    assert (other / "thesis.txt").read_text() == "years of work"
    out = tmp_path / "faces-hf"
    export_hf(adapter, out, progress=False)
    export_hf(adapter, out, overwrite=True, progress=False)  # a previous udcbench export may be replaced
    assert (out / "udcbench-export.json").is_file()


def test_overwrite_deletes_only_udcbench_output(tmp_path):
    from degradations import load_recipe
    from udcbench.datasets import create_dataset
    from udcbench.datasets.generate import generate_synthetic
    from udcbench.synthesis import synthesize

    src = tmp_path / "faces"
    generate_synthetic(src, n_train=14, n_test=7, size=32)
    other = tmp_path / "notes"
    other.mkdir()
    (other / "thesis.txt").write_text("years of work")
    adapter = create_dataset("imagefolder", src)
    with pytest.raises(UdcbenchError, match="refusing to delete"):
        synthesize(adapter, other, load_recipe("toled"), overwrite=True)
    with pytest.raises(UdcbenchError, match="refusing to delete"):
        generate_synthetic(other, n_train=14, n_test=7, size=32, overwrite=True)
    assert (other / "thesis.txt").read_text() == "years of work"
    out = tmp_path / "udc"
    synthesize(adapter, out, load_recipe("toled"))
    synthesize(adapter, out, load_recipe("toled"), overwrite=True)  # its own output: replaced
    generate_synthetic(src, n_train=21, n_test=7, size=32, overwrite=True)  # its own faces: replaced
    assert len(create_dataset("imagefolder", src).records("train")) == 21


def test_names_read_from_files_are_never_paths(tmp_path):
    from degradations import RecipeError
    from degradations.recipe import parse_recipe
    from udcbench.workspace import condition_folder

    with pytest.raises(RecipeError, match="not a plain name"):
        parse_recipe({**_toled_fields(), "name": "../../ESCAPED"}, "crafted.yaml")
    for bad in ("../x", "x/y", "/abs", ".hidden", ""):
        with pytest.raises(UdcbenchError, match="not a plain name"):
            condition_folder("ferplus", bad)
    assert condition_folder("ferplus", "poled") == "udc-poled-ferplus"


def _toled_fields() -> dict:
    from importlib import resources

    import yaml

    raw = yaml.safe_load(resources.files("degradations.presets").joinpath("toled.yaml").read_text())
    return {k: v for k, v in raw.items() if k != "name"}


def test_a_manifest_naming_a_path_as_its_recipe_is_refused_in_eval(workspace):
    assert _train().exit_code == 0
    run = workspace / "runs" / "synthetic" / "test_cnn-smoke-s0"
    manifest = workspace / "data" / "synthetic" / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "recipe_name": "x/y"}))
    result = runner.invoke(app, ["eval", str(run), "--data", "data/synthetic"])
    assert result.exit_code == 2 and "not a plain name" in result.output
    assert not list(run.rglob("eval-*"))


def test_run_folders_stay_inside_the_runs_folder(workspace):
    result = _train("--data", "data/synthetic/train/..")
    assert result.exit_code == 0, result.output
    assert (workspace / "runs" / "synthetic" / "test_cnn-smoke-s0" / "results.json").is_file()
    bad = _train("--tag", "../../escaped")
    assert bad.exit_code == 2 and "not a plain name" in bad.output
    assert not (workspace / "escaped").exists() and not (workspace.parent / "escaped").exists()


def test_label_files_cannot_name_images_outside_the_dataset(ferplus_root, rafdb_root):
    from udcbench.datasets import create_dataset
    from udcbench.errors import DatasetLayoutError

    label = ferplus_root / "FER2013Train" / "label.csv"
    label.write_text(label.read_text() + "../../../secret.png,\"(0, 0, 48, 48)\",10,0,0,0,0,0,0,0,0,0\n")
    with pytest.raises(DatasetLayoutError, match="not a file name"):
        create_dataset("ferplus", ferplus_root).records("train")
    listing = rafdb_root / "EmoLabel" / "list_patition_label.txt"
    listing.write_text(listing.read_text() + "train_x/../../../secret.jpg 1\n")
    with pytest.raises(DatasetLayoutError, match="not a file name"):
        create_dataset("rafdb", rafdb_root).records("train")


# -- a damaged results store (item 8) -------------------------------------------------------------------
def test_a_damaged_store_is_set_aside_and_rebuilt_from_the_run_folders(workspace):
    assert _train().exit_code == 0
    store = workspace / "runs" / "results.sqlite"
    store.write_bytes(b"this is not a database" * 100)
    listed = runner.invoke(app, ["runs", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [r["method"] for r in json.loads(listed.stdout)] == ["test_cnn"]
    assert list((workspace / "runs").glob("results.sqlite.damaged-*"))
    store.write_bytes(b"garbage again")
    trained = _train("--seed", "1")  # a run finishing on a damaged store still reaches it
    assert trained.exit_code == 0, trained.output
    assert {r["seed"] for r in json.loads(runner.invoke(app, ["runs", "--json"]).stdout)} == {0, 1}
    rebuilt = runner.invoke(app, ["runs", "--rebuild", "--json"])
    assert rebuilt.exit_code == 0 and len(json.loads(rebuilt.stdout)) == 2


def test_a_full_or_read_only_disk_never_sets_a_healthy_store_aside(workspace, monkeypatch):
    import sqlite3

    from udcbench.engine import store as store_module

    assert _train().exit_code == 0
    store = workspace / "runs" / "results.sqlite"
    before = store.read_bytes()
    real = sqlite3.connect

    def full_disk(database, *args, uri=False, **kw):  # any open for writing fails as on a full or read-only disk
        if not uri or "mode=ro" not in str(database):
            raise sqlite3.OperationalError("database or disk is full")
        return real(database, *args, uri=uri, **kw)

    monkeypatch.setattr(store_module.sqlite3, "connect", full_disk)
    listed = runner.invoke(app, ["runs", "--json"])  # a listing reads without writing
    assert listed.exit_code == 0 and [r["method"] for r in json.loads(listed.stdout)] == ["test_cnn"]
    table = runner.invoke(app, ["table", "1", "-d", "synthetic", "--json"])
    assert table.exit_code == 0, table.output
    trained = _train("--seed", "1")  # the store cannot take the record: said in one line before training
    assert trained.exit_code == 2 and "database or disk is full" in trained.output and "left as it is" in trained.output
    assert not (workspace / "runs" / "synthetic" / "test_cnn-smoke-s1").exists()
    assert store.read_bytes() == before and not list((workspace / "runs").glob("results.sqlite.damaged-*"))


def test_a_cache_array_reserves_its_blocks_before_it_is_written(tmp_path):
    from udcbench.files import open_reserved_array

    out = open_reserved_array(tmp_path / "a.npy", (64, 32, 32, 3))
    assert os.stat(tmp_path / "a.npy").st_blocks * 512 >= out.nbytes  # not a sparse file that a write can fault on


@pytest.mark.parametrize("step", ["header", "reservation"])
def test_a_full_disk_at_either_step_of_a_cache_array_is_an_error_and_leaves_no_file(tmp_path, monkeypatch, step):
    import errno

    import numpy as np

    from udcbench import files

    def full(*args, **kw):
        if step == "header":  # the header's write already fails, after the file was created
            (tmp_path / "a.npy").write_bytes(b"")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np.lib.format if step == "header" else files.os,
                        "open_memmap" if step == "header" else "posix_fallocate", full)
    with pytest.raises(UdcbenchError, match=r"not enough disk space in .*: 10\.0 MB needed, .* MB free; make room"):
        files.open_reserved_array(tmp_path / "a.npy", (10, 1000, 1000), hint="make room")
    assert not (tmp_path / "a.npy").exists()


def test_a_cache_array_that_cannot_be_opened_leaves_a_file_it_did_not_write(tmp_path, monkeypatch):
    import errno

    import numpy as np

    from udcbench import files

    theirs = tmp_path / "a.npy"
    theirs.write_bytes(b"someone else's")

    def refused(*args, **kw):
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(np.lib.format, "open_memmap", refused)
    with pytest.raises(PermissionError):
        files.open_reserved_array(theirs, (4, 4))
    assert theirs.read_bytes() == b"someone else's"


def test_a_full_disk_under_the_cache_is_one_line_not_a_bus_error(workspace, monkeypatch):
    import errno

    from udcbench import files

    def full_disk(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "posix_fallocate", full_disk)
    result = _train()
    assert result.exit_code == 2, result.output
    assert "not enough disk space in" in result.output and "UDCBENCH_CACHE" in result.output
    assert len(result.output.strip().splitlines()) <= 2 and "Traceback" not in result.output
    assert not [p for p in (workspace / ".udcbench-cache").rglob("*") if p.is_file()]  # no half-made array left


@pytest.mark.parametrize("content", ["empty", "foreign"])
def test_an_empty_or_foreign_store_is_rebuilt_from_the_run_folders_before_training(workspace, content):
    import sqlite3

    assert _train().exit_code == 0
    store = workspace / "runs" / "results.sqlite"
    store.unlink()
    for extra in ("-wal", "-shm"):
        Path(f"{store}{extra}").unlink(missing_ok=True)
    if content == "empty":
        store.touch()
    else:
        with sqlite3.connect(store) as db:
            db.execute("CREATE TABLE results (id INTEGER, score REAL)")
    listed = runner.invoke(app, ["runs", "--json"])  # never silently empty
    assert listed.exit_code == 0 and [r["seed"] for r in json.loads(listed.stdout)] == [0]
    assert "rebuilt from the run folders" in listed.output
    store.unlink()
    store.touch() if content == "empty" else sqlite3.connect(store).execute("CREATE TABLE results (id INTEGER)")
    trained = _train("--seed", "1")
    assert trained.exit_code == 0, trained.output
    assert {r["seed"] for r in json.loads(runner.invoke(app, ["runs", "--json"]).stdout)} == {0, 1}


def test_a_bad_record_row_is_skipped_with_a_warning(workspace):
    import sqlite3

    assert _train().exit_code == 0 and _train("--seed", "1").exit_code == 0
    store = workspace / "runs" / "results.sqlite"
    with sqlite3.connect(store) as db:
        db.execute("UPDATE results SET record = '{torn' WHERE seed = 1")
    listed = runner.invoke(app, ["runs", "--json"])
    assert listed.exit_code == 0 and [r["seed"] for r in json.loads(listed.stdout)] == [0]
    assert "skipped the unreadable record" in listed.output
    table = runner.invoke(app, ["table", "1", "-d", "synthetic", "--json"])
    assert table.exit_code == 0, table.output


# -- failed runs and bad inputs leave nothing that blocks the next run (items 10 and 11) ---------------------
def test_a_run_stopped_before_its_first_epoch_can_simply_be_run_again(workspace):
    diverged = _train("--set", "lr=1e9", "--set", "optimizer=sgd")
    assert diverged.exit_code == 2 and "diverged" in diverged.output  # weights checked after each update
    run = workspace / "runs" / "synthetic" / "test_cnn-smoke-s0"
    assert not (run / "results.json").exists()
    again = _train()  # no --resume or --overwrite needed: nothing was trained there
    assert again.exit_code == 0, again.output
    assert (run / "results.json").is_file()


def test_a_missing_or_pickled_psf_fails_before_anything_is_written(workspace):
    import numpy as np
    import yaml

    recipe = workspace / "measured.yaml"
    fields = {**_toled_fields(), "name": "measured", "psf": {"file": "psf.npy"}}
    recipe.write_text(yaml.safe_dump(fields))
    out = workspace / "data" / "udc-measured"
    synth = ["synth", "imagefolder", "--src", "data/synthetic", "--recipe", str(recipe), "--out", str(out)]
    missing = runner.invoke(app, synth)
    assert missing.exit_code == 2 and "PSF file not found" in missing.output
    assert not out.exists()
    np.save(workspace / "psf.npy", np.array([_Payload(workspace / "marker.txt")], dtype=object), allow_pickle=True)
    pickled = runner.invoke(app, synth)
    assert pickled.exit_code == 2 and "not a numeric .npy array" in pickled.output
    assert not out.exists() and not (workspace / "marker.txt").exists()


def test_a_malformed_label_file_fails_before_any_image_is_written(rafdb_root, tmp_path):
    from degradations import load_recipe
    from udcbench.datasets import create_dataset
    from udcbench.errors import DatasetLayoutError
    from udcbench.synthesis import synthesize

    listing = rafdb_root / "EmoLabel" / "list_patition_label.txt"
    listing.write_text(listing.read_text() + "train_99999.jpg nine\n")
    with pytest.raises(DatasetLayoutError):
        synthesize(create_dataset("rafdb", rafdb_root), tmp_path / "out", load_recipe("toled"))
    assert not (tmp_path / "out").exists()


def test_a_pickled_landmarks_file_is_one_line_and_runs_nothing(workspace):
    import numpy as np

    landmarks = workspace / "data" / "synthetic" / "landmarks.npz"
    np.savez(landmarks, ids=np.array([_Payload(workspace / "marker.txt")], dtype=object), points=np.zeros((1, 68, 2)))
    result = runner.invoke(app, ["landmarks", "data/synthetic", "--source", "ground_truth"])
    assert result.exit_code == 2 and "not a landmarks file" in result.output
    assert not (workspace / "marker.txt").exists()


def test_a_read_only_output_is_one_line(workspace, monkeypatch):
    import errno

    import udcbench.files as files

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(workspace / "runs"))

    monkeypatch.setattr(files, "write_atomic", read_only)
    monkeypatch.setattr("udcbench.engine.trainer.write_json", lambda path, obj: read_only())
    result = _train()
    assert result.exit_code == 2 and "Read-only file system" in result.output
    assert "Traceback" not in result.output and result.output.count("error:") == 1
    assert result.output.strip().splitlines()[-1].startswith("error:")


# -- workers die with their parent (item 9) ---------------------------------------------------------------
def _children(pid: int) -> set[int]:
    try:
        return {int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except OSError:
        return set()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow(reason="starts synth with 2 workers in a subprocess, kills it and waits for its workers: ~10 s")
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads worker processes from Linux /proc")
def test_killing_synth_leaves_no_workers_behind(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from udcbench.datasets.generate import generate_synthetic

    generate_synthetic(tmp_path / "faces", n_train=2800, n_test=700, size=100, workers=2)
    env = {**os.environ, "UDCBENCH_QUIET": "1"}
    parent = subprocess.Popen([sys.executable, "-m", "udcbench", "synth", "imagefolder", "--src",
                               str(tmp_path / "faces"), "--out", str(tmp_path / "udc"), "--workers", "2"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: set[int] = set()
    deadline = time.monotonic() + 60
    while len(workers) < 2 and time.monotonic() < deadline and parent.poll() is None:
        workers = _children(parent.pid)
        time.sleep(0.05)
    assert len(workers) >= 2, "synth never started its workers"
    time.sleep(0.5)  # let them get to work
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [w for w in workers if _alive(w)], "workers outlived their killed parent"


# -- every image checked, missing images reported alike (item 12) ------------------------------------------
def test_info_decodes_every_image_and_lists_the_bad_ones(workspace):
    import cv2
    import numpy as np

    folder = workspace / "data" / "synthetic" / "train" / "neutral"
    first, second, third = sorted(folder.glob("*.png"))[:3]
    first.write_bytes(b"")
    second.write_bytes(second.read_bytes()[:200])
    ok, jpeg = cv2.imencode(".jpg", np.zeros((32, 32, 3), np.uint8))
    third.unlink()
    (folder / "train_truncated.jpg").write_bytes(jpeg.tobytes()[: len(jpeg) // 2])
    result = runner.invoke(app, ["info", "data/synthetic", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    errors = {Path(u["file"]).name: u["error"] for u in summary["unreadable"]}
    assert set(errors) == {first.name, second.name, "train_truncated.jpg"}
    assert errors[first.name] == "empty file" and "truncated JPEG" in errors["train_truncated.jpg"]
    assert any("3 images do not decode" in p for p in summary["problems"])
    quick = json.loads(runner.invoke(app, ["info", "data/synthetic", "--quick", "--json"]).stdout)
    assert quick["unreadable"] is None


def test_train_and_synth_report_missing_images_as_info_does(rafdb_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    listing = rafdb_root / "EmoLabel" / "list_patition_label.txt"
    listing.write_text(listing.read_text() + "train_09999.jpg 1\n")
    info = runner.invoke(app, ["info", str(rafdb_root)])
    assert "1 images listed in" in info.output
    synth = runner.invoke(app, ["synth", "rafdb", "--src", str(rafdb_root), "--out", str(tmp_path / "udc")])
    assert synth.exit_code == 0 and "1 images listed in" in synth.output
    train = runner.invoke(app, ["train", "test_cnn", "--data", str(rafdb_root), "--preset", "smoke"])
    assert "1 images listed in" in train.output


# -- issue 36: names read from records and manifests never become paths outside the output folder ------------
@pytest.mark.parametrize("name", ["ABSOLUTE", "../../escaped"])
def test_a_crafted_record_never_makes_the_leaderboard_write_outside_its_folder(workspace, name):
    assert _train().exit_code == 0
    target = workspace / "outside.yaml"
    crafted = str(target.with_suffix("")) if name == "ABSOLUTE" else name
    results = workspace / "runs" / "synthetic" / "test_cnn-smoke-s0" / "results.json"
    results.write_text(json.dumps({**json.loads(results.read_text()), "method": crafted}))
    rebuilt = runner.invoke(app, ["runs", "--rebuild", "--json"])
    assert rebuilt.exit_code == 0 and json.loads(rebuilt.stdout) == []
    assert "not a plain name" in " ".join(rebuilt.output.split())
    runner.invoke(app, ["leaderboard", "--publish", "cards"])
    assert not target.exists() and not (workspace / "escaped.yaml").exists()
    assert not [p for p in workspace.rglob("*.yaml") if "cards" not in p.parts and "data" not in p.parts]


def test_a_manifest_naming_a_path_as_its_dataset_is_refused_before_a_figure_is_written(workspace):
    assert runner.invoke(app, ["synth", "synthetic", "--src", "data/synthetic", "--out", "data/udc"]).exit_code == 0
    manifest = workspace / "data" / "udc" / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "dataset": "x/../../../../ESCAPED"}))
    result = runner.invoke(app, ["figure", "3", "--clean", "data/udc", "--udc", "data/udc"])
    assert result.exit_code == 2 and "not a plain name" in " ".join(result.output.split())
    assert not list(workspace.parent.rglob("*ESCAPED*")) and not (workspace / "results" / "figures").exists()


# -- issue 36: run folders: replaced only when udcbench's, one writer at a time ------------------------------
def test_overwrite_never_deletes_a_run_folder_udcbench_did_not_write(workspace):
    run = workspace / "runs" / "synthetic" / "test_cnn-smoke-s0"
    run.mkdir(parents=True)
    (run / "thesis.txt").write_text("years of work")
    result = _train("--overwrite")
    assert result.exit_code == 2 and "udcbench did not write it" in " ".join(result.output.split())
    assert (run / "thesis.txt").read_text() == "years of work"
    (run / "thesis.txt").unlink()
    (run / "config.json").write_text("{}")  # hand-written: never "a run stopped before its first epoch"
    plain = _train()
    assert plain.exit_code == 2 and (run / "config.json").read_text() == "{}"
    (run / "config.json").unlink()
    run.rmdir()
    assert _train().exit_code == 0 and (run / "udcbench-run.json").is_file()
    again = _train("--overwrite")  # its own: replaced
    assert again.exit_code == 0, again.output


def test_a_second_writer_of_a_run_folder_is_refused_in_one_line(workspace):
    from udcbench.files import folder_lock

    run = workspace / "runs" / "synthetic" / "test_cnn-smoke-s0"
    with folder_lock(run, "run folder"):  # as another command training it
        result = _train()
        assert result.exit_code == 2 and "another udcbench is writing" in " ".join(result.output.split())
        assert f"pid {__import__('os').getpid()}" in " ".join(result.output.split())
    assert not run.exists()
    assert _train().exit_code == 0  # the lock went with its holder


# -- issue 36: symlinks in datasets -----------------------------------------------------------------------
def test_symlinked_split_folders_are_synthesised_and_outside_links_never_copied(tmp_path):
    from degradations import load_recipe
    from udcbench.datasets import create_dataset
    from udcbench.datasets.generate import generate_synthetic
    from udcbench.synthesis import synthesize

    real = tmp_path / "cluster" / "faces"
    generate_synthetic(real, n_train=14, n_test=7, size=32)
    dataset = tmp_path / "data" / "faces"
    dataset.mkdir(parents=True)
    for split in ("train", "test"):  # as on clusters: the split folders link to shared storage
        (dataset / split).symlink_to(real / split, target_is_directory=True)
    loop = next(p for p in (real / "train").iterdir() if p.is_dir()) / "loop"
    loop.symlink_to(real / "train", target_is_directory=True)  # a link loop ends
    secret = tmp_path / "home" / "id_rsa.txt"
    secret.parent.mkdir()
    secret.write_text("private key")
    (dataset / "notes.txt").symlink_to(secret)
    adapter = create_dataset("imagefolder", dataset)
    out = tmp_path / "udc"
    report = synthesize(adapter, out, load_recipe("toled"))
    assert report.complete and report.written == len(adapter.records()) == 21
    assert report.not_copied == ["notes.txt"] and not (out / "notes.txt").exists()
    assert json.loads((out / "manifest.json").read_text())["not_copied"] == ["notes.txt"]
    assert not [p for p in out.rglob("*") if p.is_file() and "private key" in p.read_bytes().decode(errors="ignore")]


# -- issue 36: recipes and numbers validated before any work ---------------------------------------------------
def _poled_with(**changes) -> dict:
    from importlib import resources

    import yaml

    raw = yaml.safe_load(resources.files("degradations.presets").joinpath("poled.yaml").read_text())
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        target = raw
        for p in parents:
            target = target[p]
        target[key] = value
    return raw


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("changes, message", [
    ({"photons": [NAN, NAN]}, "'photons'"), ({"photons": [1, INF]}, "'photons'"), ({"read_noise": NAN}, "read_noise"),
    ({"scatter__kernel_px": 30001}, "memory budget"), ({"scatter__kernel_px": 99999}, "memory budget"),
    ({"psf__focal_mm": 20000}, "FFT grid"), ({"psf_scale": 1e6}, "psf_scale"), ({"psf_scale": NAN}, "psf_scale"),
    ({"jpeg_quality": "high"}, "jpeg_quality"), ({"face_px": 0}, "face_px"),
    ({"psf__mask_sample_um": 0}, "mask_sample"),
    ({"gains__r": [NAN, 0.2]}, "'r'"), ({"face_fraction__kdef": -1}, "face_fraction"),
])
def test_recipes_with_non_finite_or_out_of_budget_values_are_refused(changes, message):
    from degradations import RecipeError
    from degradations.recipe import parse_recipe

    with pytest.raises(RecipeError, match=message):
        parse_recipe(_poled_with(**changes), "crafted.yaml")


@pytest.mark.parametrize("value", ["nan", "-1", "0", "1e6"])
def test_a_bad_psf_scale_is_one_line_and_writes_nothing(workspace, value):
    result = runner.invoke(app, ["synth", "synthetic", "--src", "data/synthetic", "--out", "data/udc",
                                 "--psf-scale", value])
    assert result.exit_code == 2 and "psf_scale" in result.output and len(result.output.strip().splitlines()) <= 3
    assert not (workspace / "data" / "udc").exists()


@pytest.mark.parametrize("option", [["--steps", "-5"], ["--halo-px", "-3"], ["--halo-px", "30001"]])
def test_calibrate_refuses_bad_numbers_before_writing(workspace, option):
    images = sorted((workspace / "data" / "synthetic" / "test").rglob("*.png"))
    result = runner.invoke(app, ["calibrate", "--clean", str(images[0]), "--udc", str(images[1]),
                                 "--out", "panel.yaml", *option])
    assert result.exit_code == 2 and not (workspace / "panel.yaml").exists()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` and holds no pixels: what a decompression bomb's header says."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 1024)) + chunk(b"IEND", b""))


def test_an_image_declaring_too_many_pixels_is_listed_never_decoded(workspace):
    bomb = workspace / "data" / "synthetic" / "train" / "neutral" / "train_bomb.png"
    bomb.write_bytes(_png_header_only(30000, 30000))
    info = json.loads(runner.invoke(app, ["info", "data/synthetic", "--json"]).stdout)
    errors = {Path(u["file"]).name: u["error"] for u in info["unreadable"]}
    assert "30000 x 30000 pixels, over the limit" in errors["train_bomb.png"]
    result = runner.invoke(app, ["synth", "synthetic", "--src", "data/synthetic", "--out", "data/udc"])
    assert result.exit_code == 3 and "train_bomb.png" in result.output  # skipped and listed, the others written
    skipped = json.loads((workspace / "data" / "udc" / "manifest.json").read_text())["skipped"]
    assert [s["file"] for s in skipped] == ["train/neutral/train_bomb.png"] and "over the limit" in skipped[0]["error"]


# -- issue 36: names in any encoding, long names, BOMs, debris of kills ---------------------------------------
def test_file_names_in_another_encoding_or_at_the_length_limit_synthesise_and_export(workspace):
    import os

    folder = workspace / "data" / "synthetic" / "train" / "neutral"
    first, second = sorted(folder.glob("*.png"))[:2]
    os.rename(first, os.fsencode(folder) + b"/caf\xe9.png")  # Latin-1, not UTF-8
    os.rename(second, folder / ("x" * 251 + ".png"))  # 255 bytes: the file system's limit
    result = runner.invoke(app, ["synth", "synthetic", "--src", "data/synthetic", "--out", "data/udc"])
    assert result.exit_code == 0, result.output
    out = workspace / "data" / "udc" / "train" / "neutral"
    assert (os.fsencode(out) + b"/caf\xe9.png") in [os.fsencode(p) for p in out.iterdir()]
    assert (out / ("x" * 251 + ".png")).is_file()
    exported = runner.invoke(app, ["export", "imagefolder", "--src", "data/udc", "--out", "hf"])
    assert exported.exit_code == 0, exported.output
    import datasets

    ids = datasets.load_from_disk(str(workspace / "hf"))["train"]["id"]
    assert "train/neutral/caf\\xe9" in ids


def test_a_label_file_with_a_byte_order_mark_keeps_its_first_row(ferplus_root, rafdb_root):
    from udcbench.datasets import create_dataset

    for root, label_file in ((ferplus_root, ferplus_root / "FER2013Train" / "label.csv"),
                             (rafdb_root, rafdb_root / "EmoLabel" / "list_patition_label.txt")):
        before = len(create_dataset("ferplus" if root == ferplus_root else "rafdb", root).records())
        label_file.write_bytes(b"\xef\xbb\xbf" + label_file.read_bytes())
        after = create_dataset("ferplus" if root == ferplus_root else "rafdb", root).records()
        assert len(after) == before


def test_a_killed_write_leaves_no_temporary_a_reader_takes_for_an_image(workspace):
    import os

    from udcbench.datasets import create_dataset
    from udcbench.files import remove_stale_temporaries, temp_path

    folder = workspace / "data" / "synthetic" / "train" / "neutral"
    before = len(create_dataset("imagefolder", workspace / "data" / "synthetic").records())
    image = sorted(folder.glob("*.png"))[0]
    stale = temp_path(image, ".png").with_name(temp_path(image, ".png").name.replace(f".{os.getpid()}.", ".999999."))
    stale.write_bytes(image.read_bytes())  # as a killed generate (pid 999999, gone) leaves it
    live = temp_path(folder / "other.png", ".png")
    live.write_bytes(b"in progress")  # this process's own: kept
    assert len(create_dataset("imagefolder", workspace / "data" / "synthetic").records()) == before
    assert remove_stale_temporaries(workspace / "data") == 1 and not stale.exists() and live.exists()


def test_a_kill_between_an_epochs_line_and_its_checkpoint_leaves_no_duplicate_epoch(workspace, monkeypatch):
    from udcbench.engine import trainer

    real, calls = trainer.save_checkpoint, []

    def killed_at_epoch_two(obj, path):
        if path.name == "last.pt":
            calls.append(obj["epoch"])
            if obj["epoch"] == 1:  # epoch 2 (0-based 1): its metrics line is written, its checkpoint never
                raise KeyboardInterrupt
        return real(obj, path)

    monkeypatch.setattr(trainer, "save_checkpoint", killed_at_epoch_two)
    _train("--set", "epochs=3")
    run = workspace / "runs" / "synthetic" / "test_cnn-smoke-s0"
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    monkeypatch.setattr(trainer, "save_checkpoint", real)
    resumed = _train("--set", "epochs=3", "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    steps = [json.loads(line) for line in (run / "steps.jsonl").read_text().splitlines()]  # the per-step curve
    assert [s["step"] for s in steps] == list(range(1, len(steps) + 1)) and {s["epoch"] for s in steps} == {1, 2, 3}


# -- issue 36: every argument checked before any work; output to a closed reader ends quietly ------------------
@pytest.mark.parametrize("setting, message", [("schedule=cosin", "unknown schedule 'cosin'"),
                                              ("optimizer=adamm", "unknown optimizer 'adamm'"),
                                              ("method_args.foo=1", "unknown method_args"),
                                              ("preset=../../x", "use --budget instead")])
def test_bad_set_values_are_refused_before_the_data_loads(workspace, monkeypatch, setting, message):
    from udcbench.engine import runs

    monkeypatch.setattr(runs, "execute", lambda *a, **k: pytest.fail("trained with a bad setting"))
    result = _train("--set", setting)
    assert result.exit_code == 2 and message in " ".join(result.output.split())
    assert not (workspace / "runs" / "synthetic").exists()


def test_a_listing_piped_into_a_reader_that_closes_ends_quietly(workspace):
    import subprocess
    import sys

    from udcbench.engine.store import save_result

    assert _train().exit_code == 0
    run = workspace / "runs" / "synthetic" / "test_cnn-smoke-s0"
    record = json.loads((run / "results.json").read_text())
    for i in range(400):  # far more than a pipe's buffer
        save_result(workspace / "runs" / "results.sqlite", {**record, "run_id": f"{record['run_id']}-{i}"})
    proc = subprocess.Popen([sys.executable, "-m", "udcbench", "runs", "--json"], cwd=workspace,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.read(100)
    proc.stdout.close()  # as `| head` does
    assert proc.wait(timeout=120) == 0
    assert proc.stderr.read() == b""


def test_the_smoke_study_plans_without_a_benchmark_script(tmp_path, monkeypatch):
    in_default_workspace(monkeypatch, tmp_path)
    result = runner.invoke(app, ["reproduce", "--preset", "smoke", "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["units"] > 0 and any("estimated from 48 px" in item["detail"] for item in plan["items"])


# -- issue 36: smaller ones ---------------------------------------------------------------------------------------
def test_an_unreadable_training_image_is_left_out_and_listed_not_fatal(workspace):
    bad = sorted((workspace / "data" / "synthetic" / "train" / "neutral").glob("*.png"))[0]
    bad.write_bytes(b"not an image")
    result = _train("--json")
    assert result.exit_code == 0, result.output
    assert "1 image(s) do not decode and were left out" in " ".join(result.output.split())
    record = json.loads(result.stdout[result.stdout.index("{"):])
    assert record["counts"]["train"] + record["counts"]["val"] == 69


def test_eval_of_a_run_outside_a_runs_folder_writes_no_store_above_it(workspace):
    import shutil

    assert _train().exit_code == 0
    elsewhere = workspace / "downloads" / "shared" / "run"
    shutil.copytree(workspace / "runs" / "synthetic" / "test_cnn-smoke-s0", elsewhere)
    result = runner.invoke(app, ["eval", str(elsewhere), "--data", "data/synthetic"])
    assert result.exit_code == 0, result.output
    assert not (workspace / "downloads" / "results.sqlite").exists() and list(elsewhere.glob("eval-*.json"))
    assert "outside a runs folder" in " ".join(result.output.split())


def test_a_pickled_weights_file_is_one_line_before_a_finished_run_is_replaced(workspace):
    import pickle

    args = ["train", "resnet18", "--data", "data/synthetic", "--preset", "smoke", "--set", "input_size=32"]
    assert runner.invoke(app, args).exit_code == 0
    (workspace / "w.pth").write_bytes(pickle.dumps({"net": object()}, protocol=4))
    result = runner.invoke(app, [*args, "--weights", "w.pth", "--overwrite"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert "refused, not a tensors-only checkpoint" in result.output
    assert (workspace / "runs" / "synthetic" / "resnet18-smoke-s0" / "results.json").is_file()


def test_a_command_given_a_folder_reads_that_folder(workspace):
    import datasets

    synth = runner.invoke(app, ["synth", "synthetic"])  # data/synthetic holds the user's own 70/14 draw
    assert synth.exit_code == 0, synth.output
    udc = workspace / "data" / "udc-synthetic"
    assert json.loads((udc / "manifest.json").read_text())["images"] == 84
    exported = runner.invoke(app, ["export", "synthetic", "--src", str(udc), "--out", "hf"])
    assert exported.exit_code == 0, exported.output
    hf = datasets.load_from_disk(str(workspace / "hf"))
    assert (len(hf["train"]), len(hf["test"])) == (70, 14)
    assert hf["train"][0]["image"].size == (32, 32)  # the folder's own images, not the built-in 100-px draw


def test_every_test_security_md_names_exists():
    """SECURITY.md's statements each name the test that holds them: those tests exist (the file cannot drift)."""
    import re

    from conftest import REPO

    text = (REPO / "SECURITY.md").read_text()
    named = set(re.findall(r"`(?:tests/(\w+)\.py::)?(test_\w+)`", text))
    sources = {p.stem: p.read_text() for p in (REPO / "tests").glob("test_*.py")}
    missing = [name for module, name in named
               if not any(f"def {name}(" in src for stem, src in sources.items() if not module or stem == module)]
    assert len(named) >= 25 and missing == []


def test_a_second_writer_of_a_synth_output_is_refused_in_one_line(workspace):
    from udcbench.files import folder_lock

    out = workspace / "data" / "udc"
    with folder_lock(Path(f"{out}.manifest.jsonl"), "synth output (shard)"):  # as another synth of it
        result = runner.invoke(app, ["synth", "synthetic", "--src", "data/synthetic", "--out", str(out)])
        assert result.exit_code == 2 and "another udcbench is writing" in " ".join(result.output.split())
    assert runner.invoke(app, ["synth", "synthetic", "--src", "data/synthetic", "--out", str(out)]).exit_code == 0


@pytest.mark.parametrize("setting, message", [
    ("num_workers=1000000000", "above this machine's bound"),  # forked until memory ran out
    ("std=[0,0,0]", "std must be positive"), ('mean="abc"', "three finite numbers"),
    ("lr=Infinity", "lr must be a finite number"),
])
def test_a_setting_no_run_can_use_is_one_line_before_the_data_loads(workspace, setting, message):
    result = _train("--set", setting)
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert "loading" not in result.output  # said before any image is read
    assert not (workspace / "runs" / "synthetic" / "test_cnn-smoke-s0" / "results.json").exists()


@pytest.mark.parametrize("name, value, extra, message", [
    ("UDCBENCH_CPU_BF16", "yes", [], "0 (fp32) or 1 (bf16)"),
    ("UDCBENCH_COMPILE_BACKEND", "nosuch", ["--set", "compile=true"], "not a torch.compile backend"),
])
def test_an_environment_value_udcbench_cannot_use_is_one_line_before_training(workspace, monkeypatch, name, value,
                                                                              extra, message):
    monkeypatch.setenv(name, value)
    result = _train(*extra)
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert "epoch" not in result.output and "loading" not in result.output


@pytest.mark.parametrize("accuracy", [float("nan"), float("inf"), 5.0, -0.1])
def test_a_record_whose_accuracy_is_no_share_is_named_and_left_out_of_tables(workspace, accuracy):
    assert _train().exit_code == 0 and _train("--seed", "1").exit_code == 0
    bad = workspace / "runs" / "synthetic" / "test_cnn-smoke-s1" / "results.json"
    record = json.loads(bad.read_text())
    record["test_at_best"]["accuracy"] = accuracy
    bad.write_text(json.dumps(record))  # NaN and Infinity as Python's json writes them
    rebuilt = runner.invoke(app, ["runs", "--rebuild"])
    assert rebuilt.exit_code == 0 and "accuracy is" in rebuilt.output and "not a share in [0, 1]" in rebuilt.output
    shown = runner.invoke(app, ["runs", "--json"])
    assert shown.exit_code == 0 and [r["seed"] for r in json.loads(shown.stdout)] == [0]  # the sound record only
    table = runner.invoke(app, ["table", "leaderboard"])
    assert "Traceback" not in table.output and "AttributeError" not in table.output


def test_a_lock_file_planted_as_a_link_writes_nothing_through_it(workspace):
    target = workspace / "victim.txt"
    target.write_text("keep me")
    runs = workspace / "runs" / "synthetic"
    runs.mkdir(parents=True)
    (runs / ".test_cnn-smoke-s0.lock").symlink_to(target)  # as a runs/ archive someone hands you could hold
    result = _train()
    assert result.exit_code == 2 and "is a link" in result.output and "Traceback" not in result.output
    assert target.read_text() == "keep me"


def _saved_hf(path: Path, splits: dict, features=None) -> Path:
    """A saved DatasetDict of tiny PNG faces: ``splits`` maps a split name to rows (id, label, image cell)."""
    import datasets
    import numpy as np

    from udcbench.images import encode
    from udcbench.labels import CANONICAL_LABELS

    png = encode(np.full((8, 8, 3), 120, np.uint8))
    features = features or datasets.Features({"image": datasets.Image(), "id": datasets.Value("string"),
                                              "label": datasets.ClassLabel(names=list(CANONICAL_LABELS[:7]))})
    parts = {}
    for split, rows in splits.items():
        parts[split] = datasets.Dataset.from_dict(
            {"image": [cell if cell is not None else {"bytes": png, "path": None} for _, _, cell in rows],
             "id": [i for i, _, _ in rows], "label": [label for _, label, _ in rows]}, features=features)
    datasets.DatasetDict(parts).save_to_disk(str(path))
    return path


def test_a_saved_hf_dataset_names_nothing_outside_it(tmp_path):
    import os
    import shutil

    import datasets

    from udcbench.datasets import create_dataset
    from udcbench.errors import DatasetLayoutError, UnreadableImageError

    # a split named as a path: load_from_disk follows it to a sibling folder; synth wrote its PNGs there
    bad_split = _saved_hf(tmp_path / "split", {"train": [("a", 0, None)]})
    shutil.copytree(bad_split / "train", tmp_path / "escape")
    (bad_split / "dataset_dict.json").write_text(json.dumps({"splits": ["../escape"]}))
    with pytest.raises(DatasetLayoutError, match="not a plain name"):
        create_dataset("hf", bad_split).records()
    # image cells naming files: a photo outside the dataset, a device, a FIFO inside it: refused, each named
    outside = tmp_path / "private.png"
    outside.write_bytes(b"not yours")
    # the cells as saved: a struct of bytes and path (an Image feature's storage), read back as an Image column
    plain = datasets.Features({"image": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")},
                               "id": datasets.Value("string"),
                               "label": datasets.ClassLabel(names=["neutral", "happiness"])})
    cells = _saved_hf(tmp_path / "cells", {"train": [
        ("a", 0, {"bytes": None, "path": str(outside)}), ("b", 1, {"bytes": None, "path": "/dev/zero"}),
        ("c", 0, {"bytes": None, "path": "fifo"})]}, plain)
    os.mkfifo(cells / "fifo")
    adapter = create_dataset("hf", cells)
    whys = ("outside the dataset", "outside the dataset", "no regular file")
    for record, why in zip(adapter.records(), whys):
        with pytest.raises(UnreadableImageError, match=why):
            adapter.load_image(record)


def test_hf_labels_outside_the_classes_and_ids_that_collide_are_handled(tmp_path):
    from udcbench.datasets import create_dataset
    from udcbench.datasets.hfdisk import file_stem
    from udcbench.errors import DatasetLayoutError

    missing = _saved_hf(tmp_path / "missing", {"train": [("a", 0, None), ("b", -1, None)]})
    with pytest.raises(DatasetLayoutError, match="label -1, not one of the 7 classes"):
        create_dataset("hf", missing).records()
    stems = [file_stem(i) for i in ("p/face", "q/face", ".", "..", "plain_1")]
    assert len(set(stems)) == 5 and stems[-1] == "plain_1"
    assert not any(s.startswith(".") or "/" in s for s in stems)


def test_a_dataset_whose_manifest_says_incomplete_is_refused_by_its_readers(workspace):
    manifest = workspace / "data" / "synthetic" / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "complete": False}))  # a killed generate
    for args in (["info", "data/synthetic"], ["train", "test_cnn", "--data", "data/synthetic", "--preset", "smoke"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and "is incomplete" in result.output and "Traceback" not in result.output
    assert runner.invoke(app, ["generate", "--n-train", "70", "--n-test", "14", "--size", "32"]).exit_code == 0
    assert runner.invoke(app, ["info", "data/synthetic"]).exit_code == 0  # the same command finished it


@pytest.mark.parametrize("change, message", [
    ({"input_size": 60000}, "input_size is a whole number in [1, 1024]"), ({"seed": 2**80}, "seed is a whole number"),
    ({"std": [0, 0, 0]}, "std must be positive"), ({"extra": 1}, "unknown key(s) ['extra']"),
])
def test_a_checkpoints_config_is_checked_before_anything_is_built(workspace, change, message):
    assert _train().exit_code == 0
    best = workspace / "runs" / "synthetic" / "test_cnn-smoke-s0" / "best.pt"
    state = load_checkpoint(best)
    state["config"] = {**state["config"], **change}
    crafted = workspace / "crafted.pt"
    save_checkpoint(state, crafted)
    photo = next((workspace / "data" / "synthetic" / "test").rglob("*.png"))
    for args in (["predict", str(crafted), str(photo), "--crop", "none"],
                 ["export-model", str(crafted), "--out", str(workspace / "m.pt")]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, args
    assert not (workspace / "m.pt").exists()


def test_an_image_whose_size_its_header_does_not_tell_is_refused_before_decoding(workspace):
    """A 9 MB Radiance HDR named .png declaring 12000 x 12000 was decoded by OpenCV (2.2 GB); now every image read
    goes through the size gate, which refuses a format it cannot size."""
    import numpy as np

    from udcbench.images import ImageTooLarge, decode

    hdr = b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 12000 +X 12000\n" + bytes(64)
    with pytest.raises(ImageTooLarge, match="size cannot be read from its header"):
        decode(hdr)
    assert decode(b"") is None
    bomb = next((workspace / "data" / "synthetic" / "train").rglob("*.png"))
    bomb.write_bytes(hdr)
    info = runner.invoke(app, ["info", "data/synthetic"])
    assert "Traceback" not in info.output and "size cannot be read" in info.output, info.output
    assert decode(np.frombuffer(b"", np.uint8)) is None


@pytest.mark.parametrize("change, message", [
    ({"raw_bits": 0}, "raw_bits' must be an integer from 1 to 16"),
    ({"read_from_shot": {"slope": float("nan"), "intercept": 1.2, "sd": 0.26}}, "read_from_shot.slope"),
    ({"log_shot": [1e39, 1e39]}, "log_shot"),
])
def test_low_light_recipes_that_give_black_images_are_refused(change, message):
    from importlib import resources

    import yaml

    from degradations import RecipeError
    from degradations.recipe import parse_recipe

    raw = yaml.safe_load(resources.files("degradations.presets").joinpath("lowlight.yaml").read_text())
    with pytest.raises(RecipeError, match=message):
        parse_recipe({**raw, **change}, "crafted.yaml")


def test_a_number_finite_in_float64_but_not_in_float32_is_refused():
    from degradations import RecipeError
    from degradations.recipe import parse_recipe

    with pytest.raises(RecipeError, match="photons"):
        parse_recipe(_poled_with(photons=[1e39, 1e39]), "crafted.yaml")


def test_a_second_study_in_one_workspace_is_told_to_wait(workspace):
    from udcbench.files import folder_lock

    with folder_lock(workspace / "runs", "study in"):  # a first reproduce, still at work
        result = runner.invoke(app, ["reproduce", "--study", "smoke", "--methods", "test_cnn"])
    assert result.exit_code == 2 and "another udcbench is writing the study in" in result.output
    assert "--overwrite" not in result.output and "wait for it to end" in result.output


def test_synthesis_keeps_within_its_memory_budget_or_refuses_the_recipe_before_writing(workspace, monkeypatch):
    """A recipe inside every documented limit (toled's halo at 1,023 px, psf_scale 4) reached 23.3 GB: synth worked
    64 images at a time. Now a batch is sized to the budget, and a recipe whose one image is over it is refused."""
    from importlib import resources

    import yaml

    raw = yaml.safe_load(resources.files("degradations.presets").joinpath("toled.yaml").read_text())
    raw["scatter"]["kernel_px"], raw["psf_scale"], raw["name"] = 1023, 4, "big"
    (workspace / "big.yaml").write_text(yaml.safe_dump(raw))
    refused = runner.invoke(app, ["synth", "synthetic", "--src", "data/synthetic", "--recipe", "big.yaml",
                                  "--out", "data/big"])
    assert refused.exit_code == 2 and "over the synthesis memory budget" in refused.output
    assert not (workspace / "data" / "big").exists()  # refused before anything was written
    monkeypatch.setenv("UDCBENCH_SYNTH_MEMORY_GB", "0.01")  # a few images per batch at this size
    small = runner.invoke(app, ["synth", "synthetic", "--src", "data/synthetic", "--out", "data/udc", "--json"])
    assert small.exit_code == 0, small.output
    assert len(list((workspace / "data" / "udc").rglob("*.png"))) >= 84


def test_an_array_file_declaring_gigabytes_is_refused_before_loading(workspace, tmp_path):
    import io
    import zipfile

    import numpy as np

    from udcbench.files import check_array_file

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (1 << 31, 3)})
    bomb = workspace / "data" / "synthetic" / "landmarks.npz"  # 24 GB declared, a few bytes stored
    with zipfile.ZipFile(bomb, "w") as archive:
        archive.writestr("points.npy", header.getvalue() + bytes(16))
        archive.writestr("ids.npy", header.getvalue())
    with pytest.raises(UdcbenchError, match="over the limit"):
        check_array_file(bomb)
    from udcbench.datasets import create_dataset
    from udcbench.errors import DatasetLayoutError

    adapter = create_dataset("imagefolder", workspace / "data" / "synthetic")
    with pytest.raises(DatasetLayoutError, match="over the limit"):
        adapter.ground_truth_landmarks(adapter.records("train")[0])
    psf = tmp_path / "psf.npy"
    psf.write_bytes(header.getvalue() + bytes(16))  # a PSF file declaring 24 GB
    from degradations.psf import load_measured_psf

    with pytest.raises(ValueError, match="psf.npy"):
        load_measured_psf(psf)


def test_a_store_that_cannot_take_the_record_at_the_end_says_how_to_add_it_without_retraining(workspace, monkeypatch):
    import udcbench.engine.trainer as trainer

    def locked(path, record):
        raise UdcbenchError(f"the results store {path} cannot be used: database is locked")

    with monkeypatch.context() as patched:
        patched.setattr(trainer, "save_result", locked)
        result = _train()
    assert result.exit_code == 0, result.output
    assert "runs --rebuild" in result.output and "nothing needs retraining" in result.output
    assert "--overwrite" not in result.output
    assert runner.invoke(app, ["runs", "--rebuild"]).exit_code == 0
    listed = json.loads(runner.invoke(app, ["runs", "--json"]).stdout)
    assert [r["method"] for r in listed] == ["test_cnn"]  # the finished run, added without retraining


@pytest.mark.slow(reason="eight commands in fresh processes under a 6 GB address-space limit: about 60 s")
def test_under_a_6_gb_memory_limit_the_hostile_inputs_end_in_one_line(tmp_path):
    """Issue 42: under ``ulimit -v 6000000`` the big-kernel recipe (synth and a robustness sweep), an 81-megapixel
    degrade (and one with its budget raised past the limit), the HDR bomb, a PSF array declaring 24 GB and
    num_workers=1e9 each end in one line, never a traceback."""
    import os
    import subprocess
    import sys

    import cv2
    import numpy as np
    import yaml

    from degradations import load_recipe

    photo = np.full((9000, 9000, 3), 120, np.uint8)
    photo[4000:5000, 4000:5000] = 200
    cv2.imwrite(str(tmp_path / "big.png"), photo)
    del photo
    raw = {**load_recipe("toled").raw, "name": "bigk", "psf_scale": 4}
    raw["scatter"] = {**raw["scatter"], "kernel_px": 1023}
    (tmp_path / "bigk.yaml").write_text(yaml.safe_dump(raw))
    (tmp_path / "hdr.png").write_bytes(b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 12000 +X 12000\n" + bytes(64))
    import io

    header = io.BytesIO()  # a measured PSF declaring 24 GB in a few bytes
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (1 << 31, 3)})
    (tmp_path / "psf.npy").write_bytes(header.getvalue() + bytes(16))
    (tmp_path / "bomb.yaml").write_text(yaml.safe_dump({**load_recipe("toled").raw, "name": "bomb",
                                                        "psf": {"file": "psf.npy"}}))
    cli = f"{sys.executable} -m udcbench"
    env = {**os.environ, "UDCBENCH_QUIET": "1"}

    def limited(command: str, variables: str = "") -> subprocess.Popen:
        return subprocess.Popen(["bash", "-c", f"ulimit -v 6000000; {variables} {cli} {command}"], cwd=tmp_path,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def ended(process: subprocess.Popen) -> subprocess.CompletedProcess:
        out, err = process.communicate(timeout=300)
        return subprocess.CompletedProcess(process.args, process.returncode, out, err)

    assert ended(limited("generate --n-train 14 --n-test 7 --size 48")).returncode == 0
    assert ended(limited("train test_cnn --data data/synthetic --budget smoke")).returncode == 0
    cases = {
        "synth synthetic --src data/synthetic --recipe bigk.yaml --out data/udc-bigk": "memory budget",
        "robustness runs/synthetic/test_cnn-smoke-s0 --data data/synthetic --panels bigk.yaml --severities 3 "
        "--no-train-reference": "memory budget",
        "degrade big.png --panel toled --out out": "budget of 8 GB",
        "degrade hdr.png --panel toled --out out3": "size cannot be read from its header",
        "synth synthetic --src data/synthetic --recipe bomb.yaml --out data/udc-bomb": "psf.npy",
        "train test_cnn --data data/synthetic --budget smoke --set num_workers=1e9 --tag w": "num_workers",
    }
    started = {command: limited(command) for command in cases}  # side by side: each ends in a refusal
    raised = ended(limited("degrade big.png --panel toled --out out4", "UDCBENCH_DEGRADE_MEMORY_GB=20"))  # past it
    for command, said in cases.items():
        result = ended(started[command])
        lines = result.stderr.strip().splitlines()
        assert result.returncode != 0 and "Traceback" not in result.stderr, (command, result.stderr[-2000:])
        assert lines[-1].startswith("error:") and said in lines[-1], (command, lines[-3:])
    assert raised.returncode == 1 and "Traceback" not in raised.stderr
    assert raised.stderr.strip().splitlines()[-1].startswith("error: out of memory")
