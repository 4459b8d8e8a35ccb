"""The interface every FER method implements, so that one training loop runs them all."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Batch:
    images: torch.Tensor  # B x 3 x H x W, normalised
    labels: torch.Tensor  # B, canonical class indices (possibly relabelled)
    index: torch.Tensor  # B, positions in the training set (for relabelling)
    soft: torch.Tensor | None = None  # B x C vote distributions, when the dataset has them
    #: The same positions on the CPU, as the loader gave them: reading them never waits for the device (the CLIP
    #: cache's keys). None where the caller has only ``index``.
    host_index: torch.Tensor | None = None

    @property
    def positions(self) -> torch.Tensor:
        """The positions to read on the host: ``host_index`` where given (and still on the CPU), else ``index``."""
        host = self.host_index
        return host if host is not None and host.device.type == "cpu" else self.index


@dataclass
class StepOutput:
    loss: torch.Tensor
    logits: torch.Tensor
    #: Each loss term, detached, for the logs: the engine adds them up on the device and reads them at log time
    #: (an ``.item()`` here would make the host wait for the GPU at every step).
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    #: (training-set positions, new labels) to write back into the dataset (SCN's relabelling); a new label of -1
    #: keeps the old one.
    relabel: tuple[torch.Tensor, torch.Tensor] | None = None


def cross_entropy(logits: torch.Tensor, batch: Batch, smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy against the batch's vote distributions where it has them, else its labels."""
    if batch.soft is not None:
        return -(batch.soft * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    return F.cross_entropy(logits, batch.labels, label_smoothing=smoothing)


class FERModel(nn.Module):
    """``forward(x)`` gives the test-time logits; ``training_step`` the loss and its terms."""

    #: Run in NHWC (``torch.channels_last``): CNNs train ~20 % faster so on CPU (oneDNN) and GPU.
    channels_last: bool = False
    #: One 32-bit key per image of the batch being evaluated (``baselines.randomness.image_keys``), set by the
    #: engine around inference: a model that samples draws each image's noise from its key, so its result does not
    #: depend on the batch or the number of ranks. None: the global generator.
    sample_keys: torch.Tensor | None = None

    def training_step(self, batch: Batch, epoch: int) -> StepOutput:
        raise NotImplementedError

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (for t-SNE and analysis)."""
        raise NotImplementedError

    def load_backbone_weights(self, path) -> dict:
        """``--weights``: load a face-recognition checkpoint into the backbone, by default a torchvision-named
        ResNet-18 into ``self.trunk`` (:func:`~baselines.backbone.load_resnet18_weights`). Returns provenance
        (``init``, ``weights_sha256``); raises :class:`~baselines.backbone.WeightsError`."""
        from baselines.backbone import load_resnet18_weights

        return load_resnet18_weights(self.trunk, path)

    def set_schedule(self, epochs: int) -> None:
        """Called once with the number of training epochs (methods with epoch-based switches)."""
