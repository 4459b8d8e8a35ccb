from pathlib import Path

import pytest

from udcbench.errors import UdcbenchError
from udcbench.labels import (
    CANONICAL_LABELS,
    FERPLUS_COLUMNS,
    KDEF_TO_CANONICAL,
    RAFDB_TO_CANONICAL,
    label_names,
)
from udcbench.workspace import load_workspace


def test_canonical_order_puts_the_basic_seven_first():
    assert CANONICAL_LABELS[:7] == ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear")
    assert CANONICAL_LABELS[7] == "contempt"
    assert label_names(7) == CANONICAL_LABELS[:7]
    with pytest.raises(ValueError):
        label_names(6)


def test_dataset_mappings_agree_with_the_official_names():
    rafdb_names = {1: "surprise", 2: "fear", 3: "disgust", 4: "happiness", 5: "sadness", 6: "anger", 7: "neutral"}
    assert {k: CANONICAL_LABELS[v] for k, v in RAFDB_TO_CANONICAL.items()} == rafdb_names
    kdef_names = {"AF": "fear", "AN": "anger", "DI": "disgust", "HA": "happiness", "NE": "neutral", "SA": "sadness",
                  "SU": "surprise"}
    assert {k: CANONICAL_LABELS[v] for k, v in KDEF_TO_CANONICAL.items()} == kdef_names
    assert FERPLUS_COLUMNS[:8] == CANONICAL_LABELS and FERPLUS_COLUMNS[8:] == ("unknown", "NF")


def test_workspace_defaults_file_and_environment(tmp_path: Path, monkeypatch):
    for var in ("UDCBENCH_DATA", "UDCBENCH_RUNS", "UDCBENCH_RESULTS", "UDCBENCH_CACHE"):
        monkeypatch.delenv(var, raising=False)
    ws = load_workspace(tmp_path)
    assert (ws.data, ws.runs, ws.results) == (tmp_path / "data", tmp_path / "runs", tmp_path / "results")
    assert ws.dataset_dir("udc-rafdb") == tmp_path / "data" / "udc-rafdb"
    (tmp_path / "udcbench.toml").write_text('[workspace]\ndata = "/datasets/fer"\nruns = "exp/runs"\n')
    ws = load_workspace(tmp_path)
    assert ws.data == Path("/datasets/fer") and ws.runs == tmp_path / "exp" / "runs"
    monkeypatch.setenv("UDCBENCH_DATA", "elsewhere")
    assert load_workspace(tmp_path).data == tmp_path / "elsewhere"


def test_workspace_rejects_unknown_keys_and_bad_toml(tmp_path: Path):
    (tmp_path / "udcbench.toml").write_text('[workspace]\ndatas = "x"\n')
    with pytest.raises(UdcbenchError, match="unknown \\[workspace\\] keys"):
        load_workspace(tmp_path)
    (tmp_path / "udcbench.toml").write_text("[workspace\n")
    with pytest.raises(UdcbenchError, match="not valid TOML"):
        load_workspace(tmp_path)
