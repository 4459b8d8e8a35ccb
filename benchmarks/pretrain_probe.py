"""What a face pre-training teaches: linear probes from its target, and from its frozen trunk, to the expression.

    python benchmarks/pretrain_probe.py [--workspace DIR] [--tasks identity landmarks]

For each candidate pre-training (``udcbench pretrain --task identity``, the quick study's, and ``--task
landmarks``, the one it replaced) two logistic-regression probes are fitted on the quick study's training faces
(the built-in dataset's train split, seed 0, 2,800 faces) and scored on its test faces (700, balanced: chance
is 1/7):

- ``target``: from what the pre-training learns to predict (the identity's draws: face shape and colouring;
  or the 68 landmarks, pose removed by a similarity alignment to the mean face) to the expression. A
  pre-training that teaches the label under another name scores far above chance here.
- ``features``: from the frozen trunk's pooled 512-d feature of the 48-px face to the expression (MS-Celeb
  features carry some expression too: this says how much the stand-in does).

Writes ``benchmarks/results/pretrain_probe.csv`` (pretraining, shipped, probe, accuracy, chance, fitted_on,
scored_on, commit). About 5 minutes on 2 cores (each pre-training trains once per workspace).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from udcbench.config import IMAGENET_MEAN, IMAGENET_STD
from udcbench.datasets.generate import DEFAULT_COUNTS
from udcbench.datasets.synthetic_faces import IDENTITY_DRAWS, NUM_CLASSES, SyntheticFaceGenerator
from udcbench.engine.augment import to_input
from udcbench.engine.data import resize_image
from udcbench.engine.records import git_commit
from udcbench.pretrain import FacePretraining, pretrained_trunk
from udcbench.reproduce import STUDY_PRESETS

from _common import report

SHIPPED = STUDY_PRESETS["quick"].pretrain


def study_faces(split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The quick study's faces of ``split`` at its input size, their labels, landmarks and identity draws."""
    generator = SyntheticFaceGenerator(seed=0)
    indices = np.arange(DEFAULT_COUNTS[split])
    faces = [face for start in range(0, len(indices), 250)
             for face in generator.draw_batch(split, indices[start:start + 250])]
    draws, _ = generator.image_draws(split, indices)
    images = np.stack([resize_image(f.image, SHIPPED.input_size) for f in faces])
    return (images, np.array([f.label for f in faces]), np.stack([f.landmarks for f in faces]),
            np.stack([draws[name] for name in IDENTITY_DRAWS], 1))


def aligned(points: np.ndarray) -> np.ndarray:
    """Landmarks with translation, scale and rotation removed (Procrustes onto their mean shape)."""
    centred = points - points.mean(axis=1, keepdims=True)
    centred /= np.linalg.norm(centred, axis=(1, 2), keepdims=True)
    mean = centred.mean(axis=0)
    out = []
    for p in centred:
        u, _, vt = np.linalg.svd(p.T @ mean)
        out.append(p @ (u @ vt))
    return np.stack(out).reshape(len(points), -1)


def trunk_features(weights: Path, images: np.ndarray) -> np.ndarray:
    import torchvision

    net = torchvision.models.resnet18()
    net.fc = torch.nn.Identity()
    net.load_state_dict(torch.load(weights, weights_only=True), strict=False)
    net.eval()
    with torch.no_grad():
        return torch.cat([net(to_input(torch.from_numpy(images[i:i + 256]), IMAGENET_MEAN, IMAGENET_STD))
                          for i in range(0, len(images), 256)]).numpy()


def probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> float:
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return 100 * float((model.fit(train_x, train_y).predict(test_x) == test_y).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, help="where the pre-trainings are kept (default: temporary)")
    parser.add_argument("--tasks", nargs="+", default=["identity", "landmarks"])
    args = parser.parse_args()
    train, test = study_faces("train"), study_faces("test")
    targets = {"identity": (train[3], test[3]), "landmarks": (aligned(train[2]), aligned(test[2]))}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = args.workspace or Path(tmp)
        for task in args.tasks:
            recipe = FacePretraining(**{**vars(SHIPPED), "task": task}) if task != SHIPPED.task else SHIPPED
            weights = pretrained_trunk(root / recipe.folder_name(), recipe, "cpu")
            features = trunk_features(weights, train[0]), trunk_features(weights, test[0])
            for kind, (x_train, x_test) in (("target", targets[task]), ("features", features)):
                rows.append({"pretraining": task, "shipped": int(recipe == SHIPPED), "probe": kind,
                             "accuracy": probe(x_train, train[1], x_test, test[1]), "chance": 100 / NUM_CLASSES,
                             "fitted_on": "quick study train (2800)", "scored_on": "quick study test (700)",
                             "commit": git_commit()})
    report("pretrain_probe", "Linear probes to the expression from a face pre-training's target and features", rows)


if __name__ == "__main__":
    main()
