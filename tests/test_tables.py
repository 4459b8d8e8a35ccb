"""Paper tables and leaderboards built from hand-made run records, checked against hand-computed values."""

import csv
from pathlib import Path

import pytest

from udcbench.errors import UdcbenchError
from udcbench.methods import method_names
from udcbench.reports.leaderboard import build_leaderboard, publish, write_leaderboard
from udcbench.reports.paper import paper_numbers, paper_table
from udcbench.reports.tables import build_table, fill_command, header, table_records, to_markdown, write_table


def result(method, dataset, condition, accuracy, seed=0, preset="cpu", init="scratch", created="2026-01-01",
           mca=None, changes=None, input_size=64, epochs=3, init_task=None, draw="0fb1eb23ffb2aa"):
    """A results-store row as ``load_results`` returns it."""
    return {
        "run_id": f"{method}-{dataset}-{condition}-{preset}-{init}-{seed}-{created}", "kind": "train",
        "method": method, "backbone": "ResNet-18", "init": init, "preset": preset, "input_size": input_size,
        "dataset": dataset, "condition": condition, "test_split": "valid", "seed": seed, "accuracy": accuracy,
        "accuracy_last": accuracy, "mean_class_accuracy": mca if mca is not None else accuracy - 0.1,
        "macro_f1": accuracy - 0.2, "best_epoch": 3, "epochs": epochs, "minutes": 1.0, "device": "cpu",
        "created": created, "run_dir": f"runs/{dataset}-{condition}/{method}-{preset}-s{seed}-{created}",
        "record": {"config_changes": changes or {}, "method_args": {}, "init_task": init_task,
                   "dataset_manifest_sha256": draw},
    }


def test_paper_numbers_are_the_papers_tables():
    numbers = paper_numbers()
    assert len(numbers) == 53
    assert {n.table for n in numbers} == {1, 2, 3, 4, 5}
    lrdif3 = [n for n in paper_table(3) if n.method == "LRDif"]
    assert lrdif3[0].accuracy == 84.89 and lrdif3[0].udcbench_method == "lrdif"
    assert {n.udcbench_method for n in numbers} - {None} <= set(method_names())
    assert [n.udcbench_method for n in paper_table(5)] == ["lrdif-s1", "lrdif-s2-v1", "lrdif-s2-v2", "lrdif",
                                                           "lrdif-s2-v4"]


@pytest.fixture
def results():
    return [
        result("scn", "ferplus", "toled", 0.80, seed=0),
        result("scn", "ferplus", "toled", 0.82, seed=1),
        result("scn", "ferplus", "toled", 0.70, seed=2, created="2026-01-01"),
        result("scn", "ferplus", "toled", 0.84, seed=2, created="2026-01-02"),  # the same seed again: latest wins
        result("scn", "ferplus", "toled", 0.90, seed=0, preset="paper"),  # another preset: not mixed in
        result("lrdif", "ferplus", "toled", 0.86, seed=0, input_size=48),
        result("lrdif", "ferplus", "toled", 0.99, seed=0, changes={"method_args.steps": 8}),  # a sweep run
        result("scn", "ferplus", "toled", 0.50, seed=3, changes={"lr": 0.5}),  # a user's --set
        result("resnet18", "ferplus", "clean", 0.83, seed=0),
    ]


