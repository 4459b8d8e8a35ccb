"""Figures: the diffusion-steps points from run records, the PNG writers, t-SNE."""

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from udcbench.errors import UdcbenchError
from udcbench.reports import figures


def lrdif_result(steps, accuracy, seed=0, changes=None, dataset="rafdb", method="lrdif"):
    return {"kind": "train", "method": method, "dataset": dataset, "condition": "toled", "preset": "cpu",
            "seed": seed, "accuracy": accuracy, "created": f"2026-01-0{seed + 1}",
            "record": {"method_args": {"steps": steps}, "config_changes": changes or {}}}


def test_steps_points_average_seeds_and_skip_other_changes():
    results = [
        lrdif_result(4, 0.80), lrdif_result(4, 0.84, seed=1),
        lrdif_result(1, 0.70, changes={"method_args.steps": 1}),
        lrdif_result(8, 0.99, changes={"method_args.steps": 8, "lr": 1.0}),  # another change too: left out
        lrdif_result(2, 0.75, changes={"method_args.steps": 2}, dataset="ferplus"),  # another dataset
        lrdif_result(4, 0.10, method="lrdif-s2-v1"),  # another method
    ]
    points = figures.steps_points(results, dataset="rafdb", condition="toled", preset="cpu")
    assert [p["steps"] for p in points] == [1, 4]
    assert points[0] == {"steps": 1, "accuracy": pytest.approx(70.0), "std": 0.0, "n": 1, "chance": None,
                         "seeds": [pytest.approx(70.0)]}
    assert points[1]["accuracy"] == pytest.approx(82.0) and points[1]["n"] == 2
    assert points[1]["std"] == pytest.approx(np.std([80, 84], ddof=1))


def test_steps_figure_writes_csv_and_png(tmp_path: Path):
    points = [{"steps": 1, "accuracy": 70.0, "std": 0.0, "n": 1, "chance": 12.5, "seeds": [70.0]},
              {"steps": 4, "accuracy": 82.0, "std": 2.8, "n": 2, "chance": 12.5, "seeds": [80.0, 84.0]}]
    csv_path, png = figures.steps_figure(points, tmp_path / "fig6", "test")
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["steps"] for r in rows] == ["1", "4"] and rows[0]["chance"] == "12.5"
    image = cv2.imread(str(png))
    assert image is not None and image.shape[0] > 100
    with pytest.raises(UdcbenchError, match="no LRDif runs"):
        figures.steps_figure([], tmp_path / "empty", "test")


def test_the_steps_axis_is_scaled_to_the_data_and_marks_one_seed_points(tmp_path: Path, monkeypatch):
    assert figures._y_range([12.7, 14.6]) == pytest.approx((11.65, 15.65))  # at least 4 points: noise is no effect
    assert figures._y_range([82.0, 82.56]) == pytest.approx((80.28, 84.28))  # a half-point spread: 4 points
    assert figures._y_range([0.5, 2.0]) == (0.0, 4.0) and figures._y_range([99.0, 99.5]) == (96.0, 100.0)
    drawn = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: drawn.append(fig) or path)
    points = [{"steps": 1, "accuracy": 82.0, "std": 0.0, "n": 1, "chance": 12.5, "seeds": [82.0]},
              {"steps": 4, "accuracy": 82.56, "std": 0.3, "n": 3, "chance": 12.5, "seeds": [82.2, 82.7, 82.8]}]
    figures.steps_figure(points, tmp_path / "fig6", "test")
    ax = drawn[0].axes[0]
    low, high = ax.get_ylim()
    assert low > 80 and high < 85  # chance (12.5) is not on the axis ...
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "chance 12.5 % (below the axis)" in labels  # ... the legend says where it is
    assert "one seed (no spread)" in labels and "mean ± std over 3 seeds" in labels


def test_confusion_figure(tmp_path: Path, monkeypatch):
    record = {"method": "scn", "dataset": "ferplus", "condition": "toled", "classes": ["a", "b"],
              "test_at_best": {"accuracy": 0.75, "confusion": [[3, 1], [0, 4]]}}
    png = figures.confusion_figure({**record, "preset": "cpu", "seed": 2, "best_epoch": 9, "epochs": 15},
                                   tmp_path / "c.png")
    assert cv2.imread(str(png)) is not None
    drawn = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: drawn.append(fig) or path)
    figures.confusion_figure({**record, "preset": "cpu", "seed": 2, "best_epoch": 9, "epochs": 15}, tmp_path / "x")
    matrix_ax, bar = drawn[0].axes  # the matrix and its colour bar
    assert "share of the true class" in bar.get_ylabel()
    assert {t.get_text() for t in matrix_ax.texts} == {"0.75\n3", "0.25\n1", "0.00\n0", "1.00\n4"}  # with counts
    assert "cpu preset, seed 2, epoch 9 of 15" in matrix_ax.get_title()
    with pytest.raises(UdcbenchError, match="no confusion"):
        figures.confusion_figure({"test_at_best": {}}, tmp_path / "d.png")


def test_tsne_separates_two_clusters(tmp_path: Path):
    rng = np.random.default_rng(0)
    features = np.concatenate([rng.normal(0, 1, (30, 16)), rng.normal(12, 1, (30, 16))])
    labels = np.repeat([0, 1], 30)
    points = figures.tsne_embedding(features)
    assert points.shape == (60, 2)
    centre0, centre1 = points[labels == 0].mean(0), points[labels == 1].mean(0)
    spread = max(points[labels == 0].std(0).max(), points[labels == 1].std(0).max())
    assert np.linalg.norm(centre0 - centre1) > 3 * spread
    assert cv2.imread(str(figures.tsne_plot(points, labels, ["a", "b"], tmp_path / "t.png", "t"))) is not None
    with pytest.raises(UdcbenchError, match="at least 5"):
        figures.tsne_embedding(features[:3])
