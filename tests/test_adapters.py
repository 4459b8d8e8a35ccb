from pathlib import Path

import numpy as np
import pytest

from udcbench.datasets import class_counts, create_dataset, detect_dataset
from udcbench.datasets.kdef import kdef_split
from udcbench.datasets.summary import summarize
from udcbench.errors import DatasetLayoutError, DatasetNotFoundError, UdcbenchError, UnreadableImageError

from conftest import FERPLUS_REAL, needs_ferplus, tree_digest, write_png


# -- RAF-DB ---------------------------------------------------------------------------------------
def test_rafdb_official_layout(rafdb_root: Path):
    before = tree_digest(rafdb_root)
    ds = create_dataset("rafdb", rafdb_root)
    assert detect_dataset(rafdb_root) == "rafdb"
    assert ds.splits() == ["train", "test"]
    train = ds.records("train")
    # label ids 1..7 in order -> surprise, fear, disgust, happiness, sadness, anger, neutral
    assert [r.label for r in train] == [2, 6, 5, 1, 3, 4, 0]
    assert [r.label for r in ds.records("test")] == [1, 0, 2]
    sample = ds.sample(train[0])
    assert sample.image.shape == (100, 100, 3) and sample.image.dtype == np.uint8
    assert sample.id == "train_00001" and sample.split == "train" and sample.landmarks is None
    list(ds.samples())
    assert tree_digest(rafdb_root) == before, "an adapter modified its source folder"


def test_rafdb_original_images_and_missing_files(rafdb_root: Path):
    ds = create_dataset("rafdb", rafdb_root, images="original")
    assert ds.sample(ds.records("train")[0]).image.shape == (120, 90, 3)
    assert not ds.face_cropped
    (rafdb_root / "Image" / "aligned" / "test_0002_aligned.jpg").unlink()
    ds = create_dataset("rafdb", rafdb_root)
    assert len(ds.records("test")) == 2
    assert any("missing" in p for p in ds.problems)


def test_rafdb_malformed(rafdb_root: Path):
    label_file = rafdb_root / "EmoLabel" / "list_patition_label.txt"
    label_file.write_text(label_file.read_text() + "train_00099.jpg 9\n")
    with pytest.raises(DatasetLayoutError, match="line 11: unknown label id 9"):
        create_dataset("rafdb", rafdb_root).records()
    label_file.write_text("train_00001.jpg\n")
    with pytest.raises(DatasetLayoutError, match="line 1: expected"):
        create_dataset("rafdb", rafdb_root).records()
    label_file.unlink()
    with pytest.raises(DatasetLayoutError, match="missing label file"):
        create_dataset("rafdb", rafdb_root).records()


def test_unreadable_image_is_reported_with_its_path(rafdb_root: Path):
    bad = rafdb_root / "Image" / "aligned" / "train_00003_aligned.jpg"
    bad.write_bytes(b"not a jpeg at all")
    ds = create_dataset("rafdb", rafdb_root)
    record = next(r for r in ds.records() if r.id == "train_00003")
    with pytest.raises(UnreadableImageError, match="train_00003_aligned.jpg"):
        ds.load_image(record)


def test_missing_dataset_says_where_to_get_it(tmp_path: Path):
    with pytest.raises(DatasetNotFoundError, match="licence-gated.*data/rafdb"):
        create_dataset("rafdb", tmp_path / "nowhere")


def test_unknown_option_and_value(rafdb_root: Path):
    with pytest.raises(UdcbenchError, match="unknown option"):
        create_dataset("rafdb", rafdb_root, colour="red")
    with pytest.raises(UdcbenchError, match="not one of"):
        create_dataset("rafdb", rafdb_root, images="blurry")


# -- FERPlus --------------------------------------------------------------------------------------
def test_ferplus_majority_and_absent_split(ferplus_root: Path):
    before = tree_digest(ferplus_root)
    ds = create_dataset("ferplus", ferplus_root)
    assert detect_dataset(ferplus_root) == "ferplus"
    assert ds.num_classes == 8 and ds.splits() == ["train", "valid"]
    assert {r.id: r.label for r in ds.records()} == {
        "fer0000000": 0, "fer0000001": 1, "fer0000004": 7, "fer0000005": 2, "fer0000006": 3, "fer0000007": 4,
    }
    assert ds.dropped == 2
    image = ds.load_image(ds.records("valid")[0])
    assert image.shape == (48, 48, 3) and (image[..., 0] == image[..., 2]).all()
    assert summarize(ds)["absent_splits"] == ["test"]
    assert tree_digest(ferplus_root) == before


def test_ferplus_label_modes(ferplus_root: Path):
    seven = create_dataset("ferplus", ferplus_root, label_mode="majority7")
    assert seven.num_classes == 7 and "fer0000004" not in {r.id for r in seven.records()}
    prob = create_dataset("ferplus", ferplus_root, label_mode="probability")
    soft = {r.id: r.soft for r in prob.records()}
    np.testing.assert_allclose(soft["fer0000005"], [0, 0, 0.7, 0, 0, 0, 0.3, 0])
    assert all(abs(sum(s) - 1) < 1e-9 for s in soft.values())


