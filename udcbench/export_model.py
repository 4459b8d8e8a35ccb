"""``udcbench export-model``: a trained run as a file that runs without udcbench (TorchScript, or ONNX with the
``onnx`` extra), and beside it ``FILE.json``: the labels, the input size, the preprocessing (the crop margin,
grayscale) and the digest of the checkpoint it came from.

The exported graph takes ``N x 3 x S x S`` float32 RGB in [0, 1] (the face crop resized to S) and returns the
logits; the run's normalisation is inside it. It is checked after writing: the file's logits against the
PyTorch model's on the same input (within 1e-5 for TorchScript, 1e-4 for ONNX run by onnxruntime, where that
is installed). A model that samples at inference (LRDif's diffusion starts from noise) is compared with the
same seed for TorchScript; ONNX draws its own noise, so there the check is the predicted class's agreement.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import sys
import warnings
from contextlib import contextmanager, redirect_stdout
from pathlib import Path

import numpy as np
import torch
from torch import nn

from udcbench.errors import UdcbenchError
from udcbench.files import remove_stale_temporaries, temp_path, write_atomic, write_json
from udcbench.predict import Predictor

#: The format and the largest logit difference its check allows: TorchScript, torch.export's ExportedProgram (.pt2,
#: ``torch.export.load(path).module()``) and ONNX.
FORMATS = {"torchscript": 1e-5, "torch.export": 1e-5, "onnx": 1e-4}
CHECK_IMAGES = 8


class Normalised(nn.Module):
    """``(x - mean) / std`` then the model: the exported graph's input is the [0, 1] image."""

    def __init__(self, model: nn.Module, mean, std):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


