"""The ResNet-18 backbone shared by the baselines, and MS-Celeb-1M weight loading (local files only)."""

from __future__ import annotations

import hashlib
import pickle
import warnings
from pathlib import Path

import torch
import torchvision
from torch import nn


class WeightsError(ValueError):
    """A weights file that cannot be loaded as a ResNet-18."""


def resnet18_trunk() -> nn.Sequential:
    """torchvision's ResNet-18 up to layer4 (output: B x 512 x H/32 x W/32), randomly initialised."""
    net = torchvision.models.resnet18(weights=None)
    return nn.Sequential(*list(net.children())[:-2])


def resnet50_trunk() -> nn.Sequential:
    """torchvision's ResNet-50 up to layer4 (output: B x 2048 x H/32 x W/32), randomly initialised; ``--weights``
    loads a torchvision-named ResNet-50 into it as :func:`load_resnet18_weights` does a ResNet-18."""
    net = torchvision.models.resnet50(weights=None)
    return nn.Sequential(*list(net.children())[:-2])


def trunk_maps(trunk: nn.Sequential, x: torch.Tensor) -> list[torch.Tensor]:
    """The outputs of layer2, layer3 and layer4 (128, 256, 512 channels at strides 8, 16, 32) of a
    :func:`resnet18_trunk`, in one pass."""
    x = trunk[:6](x)
    maps = [x]
    for layer in trunk[6:]:
        maps.append(layer(maps[-1]))
    return maps


def sha256_file(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _unwrap(state: dict) -> dict:
    for key in ("state_dict", "model_state_dict", "model", "net"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict):
        raise WeightsError("the file does not hold a state dict")
    out = {}
    for key, value in state.items():
        for prefix in ("module.", "backbone.", "features."):
            if key.startswith(prefix):
                key = key[len(prefix) :]
        out[key] = value
    return out


def load_resnet18_weights(trunk: nn.Sequential, path: Path | str) -> dict:
    """Load torchvision-named ResNet-18 weights (e.g. MS-Celeb-1M) into ``trunk`` strictly (a trunk cut after
    layer N takes the file's layers up to N).

    Accepts ``state_dict`` / ``model`` wrappers and ``module.`` prefixes; the classifier (``fc.*``) is
    ignored. Raises :class:`WeightsError` listing missing or unexpected keys. Returns provenance.
    """
    path = Path(path)
    state = {k: v for k, v in _unwrap(read_checkpoint(path)).items() if not k.startswith("fc.")}
    names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    renamed = {}
    for key, value in state.items():
        head = key.split(".", 1)[0]
        if head not in names:
            renamed[key] = value  # reported as unexpected below
            continue
        renamed[f"{names.index(head)}.{key.split('.', 1)[1]}"] = value
    # a trunk that is a prefix of ResNet-18 (MANet keeps conv1 ... layer2) takes the file's first layers only
    renamed = {k: v for k, v in renamed.items() if not k[0].isdigit() or int(k.split(".", 1)[0]) < len(trunk)}
    return load_strictly(trunk, renamed, path, "a torchvision ResNet-18")


def read_checkpoint(path: Path) -> object:
    """A weights file's content, read tensors-only; :class:`WeightsError` when absent or unreadable."""
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path} (pass --weights FILE with a local checkpoint)")
    try:
        with warnings.catch_warnings():  # torch's advice on pickle protocols: the one-line error below says it all
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise WeightsError(f"{path}: refused, not a tensors-only checkpoint (loading it would unpickle Python "
                           "objects, which can run code; save the model's state_dict with torch.save)") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({first})") from None


def load_strictly(module: nn.Module, state: dict, path: Path, what: str) -> dict:
    """Load ``state`` into ``module`` strictly, naming missing and unexpected keys (``what`` the file should
    be); returns the provenance the run records."""
    expected = set(module.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise WeightsError(f"{path}: not {what} ({len(missing)} missing keys, e.g. {missing[:3]}; "
                           f"{len(unexpected)} unexpected, e.g. {unexpected[:3]})")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"{path}: {str(exc).splitlines()[0]}") from None
    return {"init": str(path), "weights_sha256": sha256_file(path)}