def test_ferplus_kaggle_pixels(ferplus_root: Path, tmp_path: Path):
    root = tmp_path / "kaggle"
    root.mkdir()
    (root / "fer2013new.csv").write_text((ferplus_root / "fer2013new.csv").read_text())
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (9, 48 * 48))
    lines = ["emotion,pixels,Usage"] + [f"0,{' '.join(map(str, row))},Training" for row in pixels]
    (root / "fer2013.csv").write_text("\n".join(lines) + "\n")
    ds = create_dataset("ferplus", root)
    assert ds.splits() == ["train", "valid", "test"]  # fer2013new.csv covers PrivateTest too
    record = next(r for r in ds.records() if r.id == "fer0000007")
    np.testing.assert_array_equal(ds.load_image(record)[..., 0], pixels[7].reshape(48, 48))


def test_ferplus_malformed(ferplus_root: Path):
    label_csv = ferplus_root / "FER2013Valid" / "label.csv"
    label_csv.write_text(label_csv.read_text() + "fer0000009.png,box,1,2,3\n")
    with pytest.raises(DatasetLayoutError, match="FER2013Valid/label.csv line 3: expected 10 vote columns"):
        create_dataset("ferplus", ferplus_root).records()
    label_csv.write_text("fer0000006.png,box,a,0,0,0,0,0,0,0,0,0\n")
    with pytest.raises(DatasetLayoutError, match="must be numbers"):
        create_dataset("ferplus", ferplus_root).records()


@needs_ferplus
def test_ferplus_real_counts_match_the_official_rule():
    ds = create_dataset("ferplus", FERPLUS_REAL)
    assert len(ds.records("train")) == 25045
    assert len(ds.records("valid")) == 3191
    assert class_counts(ds.records("valid"), 8)[0] == 1180


# -- KDEF -----------------------------------------------------------------------------------------
def test_kdef_layout_split_and_angles(kdef_root: Path):
    before = tree_digest(kdef_root)
    assert detect_dataset(kdef_root) == "kdef"
    frontal = create_dataset("kdef", kdef_root, crop="none", size=32)
    records = frontal.records()
    assert len(records) == 3 * 2 * 7  # subjects x sessions x expressions, straight angle only
    assert {r.split for r in records if r.id[1:4] == "F07"} == {"test"}
    assert {r.split for r in records if r.id[1:4] in ("F01", "M06")} == {"train"}
    assert {r.id: r.label for r in records}["AF01HAS"] == 1
    everything = create_dataset("kdef", kdef_root, angles="all", crop="none", size=32)
    assert len(everything.records()) == 3 * 2 * 7 * 3
    assert frontal.load_image(records[0]).shape == (32, 32, 3)
    haar = create_dataset("kdef", kdef_root, size=40)
    assert haar.load_image(records[0]).shape == (40, 40, 3)
    assert haar.crop_methods[records[0].id] in ("haar", "fallback")
    assert tree_digest(kdef_root) == before


def test_kdef_split_file_is_subject_disjoint_80_20():
    split = kdef_split()
    assert len(split) == 70
    test = [s for s, v in split.items() if v == "test"]
    assert len(test) == 14 and sum(s.startswith("F") for s in test) == 7
    # 4,900 images = 70 subjects x 70 images: 3,920 / 980
    assert (70 - len(test)) * 70 == 3920 and len(test) * 70 == 980


def test_kdef_unrecognised_codes_are_skipped_and_reported(kdef_root: Path):
    write_png(kdef_root / "KDEF" / "AF01" / "AF01XXS.JPG", 1, (20, 20))
    ds = create_dataset("kdef", kdef_root, crop="none")
    assert len(ds.records()) == 42 and any("unrecognised" in p for p in ds.problems)


# -- image folder ---------------------------------------------------------------------------------
def test_imagefolder_aliases_landmarks_and_problems(tmp_path: Path):
    root = tmp_path / "folder"
    write_png(root / "train" / "happy" / "a.png", 1)
    write_png(root / "train" / "contempt" / "b.png", 2)
    write_png(root / "val" / "Angry" / "c.png", 3)
    (root / "test").mkdir()
    np.savez(root / "landmarks.npz", ids=np.array(["train/happy/a"]), points=np.ones((1, 68, 2)))
    ds = create_dataset("imagefolder", root)
    assert detect_dataset(root) == "imagefolder"
    assert {r.id: (r.split, r.label) for r in ds.records()} == {
        "train/happy/a": ("train", 1), "train/contempt/b": ("train", 7), "val/Angry/c": ("valid", 4),
    }
    assert ds.num_classes == 8
    assert ds.sample(ds.records("train")[1]).landmarks.shape == (68, 2)
    assert any("empty" in p for p in ds.problems)


def test_imagefolder_unknown_class(tmp_path: Path):
    write_png(tmp_path / "f" / "train" / "bored" / "a.png", 1)
    with pytest.raises(DatasetLayoutError, match="unknown class folder 'bored'"):
        create_dataset("imagefolder", tmp_path / "f").records()


def test_detect_refuses_unknown_layouts(tmp_path: Path):
    (tmp_path / "random").mkdir()
    with pytest.raises(UdcbenchError, match="no known dataset layout"):
        detect_dataset(tmp_path / "random")