@contextmanager
def _stdout_to_stderr():
    """Everything written to stdout inside, by Python or by native code, goes to stderr instead."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _samples(model: nn.Module, size: int) -> bool:
    """Whether the model draws random numbers at inference (two seeded calls differ), probed at the run's own input
    size (a model with a size-bound head, RUL's, takes no other)."""
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        torch.manual_seed(0)
        a = model(x)
        torch.manual_seed(1)
        b = model(x)
    return not torch.equal(a, b)


def export_model(target: Path, fmt: str, out: Path) -> dict:
    """Export the run at ``target`` to ``out`` in ``fmt``; returns the sidecar record (with the check's result)."""
    if fmt not in FORMATS:
        raise UdcbenchError(f"--format is {' or '.join(FORMATS)}, not '{fmt}'")
    if fmt == "onnx" and importlib.util.find_spec("onnx") is None:
        raise UdcbenchError("ONNX export needs the onnx package: pip install 'udcbench[onnx]' (or use --format "
                            "torchscript)")
    predictor = Predictor.load(target, "cpu")
    config = predictor.config
    wrapped = Normalised(predictor.model.float().eval(), config.mean, config.std).eval()
    size = config.input_size
    example = torch.rand(CHECK_IMAGES, 3, size, size, generator=torch.Generator().manual_seed(0))
    sampling = _samples(wrapped, size)
    meta = published_metadata(predictor, Path(target))
    embedded = json.dumps(meta, sort_keys=True)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out.parent, recursive=False)  # what a killed export left (14-33 MB each)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer and deprecation notes: the check below decides
        if fmt == "torchscript":
            traced = torch.jit.trace(wrapped, example[:1], check_trace=False)
            buffer = io.BytesIO()
            torch.jit.save(traced, buffer, _extra_files={METADATA: embedded})
            write_atomic(out, buffer.getvalue())
        elif fmt == "torch.export":
            try:
                program = torch.export.export(wrapped, (example[:2],),
                                              dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
            except Exception as exc:  # noqa: BLE001 - a graph torch.export cannot capture: one line
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                raise UdcbenchError(f"{config.method} does not export with torch.export ({first}); --format "
                                    "torchscript does") from None
            buffer = io.BytesIO()
            torch.export.save(program, buffer, extra_files={METADATA: embedded})
            write_atomic(out, buffer.getvalue())
        else:
            tmp = temp_path(out)
            try:
                with _stdout_to_stderr():  # a failing exporter dumps its graph on stdout: keep --json clean
                        torch.onnx.export(wrapped, (example[:1],), str(tmp), dynamo=False, input_names=["image"],
                                      output_names=["logits"],
                                      dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
            except Exception as exc:  # noqa: BLE001 - an operator the exporter lacks: one line
                tmp.unlink(missing_ok=True)
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                raise UdcbenchError(f"{config.method} does not export to ONNX ({first}); --format torchscript "
                                    "does") from None
            _label_onnx(tmp, meta)
            tmp.replace(out)
    check = _check(out, fmt, wrapped, example, sampling)
    record = {"format": fmt, "file": out.name, **meta, "samples_at_inference": sampling, "check": check}
    write_json(out.with_name(out.name + ".json"), record)
    return record


#: The name of the metadata every exported file carries (TorchScript and torch.export extra files; ONNX
#: ``metadata_props`` hold its keys).
METADATA = "udcbench.json"


def published_metadata(predictor: Predictor, target: Path) -> dict:
    """What an exported model needs to be used as it was evaluated, and nothing of this machine: the labels, the
    input, the normalisation inside, and the preprocessing step by step (detector settings, crop, resampling)."""
    config, size = predictor.config, predictor.config.input_size
    candidates = [target / "best.pt", target / "model" / "model.safetensors", target / "model.safetensors"]
    checkpoint = next((c for c in candidates if c.is_file()), target) if target.is_dir() else target
    steps = [
        "detect: the largest face box (x, y, w, h) by OpenCV's Haar cascades, haarcascade_frontalface_default.xml "
        "then haarcascade_profileface.xml (the image and its mirror), on the grayscale image shrunk to 320 px on its "
        "long side (cv2.INTER_AREA), detectMultiScale(scaleFactor=1.1, minNeighbors=5, minSize=that long side / 8)",
        *(["level: turn the image about the box's centre so that the eyes (dlib's 68 landmarks) are level"]
          if predictor.aligned else []),
        f"crop: the square of side round(max(w, h) * (1 + 2 * {predictor.margin})) centred on the box, at that side in "
        "pixels (cv2.warpAffine, INTER_AREA, BORDER_REPLICATE)",
        *(["grayscale: luma (cv2.COLOR_RGB2GRAY) repeated to three channels"] if predictor.grayscale else []),
        f"resize to {size} x {size}: cv2.INTER_AREA to shrink, cv2.INTER_CUBIC to enlarge",
        "scale to float32 in [0, 1], N x 3 x S x S RGB",
    ]
    return {
        "method": config.method, "source": target.name,
        "checkpoint_sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest(),
        "labels": list(predictor.classes), "input_size": size,
        "input": f"N x 3 x {size} x {size} float32 RGB in [0, 1]: the face crop, resized to {size} px",
        "normalisation_inside": {"mean": list(config.mean), "std": list(config.std)},
        "output": "logits (N x classes); softmax gives the probabilities",
        "preprocessing": {"face_margin": predictor.margin, "grayscale": predictor.grayscale,
                          "aligned_by_eyes": predictor.aligned, "steps": steps,
                          "detector": "OpenCV Haar cascade (haarcascade_frontalface_default.xml)"},
    }


def _label_onnx(path: Path, meta: dict) -> None:
    """The metadata as the ONNX file's ``metadata_props`` (strings: JSON for the structured ones)."""
    import onnx

    model = onnx.load(str(path))
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value)
    onnx.save(model, str(path))


def _check(path: Path, fmt: str, reference: nn.Module, x: torch.Tensor, sampling: bool) -> dict:
    """The exported file's output against the PyTorch model's on ``x``; refused beyond the format's tolerance."""
    tolerance = FORMATS[fmt]
    with torch.no_grad():
        torch.manual_seed(0)
        expected = reference(x).numpy()
    if fmt in ("torchscript", "torch.export"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit.load's deprecation note
            loaded = torch.jit.load(str(path)) if fmt == "torchscript" else torch.export.load(str(path)).module()
        with torch.no_grad():
            torch.manual_seed(0)
            got = loaded(x).numpy()
    elif importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(None, {"image": x.numpy()})[0]
    else:
        return {"compared": False, "why": "onnxruntime is not installed"}
    difference = float(np.abs(got - expected).max())
    agreement = float((got.argmax(1) == expected.argmax(1)).mean())
    if fmt == "onnx" and sampling:  # its own noise: the classes agree, the logits need not
        return {"compared": True, "images": len(x), "max_abs_difference": difference, "class_agreement": agreement,
                "note": "the model samples at inference; ONNX draws its own noise"}
    if not difference <= tolerance:
        path.unlink(missing_ok=True)
        raise UdcbenchError(f"the exported {fmt} model's logits differ from PyTorch's by {difference:.2e} (over "
                            f"{tolerance:.0e}): not written")
    return {"compared": True, "images": len(x), "max_abs_difference": difference, "tolerance": tolerance,
            "class_agreement": agreement}

