"""``udcbench compare``: the difference of two results with its 95 % interval."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from udcbench.cli import app
from udcbench.compare import TEST_SAMPLING_ONLY, Side, compare, holm, paired_bootstrap, seed_interval, welch_p
from udcbench.errors import UdcbenchError

runner = CliRunner()


def test_the_paired_bootstrap_matches_the_exact_resampling_distribution():
    a = np.array([1, 1, 0, 1, 0, 1], bool)
    b = np.array([1, 0, 0, 0, 0, 1], bool)
    diff, low, high = paired_bootstrap(a, b, resamples=20_000)
    assert diff == pytest.approx(100 * 2 / 6)
    # by hand: every one of the 6^6 resamples of the paired differences, equally likely
    d = a.astype(float) - b.astype(float)
    means = np.sort([np.mean(c) for c in itertools.product(d, repeat=6)])
    exact = 100 * np.percentile(means, [2.5, 97.5])
    assert (low, high) == pytest.approx(tuple(exact), abs=100 / 6 + 1e-9)  # within one image
    assert low >= 0  # the two images that differ both favour a: no resample favours b
    same = paired_bootstrap(a, a)
    assert same == (0.0, 0.0, 0.0)


def test_the_interval_over_seeds_is_welchs_t_checked_by_hand():
    a, b = np.array([80.0, 82.0, 84.0]), np.array([70.0, 71.0, 72.0])
    diff, low, high = seed_interval(a, b)
    # by hand: variances 4 and 1 over 3 seeds each, se = sqrt(4/3 + 1/3) = 1.2910, Welch's df = (5/3)^2 /
    # ((4/3)^2/2 + (1/3)^2/2) = 2.941; Student's t 97.5 % quantile at 2.941 degrees of freedom is 3.2188
    assert diff == pytest.approx(11.0)
    assert (low, high) == pytest.approx((11 - 3.2188 * 1.2910, 11 + 3.2188 * 1.2910), abs=2e-3)
    # p by hand: t = 11 / 1.2910 = 8.521 on 2.941 df -> two-sided p 0.0036 (t tables, interpolated)
    assert welch_p(a, b) == pytest.approx(0.0036, abs=2e-4)
    close = seed_interval(a, np.array([81.0, 82.0, 83.0]))
    assert close[1] < 0 < close[2]
    # one run against three seeds: it varies as they do, se = s * sqrt(1/3 + 1), 2 degrees of freedom
    single = seed_interval(np.array([79.0]), b)
    assert single[2] - single[0] == pytest.approx(4.303 * 1.0 * (4 / 3) ** 0.5, rel=1e-3)  # t table, 2 df: 4.303


def test_holm_rejects_by_hand():
    # p sorted 0.01, 0.02, 0.04 against 0.05/3, 0.05/2, 0.05/1: all three rejected (0.0167, 0.025, 0.05)
    assert holm([0.04, 0.01, 0.02]) == [True, True, True]
    # 0.01 < 0.0167, then 0.03 > 0.025 stops: 0.04 is kept although it is below 0.05 on its own
    assert holm([0.04, 0.01, 0.03]) == [False, True, False]
    assert holm([]) == []


def _run(folder: Path, labels, predictions, seed=0, draw="abc") -> Path:
    folder.mkdir(parents=True)
    accuracy = float(np.mean(np.array(labels) == np.array(predictions)))
    record = {"method": folder.name, "seed": seed, "dataset_manifest_sha256": draw, "test_split": "test",
              "test_at_best": {"accuracy": accuracy, "count": len(labels)}}
    (folder / "results.json").write_text(json.dumps(record))
    np.save(folder / "test_predictions.npy", np.array([labels, predictions], np.int16))
    return folder


def test_compare_two_runs_on_the_command_line(tmp_path: Path):
    labels = [0, 1, 2, 3] * 50
    good = _run(tmp_path / "good", labels, labels)
    poor = _run(tmp_path / "poor", labels, [0, 0, 0, 0] * 50)
    result = runner.invoke(app, ["compare", str(good), str(poor), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["difference"] == pytest.approx(75.0) and out["separated"] and not out["decides"]
    # one run a side: the interval covers test sampling only, and never says which is better
    assert out["covers"] == TEST_SAMPLING_ONLY == "test-sampling only; seed variance not covered"
    assert "better" not in out["verdict"].replace("which method is better", "")
    assert out["verdict"].startswith("these two runs differ beyond test sampling")
    assert out["method"] == "paired bootstrap over 200 test images" and out["interval_95"][0] > 60
    shown = runner.invoke(app, ["compare", str(good), str(poor)])
    assert "covers test-sampling only; seed variance not covered" in shown.stdout
    assert " is better than " not in shown.stdout
    same = runner.invoke(app, ["compare", str(good), str(good)])
    assert "no width" in same.stdout and "decides nothing" in same.stdout
    other = _run(tmp_path / "other", labels, labels, draw="def")
    refused = runner.invoke(app, ["compare", str(good), str(other)])
    assert refused.exit_code == 2 and "not tested on the same images" in refused.output
    unknown = runner.invoke(app, ["compare", "nosuchmethod", str(good), "--runs", str(tmp_path / "runs")])
    assert unknown.exit_code == 2 and "neither a run folder nor a method" in unknown.output


def test_several_seeds_are_compared_over_seeds():
    a = Side("a", [{"test_at_best": {"accuracy": x}, "run_dir": f"a{i}"} for i, x in enumerate((0.80, 0.82, 0.84))])
    b = Side("b", [{"test_at_best": {"accuracy": x}, "run_dir": f"b{i}"} for i, x in enumerate((0.70, 0.71, 0.72))])
    result = compare(a, b)
    assert result.method == "Welch's t over seeds (3 and 3)" and result.separated and result.decides
    assert "a: 82.00 +- 2.00 % (3 seeds)" in result.summary() and result.verdict() == "a is better than b"
    assert "covers seed variance (Welch's t over seeds)" in result.summary()
    flat = compare(Side("a", [{**r, "test_at_best": {"accuracy": 0.8}} for r in a.records]),
                   Side("b", [{**r, "test_at_best": {"accuracy": 0.7}} for r in b.records]))
    assert flat.degenerate and not flat.decides and "no width" in flat.verdict()
    one = compare(Side("a", a.records[:1]), b)
    assert not one.decides and one.verdict().startswith("one side has a single run")
    other_draw = Side("b", [{**r, "dataset_manifest_sha256": "ffffffffffff0"} for r in b.records])
    with pytest.raises(UdcbenchError, match="different draws of the data"):
        compare(Side("a", [{**r, "dataset_manifest_sha256": "aaaaaaaaaaaa0"} for r in a.records]), other_draw)
    with pytest.raises(UdcbenchError, match="test_predictions.npy"):
        compare(Side("a", [{**a.records[0], "run_dir": "nowhere", "test_split": "t"}]),
                Side("b", [{**b.records[0], "run_dir": "nowhere", "test_split": "t"}]))
