"""LLDif (Wang, Zhang, Sankaranarayana, "LLDif: Diffusion Models for Low-light Emotion Recognition", arXiv
2408.04235, ICPR 2024): LRDif's recipe for extremely low-light faces, on the same machinery (:mod:`lrdif.model`).

What LLDif changes, and nothing else:

- **LA-CLIP, the label-aware joint prior.** Stage 1's prior (the embedding prior distribution, EPD, Z) comes
  from the image, an image caption and the label together: PNET (LRDif's FPEN_S1, the same layers, a third
  input) on ``concat(E_L(label), E_I(image), E_C(caption))``. With open_clip weights E_I is the image tower
  and E_C, E_L the text tower on the caption and the label prompt; without them the trunk's pooled feature
  and learned embeddings, as LRDif.
- **Captions.** Our datasets have none, so each image's caption is generated from what the data says: its
  brightness after degradation (the mean luma of the input), in five steps from "an extremely dark photo of
  a face" to "a photo of a face" (:data:`CAPTIONS`, :func:`caption_index`). ``captions=False`` gives every
  image the "no caption" embedding instead: the caption ablation, and the only thing it changes is the prior.
- **LLformer** = LRDif's UDCformer: DTNet is its DT blocks (DGNet + DMNet, Z-modulated), DLNet its DIL blocks,
  here with cross-window attention (``window``, 4 by default; padded keys masked), then the same
  transformer fusion.
- **Stage 2** as LRDif: the diffusion infers the EPD from the low-light image alone (no label, no caption),
  L_total = L_ce + L_kl.

Where the paper is silent (its full text is not at hand) LRDif's choices stand; docs/lrdif.md lists them.
"""

from __future__ import annotations

import torch
from torch import nn

from lrdif.encoders import ClipEncoders
from lrdif.model import LRDif

#: The generated captions, darkest first, and the mean luma (sRGB, 0-1) below which each applies.
CAPTIONS = ("an extremely dark photo of a face", "a very dark photo of a face", "a dark photo of a face",
            "a dim photo of a face", "a photo of a face")
CAPTION_LUMA = (0.05, 0.10, 0.20, 0.35)


def caption_index(images: torch.Tensor, mean, std) -> torch.Tensor:
    """The caption of each normalised image (B, 3, H, W): its row of :data:`CAPTIONS` by mean luma."""
    m = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    s = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    rgb = (images * s + m).clamp(0, 1)
    luma = (0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]).mean(dim=(1, 2))
    edges = torch.tensor(CAPTION_LUMA, dtype=luma.dtype, device=luma.device)
    return torch.bucketize(luma, edges, right=True)


class LLDif(LRDif):
    """LRDif with the LA-CLIP prior (image, caption and label) and windowed cross-attention in its LLformer."""

    def __init__(self, num_classes: int, captions: bool = True, window: int | None = 4, mean=(0.5,) * 3,
                 std=(0.5,) * 3, z_dim: int = 256, **kw):
        super().__init__(num_classes, window=window, mean=mean, std=std, z_dim=z_dim, **kw)
        self.captions = captions
        self.register_buffer("in_mean", torch.tensor(mean, dtype=torch.float32), persistent=False)
        self.register_buffer("in_std", torch.tensor(std, dtype=torch.float32), persistent=False)
        dim = self.encoders.dim
        if isinstance(self.encoders, ClipEncoders):  # the text tower on each caption, frozen; last row: none
            tokens = self.encoders.tokenize(list(CAPTIONS))
            with torch.no_grad():
                text = self.encoders.model.encode_text(tokens).float()
            self.register_buffer("caption_text", torch.cat([text, torch.zeros_like(text[:1])]))
            self.caption_embedding = None
        else:
            self.caption_embedding = nn.Embedding(len(CAPTIONS) + 1, dim)  # last row: no caption
        self.fpen_s1 = type(self.fpen_s1)(3 * dim, z_dim)  # PNET: label, image and caption

    def captions_of(self, x: torch.Tensor) -> torch.Tensor:
        """Each image's caption row, or the "no caption" row for all with ``captions=False``."""
        if not self.captions:
            return torch.full((len(x),), len(CAPTIONS), dtype=torch.long, device=x.device)
        return caption_index(x, self.in_mean, self.in_std)

    def encode_caption(self, index: torch.Tensor) -> torch.Tensor:
        if self.caption_embedding is None:
            return self.caption_text[index]
        return self.caption_embedding(index)

    def prior(self, e_image: torch.Tensor, labels: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """The EPD Z from the image's embedding, its caption (from ``x``) and the label (``num_classes`` = none)."""
        if x is None:
            raise ValueError("LLDif's prior reads each image's caption: it needs the images")
        caption = self.encode_caption(self.captions_of(x))
        return self.fpen_s1(torch.cat([self.encoders.encode_label(labels), e_image, caption], dim=1))

    def load_stage1(self, state: dict) -> None:
        super().load_stage1(state)
        if self.caption_embedding is not None:
            self.caption_embedding.load_state_dict({"weight": state["caption_embedding.weight"]})

    def train(self, mode: bool = True):
        """As LRDif; stage 2 also freezes the caption embedding (it only feeds the frozen prior)."""
        super().train(mode)
        if self.variant.stage == 2 and self.caption_embedding is not None:
            self.caption_embedding.eval().requires_grad_(False)
        return self
