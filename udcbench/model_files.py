"""A run's best weights as the field loads them: ``<run>/model/model.safetensors`` beside a ``config.json`` (the
architecture, ``id2label``, the input and its preprocessing, the training data and budget), as timm's
``pretrained_cfg`` and Hugging Face's model folders are; ``udcbench predict`` reads the folder, and so can ten
lines of plain torch (docs/photos.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from udcbench.errors import UdcbenchError
from udcbench.files import write_atomic

#: The folder in a run that holds the published model.
MODEL_FOLDER = "model"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def write_model_folder(run_dir: Path, record: dict[str, Any], state: dict[str, Any], face_margin: float,
                       grayscale: bool, aligned: bool) -> Path:
    """``run_dir/model/``: the weights of ``state`` (the run's best checkpoint) as safetensors and their
    ``config.json``; returns the folder."""
    from safetensors.torch import save

    config = state["config"]
    classes = list(record["classes"])
    folder = Path(run_dir) / MODEL_FOLDER
    tensors = {k: v.detach().cpu().contiguous() for k, v in state["model"].items()}
    meta = {
        "library_name": "udcbench", "architecture": config["method"], "title": record.get("method_title"),
        "num_classes": len(classes), "id2label": dict(enumerate(classes)),
        "label2id": {name: i for i, name in enumerate(classes)},
        "input_size": config["input_size"], "mean": list(config["mean"]), "std": list(config["std"]),
        "input": "RGB uint8 face crop resized to input_size (cv2 INTER_AREA to shrink, INTER_CUBIC to enlarge), then "
                 "(x / 255 - mean) / std, N x 3 x S x S",
        "interpolation": {"shrink": "area", "enlarge": "bicubic"},
        "crop": {"face_margin": face_margin, "grayscale": grayscale, "aligned_by_eyes": aligned,
                 "detector": "OpenCV Haar cascade (haarcascade_frontalface_default.xml)"},
        "training": {"dataset": record.get("dataset"), "adapter": record.get("adapter"),
                     "condition": record.get("condition"), "budget": config.get("preset"), "seed": config.get("seed"),
                     "epoch": record.get("best_epoch"), "precision": record.get("precision"),
                     "init": Path(str(record.get("init"))).name, "git_commit": record.get("git_commit")},
        "udcbench_config": config,
    }
    write_atomic(folder / WEIGHTS, save(tensors, metadata={"format": "pt"}))
    write_atomic(folder / CONFIG, json.dumps(meta, indent=2, default=str) + "\n")
    return folder


def read_model_folder(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The state dict and the ``config.json`` of a model folder; one line when either is missing or unreadable."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    try:
        meta = json.loads((folder / CONFIG).read_text())
        tensors = load_file(str(folder / WEIGHTS))
    except (OSError, ValueError, SafetensorError) as exc:
        raise UdcbenchError(f"{folder}: not a udcbench model folder ({WEIGHTS} and {CONFIG}): {exc}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("udcbench_config"), dict):
        raise UdcbenchError(f"{folder}/{CONFIG}: no udcbench_config")
    return tensors, meta
