"""``udcbench predict`` throughput on CPU: photos per second, face detection included, at batch 1 and 64.

    python benchmarks/predict_speed.py [--photos 128] [--methods resnet18 lrdif] [--threads 2]

Each photo is 640 x 480 with one built-in face drawn at 200 px (what OpenCV's detector finds); the pipeline is
``udcbench predict``'s own (:class:`udcbench.predict.Predictor`): read, detect, crop as the training data, resize,
forward, softmax. The models are the ``quick`` preset's (48 px; LRDif the fair model) with random weights: the
speed does not depend on the weights. At batch 1 every photo goes through alone; at batch 64 the crops are
stacked. ``detection_share`` is the part of the time spent finding faces. Writes
``benchmarks/results/predict_speed.csv``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from udcbench.datasets import create_dataset
from udcbench.datasets.base import read_image
from udcbench.engine.runtime import runtime
from udcbench.faces import detect_face
from udcbench.methods import create_method, get_method
from udcbench.predict import Predictor

from _common import machine, report


def photos(folder: Path, count: int) -> list[Path]:
    faces = create_dataset("synthetic", n_train=count, n_test=1, size=200)
    paths = []
    for i, record in enumerate(faces.records("train")):
        canvas = np.full((480, 640, 3), 90, np.uint8)
        canvas[140:340, 250:450] = faces.load_image(record)
        path = folder / f"photo_{i:04d}.jpg"
        cv2.imwrite(str(path), canvas[..., ::-1])
        paths.append(path)
    return paths


def predictor(method: str) -> Predictor:
    config = get_method(method).config("quick")
    rt = runtime("cpu")
    model = rt.place(create_method(method, 7, config)).eval()
    return Predictor(model, config, tuple(create_dataset("synthetic").classes), 0.25, False, rt, "random weights")


def measure(p: Predictor, files: list[Path], batch: int) -> dict:
    detect_seconds, crops = 0.0, []
    start = time.perf_counter()
    found = 0
    for i, path in enumerate(files):
        image = read_image(path)
        t = time.perf_counter()
        box = detect_face(image)
        detect_seconds += time.perf_counter() - t
        if box is not None:
            found += 1
            crops.append(p.crop_at(image, list(box)))
        if len(crops) == batch or (i == len(files) - 1 and crops):
            p.probabilities(np.stack(crops), batch)
            crops = []
    seconds = time.perf_counter() - start
    return {"photos_per_second": round(len(files) / seconds, 1), "detection_share": round(detect_seconds / seconds, 3),
            "faces_found": f"{found}/{len(files)}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=128)
    parser.add_argument("--methods", nargs="+", default=["resnet18", "lrdif"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        files = photos(Path(tmp), args.photos)
        for method in args.methods:
            p = predictor(method)
            measure(p, files[:8], 8)  # warm-up
            for batch in (1, 64):
                rows.append({"method": method, "input_size": p.config.input_size, "batch": batch,
                             "threads": args.threads, **measure(p, files, batch), "machine": machine()})
    report("predict_speed", "udcbench predict on CPU: 640 x 480 photos, face detection included", rows)


if __name__ == "__main__":
    main()
