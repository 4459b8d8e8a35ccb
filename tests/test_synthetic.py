import numpy as np

from udcbench.datasets import class_counts, create_dataset
from udcbench.datasets.synthetic_faces import (
    ACTION_UNITS,
    NUM_CLASSES,
    SyntheticFaceGenerator,
    apply_action_units,
)
from udcbench.face_template import neutral_face


def test_deterministic_per_image_whatever_the_batch():
    a = SyntheticFaceGenerator(seed=3)
    b = SyntheticFaceGenerator(seed=3)
    batch = a.draw_batch("train", range(10, 20))
    for index, face in zip(range(10, 20), batch):
        alone = b.draw("train", index)
        np.testing.assert_array_equal(face.image, alone.image)
        np.testing.assert_array_equal(face.landmarks, alone.landmarks)
    other_seed = SyntheticFaceGenerator(seed=4).draw("train", 10)
    assert not np.array_equal(other_seed.image, batch[0].image)
    other_split = a.draw("test", 10)
    assert not np.array_equal(other_split.image, batch[0].image)


def test_labels_balanced_and_landmarks_inside():
    ds = create_dataset("synthetic", n_train=140, n_test=35, size=64)
    assert class_counts(ds.records("train"), 7) == [20] * 7
    assert class_counts(ds.records("test"), 7) == [5] * 7
    for sample in ds.samples():
        assert sample.image.shape == (64, 64, 3) and sample.image.dtype == np.uint8
        assert sample.landmarks.shape == (68, 2)
        assert (sample.landmarks >= 0).all() and (sample.landmarks <= 63).all()


def test_action_units_move_the_right_landmarks():
    face = neutral_face()
    smile = np.zeros(len(ACTION_UNITS))
    smile[ACTION_UNITS.index("AU12_lip_corner_pull")] = 1.0
    moved = apply_action_units(face, smile)
    assert moved[48, 1] < face[48, 1] and moved[54, 1] < face[54, 1]  # corners up
    assert moved[48, 0] < face[48, 0] and moved[54, 0] > face[54, 0]  # and outwards
    np.testing.assert_array_equal(moved[17:27], face[17:27])  # brows untouched
    jaw = np.zeros(len(ACTION_UNITS))
    jaw[ACTION_UNITS.index("AU26_jaw_drop")] = 1.0
    dropped = apply_action_units(face, jaw)
    assert dropped[66, 1] - dropped[62, 1] > face[66, 1] - face[62, 1] + 0.1  # mouth opens
    np.testing.assert_array_equal(apply_action_units(face, np.zeros(len(ACTION_UNITS))), face)


def test_learnable_but_not_trivially_separable():
    """A ridge classifier on raw pixels must beat chance clearly and stay far from perfect."""
    gen = SyntheticFaceGenerator(seed=0, size=32)

    def features(split, n):
        faces = gen.draw_batch(split, range(n))
        x = np.stack([f.image.mean(axis=2).ravel() / 255.0 for f in faces])
        return np.c_[x - x.mean(axis=1, keepdims=True), np.ones(n)], np.array([f.label for f in faces])

    x, y = features("train", 1400)
    xt, yt = features("test", 700)
    targets = np.eye(NUM_CLASSES)[y]
    w = np.linalg.solve(x.T @ x + 30.0 * np.eye(x.shape[1]), x.T @ targets)
    accuracy = (np.argmax(xt @ w, axis=1) == yt).mean()
    assert 1.5 / NUM_CLASSES < accuracy < 0.9, accuracy
