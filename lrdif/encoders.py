"""Encoders E_I (image) and E_L (label text) and the FPENs (the landmark network is shared with POSTER++:
:mod:`baselines.landmarks`).

- ``scratch`` (default without CLIP weights): E_I is the ResNet-18 trunk's pooled feature (one trunk for
  everything) and E_L a learned label embedding of the same width.
- ``clip``: open_clip's image and text towers, frozen, loaded from a local checkpoint only; the
  label text is "a photo of a face showing <emotion>". Nothing is ever downloaded. The image tower's
  embeddings of the training images are cached by their position in the training set (the first
  augmented view seen stands for the image), so a CPU run does not spend its time in the frozen tower.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from udcbench.labels import label_names

PROMPT = "a photo of a face showing {}"
EMOTION_WORDS = {"neutral": "no emotion (a neutral face)", "happiness": "happiness", "surprise": "surprise",
                 "sadness": "sadness", "anger": "anger", "disgust": "disgust", "fear": "fear", "contempt": "contempt"}
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ClipWeightsError(FileNotFoundError):
    """CLIP weights that are not on this machine."""


class LearnedEncoders(nn.Module):
    """Without CLIP: E_I is the trunk's pooled feature (given by the model, nothing here) and E_L a learned
    embedding per class, plus one for "no label" (stage 1's label dropout)."""

    kind = "scratch"
    encodes_images = False

    def __init__(self, num_classes: int, dim: int = 512):
        super().__init__()
        self.dim = dim
        self.label = nn.Embedding(num_classes + 1, dim)

    def encode_label(self, y: torch.Tensor) -> torch.Tensor:
        """``y`` in 0..C, C meaning no label."""
        return self.label(y)


class ClipEncoders(nn.Module):
    """Frozen open_clip towers. Images arrive normalised with the dataset mean/std and are re-normalised
    and resized to the tower's input size here."""

    kind = "clip"
    encodes_images = True

    def __init__(self, num_classes: int, model_name: str, weights: str | Path, mean, std):
        super().__init__()
        import open_clip

        weights = Path(weights).expanduser()
        if not weights.is_file():
            raise ClipWeightsError(
                f"CLIP weights not found: {weights}. Pass a local open_clip checkpoint for {model_name} with "
                "--clip FILE (nothing is downloaded), or use --set method_args.encoder=scratch")
        model = open_clip.create_model(model_name, pretrained=str(weights))
        model.eval().requires_grad_(False)
        tokenizer = open_clip.get_tokenizer(model_name)
        prompts = [PROMPT.format(EMOTION_WORDS[n]) for n in label_names(num_classes)]
        with torch.no_grad():
            text = model.encode_text(tokenizer(prompts)).float()
        self.model = model
        self.tokenize = tokenizer  # more text for the towers (LLDif's captions)
        self.register_buffer("text", torch.cat([text, torch.zeros_like(text[:1])]))  # last row: no label
        self.dim = text.shape[1]
        self.size = model.visual.image_size if isinstance(model.visual.image_size, int) else model.visual.image_size[0]
        self.register_buffer("in_mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("in_std", torch.tensor(std).view(1, 3, 1, 1))
        self.register_buffer("clip_mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1))
        self.register_buffer("clip_std", torch.tensor(CLIP_STD).view(1, 3, 1, 1))
        self._cache: dict[int, torch.Tensor] = {}  # training-set position -> image embedding (not saved)

    def train(self, mode: bool = True):  # always frozen
        super().train(mode)
        self.model.eval()
        return self

    @torch.no_grad()
    def encode_image(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """E_I(x); with ``index`` (training-set positions) cached per image. Pass the positions on the CPU (the
        engine's ``Batch.positions``): reading them is then no device sync."""
        if index is not None:
            keys = index.tolist()
            missing = [i for i, key in enumerate(keys) if key not in self._cache]
            if missing:
                for i, e in zip(missing, self.encode_image(x[missing])):
                    self._cache[keys[i]] = e
            return torch.stack([self._cache[key] for key in keys])
        rgb = x * self.in_std + self.in_mean
        rgb = F.interpolate(rgb, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return self.model.encode_image((rgb - self.clip_mean) / self.clip_std).float()

    def encode_label(self, y: torch.Tensor) -> torch.Tensor:
        return self.text[y]


class FPEN(nn.Module):
    """A few linear layers (LeakyReLU 0.1) giving the EPR Z of width ``dim``, normalised to unit RMS (norm
    sqrt(dim)) so that its scale cannot grow; S1 and S2 differ only in their first layer's input width."""

    def __init__(self, in_dim: int, dim: int = 256, layers: int = 3):
        super().__init__()
        blocks: list[nn.Module] = [nn.Linear(in_dim, dim), nn.LeakyReLU(0.1)]
        for _ in range(layers - 2):
            blocks += [nn.Linear(dim, dim), nn.LeakyReLU(0.1)]
        blocks.append(nn.Linear(dim, dim))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x), dim=1) * self.net[-1].out_features**0.5
