"""The benchmarks' shared printing: a table written to a log file stays readable."""

import sys

from conftest import REPO


def test_a_wide_benchmark_table_in_a_log_keeps_each_row_on_one_line(tmp_path, monkeypatch, capsys):
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import _common
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    monkeypatch.setattr(_common, "RESULTS", tmp_path)
    monkeypatch.setattr(_common, "REPO", tmp_path.parent)
    commit = "9561a60c8a85e6fcd325071f05255a5bb6f5b8f8"
    rows = [{f"column {i}": f"value {i}" for i in range(12)} | {"commit": commit}]
    _common.report("wide", "a wide table", rows)
    out = capsys.readouterr().out
    assert commit in out and "value 11" in out  # not folded into narrow columns
    assert (tmp_path / "wide.csv").read_text().splitlines()[1].endswith(commit)
