from pathlib import Path

import numpy as np
import pytest

from udcbench.datasets import create_dataset
from udcbench.datasets.export import export_hf
from udcbench.errors import UdcbenchError
from udcbench.face_template import mean_shape_in_box
from udcbench.landmarks import LandmarkExtractor, compute_landmarks, dlib_available

from conftest import FERPLUS_REAL, needs_ferplus


def test_mean_shape_fills_an_aligned_crop():
    for w, h in ((100, 100), (48, 48), (64, 80)):
        points = mean_shape_in_box(w, h)
        assert points.shape == (68, 2)
        assert (points[:, 0] > 0).all() and (points[:, 0] < w).all()
        assert (points[:, 1] > 0).all() and (points[:, 1] < h).all()
        assert points[8, 1] > points[30, 1] > points[19, 1]  # chin below nose below brow


def test_extractor_prefers_ground_truth_then_falls_back():
    image = np.zeros((48, 48, 3), np.uint8)
    truth = np.full((68, 2), 7.0)
    points, method = LandmarkExtractor("auto")(image, truth)
    assert method == "ground_truth" and (points == 7).all()
    points, method = LandmarkExtractor("mean_shape")(image, truth)
    assert method == "mean_shape"
    np.testing.assert_array_equal(points, mean_shape_in_box(48, 48))
    with pytest.raises(UdcbenchError, match="no ground-truth landmarks"):
        LandmarkExtractor("ground_truth")(image, None)
    with pytest.raises(UdcbenchError, match="unknown landmark source"):
        LandmarkExtractor("magic")


def test_landmarks_are_cached_per_dataset(tmp_path: Path):
    ds = create_dataset("synthetic", n_train=14, n_test=7, size=48)
    first = compute_landmarks(ds, "test", cache_dir=tmp_path, progress=False)
    assert first.counts() == {"ground_truth": 7} and not first.cached
    np.testing.assert_array_equal(first.get("test_000003"), ds.ground_truth_landmarks(ds.records("test")[3]))
    again = compute_landmarks(ds, "test", cache_dir=tmp_path, progress=False)
    assert again.cached and again.ids == first.ids
    np.testing.assert_array_equal(again.points, first.points)
    assert len(list((tmp_path / "landmarks").glob("*.npz"))) == 1


@pytest.mark.skipif(not dlib_available(), reason="the landmarks extra (dlib) is not installed")
def test_dlib_on_a_drawn_face_lands_near_the_truth():
    ds = create_dataset("synthetic", n_train=7, n_test=0, size=100)
    extractor = LandmarkExtractor("dlib")
    errors = []
    for record in ds.records():
        points, method = extractor(ds.load_image(record))
        assert method in ("dlib", "dlib_cropbox")
        truth = ds.ground_truth_landmarks(record)
        errors.append(np.linalg.norm(points - truth, axis=1).mean() / np.linalg.norm(truth[45] - truth[36]))
    assert np.median(errors) < 0.6  # mean error under 60 % of the inter-ocular distance


@needs_ferplus
@pytest.mark.skipif(not dlib_available(), reason="the landmarks extra (dlib) is not installed")
def test_dlib_on_real_ferplus_crops(tmp_path: Path):
    ds = create_dataset("ferplus", FERPLUS_REAL)
    records = ds.records("valid")[:20]
    extractor = LandmarkExtractor("auto")
    methods = [extractor(ds.load_image(r))[1] for r in records]
    assert set(methods) <= {"dlib", "dlib_cropbox"} and methods.count("dlib") >= 10


def test_hf_export_round_trip(ferplus_root: Path, tmp_path: Path):
    import datasets

    ds = create_dataset("ferplus", ferplus_root, label_mode="probability")
    out = tmp_path / "hf"
    export_hf(ds, out, progress=False)
    loaded = datasets.load_from_disk(str(out))
    assert set(loaded) == {"train", "valid"}
    assert loaded["train"].features["label"].names == list(ds.classes)
    for split in ("train", "valid"):
        records = {r.id: r for r in ds.records(split)}
        assert len(loaded[split]) == len(records)
        for row in loaded[split]:
            record = records[row["id"]]
            assert row["label"] == record.label and row["split"] == split
            np.testing.assert_array_equal(np.asarray(row["image"].convert("RGB")), ds.load_image(record))
            np.testing.assert_allclose(row["soft_label"], record.soft, rtol=1e-6)
    card = (out / "README.md").read_text()
    assert "Barsoum" in card and "MIT" in card and "| 0 neutral |" in card
    with pytest.raises(UdcbenchError, match="not empty"):
        export_hf(ds, out, progress=False)
    with pytest.raises(UdcbenchError, match="source folder"):
        export_hf(ds, ferplus_root / "hf", progress=False)


@pytest.mark.skipif(not dlib_available(), reason="the landmarks extra (dlib) is not installed")
def test_dlib_in_worker_processes_finds_what_one_process_finds(tmp_path: Path, monkeypatch):
    ds = create_dataset("synthetic", n_train=0, n_test=10, size=64)
    one = compute_landmarks(ds, "test", "dlib", progress=False, workers=1)
    import udcbench.workers as workers

    pools, real = [], workers.worker_pool
    monkeypatch.setattr(workers, "worker_pool", lambda n: pools.append(n) or real(n))
    two = compute_landmarks(ds, "test", "dlib", cache_dir=tmp_path, progress=False, workers=2)
    assert pools == [2]
    assert two.ids == one.ids and list(two.methods) == list(one.methods)
    assert set(one.methods) <= {"dlib", "dlib_cropbox"}
    np.testing.assert_array_equal(two.points, one.points)
