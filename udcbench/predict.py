"""``udcbench predict``: a trained run on your own photos. Per photo: the face (OpenCV's bundled Haar detector),
cropped as the run's training data was made (the dataset's margin around the face, grayscale for FERPlus),
resized to the run's input size as training resized its images, normalised as training did, and the class
probabilities. Nothing is written to the results store.

``crop="none"`` takes each image as the face crop it already is (a dataset's own images), which is what
``udcbench eval`` sees.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from udcbench.datasets import get_adapter_class
from udcbench.engine.data import resize_image
from udcbench.errors import UdcbenchError, UnreadableImageError
from udcbench.faces import detect_face, square_crop
from udcbench.files import printable, read_json
from udcbench.labels import label_names
from udcbench.photos import read_photo

CROPS = ("detect", "none")


@dataclass
class Predictor:
    """A trained model with the preprocessing of its training data."""

    model: object
    config: object
    classes: tuple[str, ...]
    margin: float
    grayscale: bool
    rt: object
    source: str  # the run folder or checkpoint
    detector: str = "haar"
    aligned: bool = False  # level the face by its eyes first, as the training data's faces are (RAF-DB)
    drawn: bool = False  # trained on udcbench's drawn faces: its answers on a real photo mean little

    @classmethod
    def load(cls, target: Path, device: str | None = None) -> Predictor:
        """From a run folder (its ``best.pt``), a checkpoint file of one, or a model folder (``model.safetensors`` and
        ``config.json``, :mod:`udcbench.model_files`)."""
        import torch

        from udcbench.checkpoints import load_checkpoint
        from udcbench.config import TrainConfig
        from udcbench.engine.runtime import runtime
        from udcbench.methods import create_method, get_method
        from udcbench.model_files import WEIGHTS, read_model_folder

        target = Path(target)
        path = target / "best.pt" if target.is_dir() else target
        rt = runtime(device)
        if target.is_dir() and not path.is_file() and (target / WEIGHTS).is_file():  # a published model folder
            tensors, meta = read_model_folder(target)
            state = {"model": tensors, "config": meta["udcbench_config"]}
            training = meta.get("training") or {}
            record = {"classes": list((meta.get("id2label") or {}).values()), "adapter": training.get("adapter"),
                      "precision": training.get("precision"), "dataset": training.get("dataset")}
        elif not path.is_file():
            raise UdcbenchError(f"{target}: no run folder with best.pt, model folder, nor a checkpoint file")
        else:
            state = load_checkpoint(path, rt.device)
            record = read_json(path.parent / "results.json") or {}
        if not isinstance(state.get("config"), dict) or "model" not in state:
            raise UdcbenchError(f"{path}: not a udcbench run's checkpoint (no config and model)")
        config = TrainConfig.from_json(state["config"])
        spec = get_method(config.method)
        if spec.oracle:
            raise UdcbenchError(f"{config.method} is an oracle (it needs the label as input): predict a model that "
                                "reads the image alone")
        counts = [len(record["classes"])] if record.get("classes") else [7, 8]
        for n in counts:  # the class count the checkpoint's classifier has
            model = create_method(config.method, n, config)
            try:
                model.load_state_dict(state["model"])
                break
            except RuntimeError:
                continue
        else:
            raise UdcbenchError(f"{path}: its weights fit no {config.method} model of 7 or 8 classes")
        classes = tuple(record.get("classes") or label_names(n))
        adapter = record.get("adapter")
        data = get_adapter_class(adapter).spec if adapter in _adapters() else None
        margin, grayscale = (data.face_margin, data.grayscale) if data else (0.25, False)
        if record.get("precision") in ("fp32", "bf16", "fp16"):  # predict as the run evaluated: its precision
            config = replace(config, amp=record["precision"] != "fp32")
        torch.manual_seed(config.seed)
        return cls(rt.place(model).eval(), config, classes, margin, grayscale, rt, str(target),
                   aligned=bool(data and data.aligned), drawn=record.get("dataset") == "synthetic")

    def crop(self, image: np.ndarray, crop: str = "detect") -> tuple[np.ndarray | None, list[int] | None]:
        """The model's uint8 input (S x S x 3) for a photo, and the face box; (None, None) when no face is found."""
        if crop == "none":
            return self._finish(image), None
        found = detect_face(image, self.detector)
        if found is None:
            return None, None
        box = [int(v) for v in found]
        return self.crop_at(image, box), box

    def crop_at(self, image: np.ndarray, box: list[int]) -> np.ndarray:
        """The model's input from the face at ``box`` (x, y, w, h), with the training data's margin; levelled by
        the eyes first where the training data's faces are aligned (:func:`eye_angle`)."""
        if self.aligned:
            angle = eye_angle(image)
            if angle is not None:
                import cv2

                centre = (box[0] + box[2] / 2, box[1] + box[3] / 2)
                turn = cv2.getRotationMatrix2D(centre, angle, 1.0)
                image = cv2.warpAffine(image, turn, image.shape[1::-1], flags=cv2.INTER_LINEAR,
                                       borderMode=cv2.BORDER_REPLICATE)
        side = int(round(max(box[2:]) * (1 + 2 * self.margin)))
        return self._finish(square_crop(image, tuple(box), side, self.margin))

    def _finish(self, face: np.ndarray) -> np.ndarray:
        if self.grayscale:  # luma, as a grayscale photo is made (FER2013's faces are)
            import cv2

            face = np.repeat(cv2.cvtColor(face, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
        return resize_image(face, self.config.input_size)

    def probabilities(self, faces: np.ndarray, batch: int = 64) -> np.ndarray:
        """Softmax probabilities (N x classes) of uint8 N x S x S x 3 inputs, ``batch`` at a time."""
        import torch

        from udcbench.engine.augment import eval_input

        out = []
        with torch.no_grad():
            for i in range(0, len(faces), batch):
                x = eval_input(torch.from_numpy(np.ascontiguousarray(faces[i : i + batch])).to(self.rt.device),
                               self.config)
                with self.rt.autocast(self.config.amp):
                    logits = self.model(x)
                out.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)))