def test_table3_cells_against_hand_computed_values(results, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    table = build_table(3, results, data_root=tmp_path / "data")
    assert (table.preset, table.init, table.condition) == ("cpu", "scratch", "toled")
    rows = {r.label: r for r in table.rows}
    scn = rows["SCN"].cells["ferplus"]
    assert scn.accuracy == pytest.approx([80.0, 82.0, 84.0])
    assert (scn.n, scn.mean, scn.std) == (3, pytest.approx(82.0), pytest.approx(2.0))
    assert scn.paper == 77.38 and scn.diff == pytest.approx(82.0 - 77.38)
    assert scn.ours() == "82.00 ± 2.00 (n=3)"
    lrdif = rows["LRDif"].cells["ferplus"]
    assert lrdif.accuracy == pytest.approx([86.0]) and lrdif.ours() == "86.00"  # the steps=8 run left out
    assert rows["LRDif"].input_size() == "48"
    assert rows["POSTER++"].method == "posterpp" and rows["POSTER++"].cells["ferplus"].paper == 83.78
    eac = rows["EAC"].cells["ferplus"]
    assert eac.n == 0 and eac.command == ("udcbench synth ferplus --panel toled && "
                                          "udcbench train eac --data data/udc-ferplus --budget cpu")
    assert table.commands()[0] == "udcbench synth ferplus --panel toled"
    assert any("preset paper" in n for n in table.notes)
    assert "1 Figure 6 run(s) (steps = 8) are in Figure 6, not in this table" in table.notes  # the study's own
    assert "1 run(s) trained with config overrides (--set) are not in the table" in table.notes
    records = {(r["method"], r["dataset"]): r for r in table_records(table)}
    assert records[("SCN", "ferplus")]["ours_mean"] == "82.00"
    assert records[("SCN", "ferplus")]["diff"] == "+4.62"
    assert records[("POSTER++", "ferplus")]["status"] == "missing"  # every paper row has its method now
    assert records[("MANet", "ferplus")]["status"] == "missing"  # implemented, not trained here
    assert records[("EAC", "ferplus")]["status"] == "missing"


def test_preset_choice_and_init_filter(results, tmp_path: Path):
    paper = build_table(3, results, preset="paper", data_root=tmp_path)
    cell = next(r for r in paper.rows if r.label == "SCN").cells["ferplus"]
    assert cell.accuracy == pytest.approx([90.0]) and paper.preset == "paper"
    assert "--budget paper" in next(r for r in paper.rows if r.label == "EAC").cells["ferplus"].command
    pretrained = results + [result("scn", "ferplus", "toled", 0.88, init="msceleb.pth", created="2026-02-01")]
    table = build_table(3, pretrained, init="pretrained", data_root=tmp_path)
    cell = next(r for r in table.rows if r.label == "SCN").cells["ferplus"]
    assert cell.accuracy == pytest.approx([88.0]) and cell.inits == {"msceleb.pth"}
    assert "--weights FILE" in next(r for r in table.rows if r.label == "EAC").cells["ferplus"].command


def test_table1_and_a_dataset_the_paper_lacks(tmp_path: Path):
    results = [result("resnet18", "synthetic", "clean", 0.5), result("resnet18", "ferplus", "clean", 0.83)]
    table1 = build_table(1, results, data_root=tmp_path)
    assert table1.datasets == ("rafdb", "ferplus", "kdef")
    control = next(r for r in table1.rows if r.method == "resnet18")
    assert control.cells["ferplus"].mean == pytest.approx(83.0) and control.cells["rafdb"].n == 0
    own = build_table(2, results + [result("resnet18", "synthetic", "toled", 0.4)], datasets=["synthetic"],
                      data_root=tmp_path)
    assert not own.has_paper("synthetic")
    assert all(r.method is not None for r in own.rows)  # rows with only a paper number are left out
    md = to_markdown(own)
    assert "UDC-Synthetic faces |" in md and "paper" not in md.split("\n")[4]
    assert own.stem() == "table2-synthetic"


def test_write_table_and_errors(results, tmp_path: Path):
    csv_path, md_path = write_table(build_table(3, results, data_root=tmp_path), tmp_path / "tables")
    assert csv_path.name == "table3.csv" and md_path.name == "table3.md"
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == 9 and rows[0]["method"] == "DACL"  # the paper's row order
    assert "| SCN | scratch | 64 | 82.00 ± 2.00 (n=3) | 77.38 | +4.62 |" in md_path.read_text()
    with pytest.raises(UdcbenchError, match="Tables 1-5"):
        build_table(6, results)
    with pytest.raises(UdcbenchError, match="preset"):
        build_table(3, results, preset="huge")


def test_leaderboard_drop_and_rank_change(tmp_path: Path):
    results = [
        result("resnet18", "ferplus", "clean", 0.84, seed=0), result("resnet18", "ferplus", "clean", 0.82, seed=1),
        result("scn", "ferplus", "clean", 0.80),
        result("resnet18", "ferplus", "toled", 0.78), result("scn", "ferplus", "toled", 0.79),
        result("scn", "ferplus", "toled", 0.99, changes={"lr": 1.0}),  # overrides: not on the leaderboard
        result("lrdif-s1", "ferplus", "toled", 1.0),  # an oracle: never ranked
    ]
    rows = build_leaderboard(results)
    by = {(r["method"], r["condition"]): r for r in rows}
    assert len(rows) == 4
    r18 = by[("resnet18", "clean")]
    assert (r18["seeds"], r18["accuracy"], r18["accuracy_std"], r18["rank"]) == (
        2, pytest.approx(83.0), pytest.approx(2 ** 0.5), 1)
    assert r18["drop_from_clean"] is None and r18["paper_accuracy"] is None
    scn_udc = by[("scn", "toled")]
    assert scn_udc["drop_from_clean"] == pytest.approx(1.0)
    assert by[("resnet18", "toled")]["drop_from_clean"] == pytest.approx(5.0)
    # clean: the control's two seeds (84, 82) against SCN's single 80 leave one degree of freedom, and under UDC 78
    # against 79 in one run each (no kept predictions to pair): nothing separates, every rank is 1st
    assert by[("scn", "clean")]["rank"] == 1
    assert (scn_udc["rank"], scn_udc["rank_change_from_clean"]) == (1, 0)
    assert by[("resnet18", "toled")]["rank"] == 1 and by[("resnet18", "toled")]["rank_change_from_clean"] == 0
    separated = build_leaderboard([result(m, "ferplus", "clean", x, seed=s) for m, xs in
                                   (("resnet18", (0.84, 0.85, 0.86)), ("scn", (0.70, 0.71, 0.72)))
                                   for s, x in enumerate(xs)])
    assert [(r["method"], r["rank"]) for r in separated] == [("resnet18", 1), ("scn", 2)]
    # three methods, three comparisons: resnet18 (84, 85, 86) against scn (81.5, 82.5, 83.5) has Welch's p 0.038,
    # below 5 % alone but above Holm's 5 % / 3 for the smallest of three p's (the others: 0.084, 1.0): no rank apart
    holm_case = build_leaderboard([result(m, "ferplus", "clean", x / 100, seed=s) for m, xs in
                                   (("resnet18", (84, 85, 86)), ("scn", (81.5, 82.5, 83.5)), ("rul", (81, 82.5, 84)))
                                   for s, x in enumerate(xs)])
    assert {r["method"]: r["rank"] for r in holm_case} == {"resnet18": 1, "scn": 1, "rul": 1}
    two = build_leaderboard([result(m, "ferplus", "clean", x / 100, seed=s) for m, xs in
                             (("resnet18", (84, 85, 86)), ("scn", (81.5, 82.5, 83.5))) for s, x in enumerate(xs)])
    assert {r["method"]: r["rank"] for r in two} == {"resnet18": 1, "scn": 2}  # one comparison: 0.038 < 0.05
    assert scn_udc["paper_accuracy"] == 77.38 and by[("scn", "clean")]["paper_accuracy"] == 83.11
    assert [r["condition"] for r in rows] == ["clean", "clean", "toled", "toled"]
    csv_path, md_path = write_leaderboard(rows, tmp_path)
    written = list(csv.DictReader(csv_path.open()))
    assert written[2]["method"] == "scn" and written[2]["drop_from_clean"] == "1.00"
    from huggingface_hub import ModelCard

    cards = publish(rows, tmp_path / "cards")
    assert len(cards) == 4 and all(p.suffix == ".md" for p in cards)
    scn = ModelCard.load(next(p for p in cards if p.name.startswith("scn-cpu-scratch-ferplus-toled")))  # hub's parser
    assert scn.data.model_name == "udcbench-scn" and scn.data.license == "apache-2.0"
    accuracy = scn.data.eval_results[0]
    assert (accuracy.task_type, accuracy.dataset_type, accuracy.dataset_split) == (
        "image-classification", "udcbench/ferplus-toled", "valid")
    assert (accuracy.metric_type, accuracy.metric_value) == ("accuracy", round(scn_udc["accuracy"], 2))
    assert accuracy.dataset_revision == "0fb1eb23ffb2"  # the draw of the data
    chance = [dict(r, near_chance=True) if r["method"] == "scn" else r for r in rows]
    assert not any(p.name.startswith("scn") for p in publish(chance, tmp_path / "chance"))  # near chance: no card


def test_fill_commands_name_clean_data_read_from_outside_the_workspace(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path / "..")
    data, src = tmp_path / "data", tmp_path / "datasets" / "ferplus"  # UDCBENCH_DATA; reproduce --src-root
    assert fill_command("scn", "ferplus", "toled", "cpu", "scratch", data, src) == (
        f"udcbench synth ferplus --panel toled --src {tmp_path.name}/datasets/ferplus && "
        f"udcbench train scn --data {tmp_path.name}/data/udc-ferplus --budget cpu")
    assert fill_command("scn", "ferplus", "clean", "cpu", "scratch", data, src) == (
        f"udcbench train scn --data {tmp_path.name}/datasets/ferplus --budget cpu")
    (data / "udc-ferplus").mkdir(parents=True)  # synthesised already: training only
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # a folder outside the current one is named in full
    assert fill_command("dan", "ferplus", "toled", "paper", "msceleb.pth", data) == (
        f"udcbench train dan --data {data.resolve()}/udc-ferplus --budget paper --weights msceleb.pth")
    # the built-in synthetic faces: drawn to the workspace folder first, and trained from that folder
    assert fill_command("eac", "synthetic", "clean", "cpu", "scratch", data) == (
        f"udcbench generate && udcbench train eac --data {data.resolve()}/synthetic --budget cpu")


def test_fill_commands_show_a_workspace_link_to_data_elsewhere_as_the_link(tmp_path: Path, monkeypatch):
    (tmp_path / "shared" / "ferplus").mkdir(parents=True)
    workspace = tmp_path / "bench"
    (workspace / "data").mkdir(parents=True)
    (workspace / "data" / "ferplus").symlink_to(tmp_path / "shared" / "ferplus")
    monkeypatch.chdir(workspace)
    data = workspace / "data"
    assert fill_command("scn", "ferplus", "clean", "cpu", "scratch", data, data / "ferplus") == (
        "udcbench train scn --data data/ferplus --budget cpu")

def test_leaderboard_marks_near_chance_results_and_does_not_rank_them():
    def with_test(row, classes, confusion):
        row["record"].update(classes=classes, test_at_best={"confusion": confusion})
        return row

    eight = [f"c{i}" for i in range(8)]
    balanced = [[10] * 8 for _ in range(8)]  # uniform chance 12.5 %, largest class 12.5 %
    rows = build_leaderboard([
        with_test(result("resnet18", "synthetic", "poled", 0.40), eight, balanced),
        with_test(result("dan", "synthetic", "poled", 0.13), eight, balanced),  # 13 %: near chance
        with_test(result("dan", "synthetic", "clean", 0.50), eight, balanced),
        with_test(result("resnet18", "synthetic", "clean", 0.45), eight, balanced),
    ])
    by = {(r["method"], r["condition"]): r for r in rows}
    dan = by[("dan", "poled")]
    assert dan["chance"] == pytest.approx(12.5) and dan["near_chance"] and dan["rank"] is None
    assert dan["rank_change_from_clean"] is None  # no "climbs 5 ranks" at chance
    assert by[("resnet18", "poled")]["rank"] == 1 and not by[("resnet18", "poled")]["near_chance"]
    assert rows[-1]["method"] == "dan"  # unranked rows after the ranked ones of their group
    # an imbalanced test set: always answering its largest class (60 %) is the chance to beat
    skewed = with_test(result("scn", "ferplus", "toled", 0.62), eight[:2], [[60, 0], [40, 0]])
    assert build_leaderboard([skewed])[0]["near_chance"] and build_leaderboard([skewed])[0]["chance"] == 60.0


def test_the_low_light_table_lists_every_method_clean_and_low_light_with_the_drop(tmp_path: Path):
    from udcbench.reports.lowlight import build_lowlight_table, lowlight_records, write_lowlight_table

    results = [result("resnet18", "ferplus", "clean", 0.83, seed=0), result("resnet18", "ferplus", "clean", 0.81,
                                                                             seed=1),
               result("resnet18", "ferplus", "lowlight", 0.70), result("lldif", "ferplus", "lowlight", 0.72),
               result("lldif-s1", "ferplus", "lowlight", 0.99),  # an oracle: not a row
               result("scn", "ferplus", "toled", 0.80)]  # a UDC run: not in this table
    table = build_lowlight_table(results, data_root=tmp_path / "data")
    rows = {r.method: r for r in table.rows}
    assert "lldif" in rows and "lldif-s1" not in rows and "posterpp" in rows
    r18 = rows["resnet18"]
    assert r18.cells[("ferplus", "clean")].ours() == "82.00 ± 1.41 (n=2)"
    assert r18.drop("ferplus", "lowlight") == pytest.approx(12.0)
    assert rows["scn"].cells[("ferplus", "lowlight")].n == 0
    assert rows["lldif"].cells[("ferplus", "clean")].command == "udcbench train lldif --data " + str(
        tmp_path / "data" / "ferplus") + " --budget cpu"
    records = {(r["udcbench_method"], r["dataset"]): r for r in lowlight_records(table)}
    assert records[("resnet18", "ferplus")]["drop"] == "12.00" and records[("lldif", "ferplus")]["drop"] == ""
    assert "udcbench synth kdef --panel lowlight" in table.commands()
    csv_path, md_path = write_lowlight_table(table, tmp_path / "tables")
    assert csv_path.name == "table-ll.csv" and "| LLDif |" in md_path.read_text()


def test_a_table_names_its_face_pretraining_and_the_methods_that_train_longer(tmp_path: Path):
    trunk = "runs/pretrained/faces-identity-8v-48px-s0/trunk.pt"
    task = "identities of built-in faces (udcbench pretrain)"
    rows = [result(m, "synthetic", "toled", 0.7, preset="quick", init=trunk, epochs=2 if m == "eac" else 1,
                   init_task=task) for m in ("resnet18", "scn", "eac", "lrdif")]
    table = build_table(2, rows, datasets=["synthetic"], condition="toled", data_root=tmp_path)
    assert table.init == trunk
    assert f"init {trunk}: a ResNet-18 trunk pre-trained on the {task}" in table.notes[0]
    assert "epochs at the quick preset: EAC 2; the others 1" in table.notes
    md = write_table(table, tmp_path / "tables")[1].read_text()
    assert "| faces-identity-8v-48px-s0/trunk.pt | 48 |" not in md  # input 64 in these rows
    assert "| faces-identity-8v-48px-s0/trunk.pt | 64 |" in md
    plain = build_table(2, [result("resnet18", "synthetic", "toled", 0.7)], datasets=["synthetic"], data_root=tmp_path)
    assert not any("epochs" in n or "pre-trained" in n for n in plain.notes)


def test_a_table_names_which_lrdif_its_runs_trained(tmp_path: Path):
    rows = [result("resnet18", "ferplus", "toled", 0.8), result("lrdif", "ferplus", "toled", 0.8)]
    rows[1]["record"]["notes"] = {"model": "the paper's model: CLIP ViT-B-32 encoders, DT blocks U-Net style"}
    table = build_table(3, rows, data_root=tmp_path)
    assert "lrdif runs: the paper's model: CLIP ViT-B-32 encoders, DT blocks U-Net style" in table.notes


@pytest.mark.parametrize("condition, shown", [("toled", True), ("poled", False), ("lowlight", False)])
def test_the_papers_column_is_shown_only_beside_the_papers_condition(tmp_path: Path, condition, shown):
    rows = [result(m, "ferplus", condition, 0.8) for m in ("scn", "resnet18")]
    table = build_table(3, rows, condition=condition, data_root=tmp_path)
    assert table.has_paper("ferplus") is shown
    assert any("the paper's column is left out" in n for n in table.notes) is not shown
    assert {r.method for r in table.rows} >= {"scn", "resnet18"}  # the rows stay, ours filled
    assert ("paper" in " ".join(header(table))) is shown
    assert build_table(1, [result("scn", "ferplus", "clean", 0.8)], data_root=tmp_path).has_paper("ferplus")


def test_a_table_over_two_draws_of_the_data_says_so_and_draw_keeps_one(tmp_path: Path):
    rows = [result("scn", "ferplus", "toled", 0.8, draw="e28a9fe69ac1ff"),
            result("resnet18", "ferplus", "toled", 0.82, draw="0fb1eb23ffb2aa"),
            result("dan", "ferplus", "toled", 0.81, draw="0fb1eb23ffb2aa")]
    mixed = build_table(3, rows, data_root=tmp_path)
    note = next(n for n in mixed.notes if "draws" in n)
    assert "mixes 2 draws" in note and "0fb1eb23ffb2: DAN, ResNet-18" in note and "e28a9fe69ac1: SCN" in note
    one = build_table(3, rows, data_root=tmp_path, draw="0fb1")
    assert not any("draws" in n for n in one.notes)
    cells = {r.method: r.cells["ferplus"] for r in one.rows if r.method}
    assert cells["scn"].accuracy == [] and cells["dan"].accuracy == [81.0]