def _adapters() -> set[str]:
    from udcbench.datasets import dataset_names

    return set(dataset_names())


def predict_files(predictor: Predictor, files: list[Path], crop: str = "detect", recipe=None, seed: int = 0,
                  batch: int = 64) -> list[dict]:
    """One row per photo: the face box, the probabilities and the class; with ``recipe`` also those of the photo
    degraded by that panel (at its face scale, the face box of the clean photo)."""
    if crop not in CROPS:
        raise UdcbenchError(f"--crop is {' or '.join(CROPS)}, not '{crop}'")
    rows, faces, degraded = [], [], []
    for path in files:
        try:
            image = read_photo(path)
        except UnreadableImageError as exc:  # a bad photo is a row that says so; the others are still predicted
            rows.append({"file": printable(str(path)), "face": "unreadable", "box": None, "error": exc.reason})
            continue
        face, box = predictor.crop(image, crop)
        row = {"file": printable(str(path)), "face": "whole image" if crop == "none" else "detected" if face is not None
               else "none found", "box": box}
        rows.append(row)
        if face is None:
            continue
        faces.append(face)
        if recipe is not None:
            from udcbench.photos import degrade_photo

            damaged = degrade_photo(image, recipe, seed, name=path.name).image
            degraded.append(predictor.crop(damaged, "none")[0] if crop == "none" else predictor.crop_at(damaged, box))
    found = [row for row in rows if row["face"] not in ("none found", "unreadable")]
    for key, inputs in (("", faces), ("panel_", degraded)):
        if not inputs:
            continue
        for row, p in zip(found, predictor.probabilities(np.stack(inputs), batch)):
            row[f"{key}probabilities"] = {c: round(float(v), 6) for c, v in zip(predictor.classes, p)}
            row[f"{key}predicted"] = predictor.classes[int(p.argmax())]
    return rows


def eye_angle(image: np.ndarray) -> float | None:
    """The slope of the line through the eyes, in degrees (image coordinates): dlib's 68 landmarks of the largest
    face. None where the ``landmarks`` extra is not installed or no face is found (the crop is then not levelled)."""
    from udcbench.landmarks import detect_landmarks_dlib, dlib_available

    if not dlib_available():
        return None
    points = detect_landmarks_dlib(image)
    if points is None:
        return None
    left, right = points[36:42].mean(axis=0), points[42:48].mean(axis=0)
    return float(np.degrees(np.arctan2(right[1] - left[1], right[0] - left[0])))
