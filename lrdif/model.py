"""LRDif (Wang, Zhang, Sankaranarayana, arXiv 2402.00250): two-stage diffusion label restoration, on the
ResNet-18 trunk the baselines use.

One trunk: its layer2-4 maps feed the UDCformer and its pooled feature is E_I (without CLIP). Stage 1:
``Z = FPEN_S1(concat(E_L(y), E_I(x)))`` guides the UDCformer; trained with cross-entropy. Its accuracy
is an oracle (the label is an input). With probability ``label_dropout`` a training image's label is
replaced by "no label", so that the UDCformer and the trunk also learn to classify from the image
(without it stage 2 started from a worse model: docs/lrdif.md). Stage 2:
FPEN_S1 and E_L are frozen and give ``Z`` (from the trunk's features, detached); ``Z`` is forward-noised
to ``Z_T`` and the whole reverse chain, conditioned on ``x_S2 = FPEN_S2(E_I(x))``, estimates it; the
trunk and UDCformer (initialised from stage 1) classify with the estimate. Loss ``L_ce + L_kl`` with
``L_kl = KL(softmax(Z / tau) || softmax(Z_hat / tau))``, Z at unit RMS. At inference the chain starts
from Gaussian noise: no label anywhere.

Two models: the paper's (``encoder="clip"``: CLIP's frozen image and text towers as E_I and E_L, from a local
open_clip checkpoint; ``layout="unet"``: the DT blocks U-Net style over the trunk's scales; no label dropout)
and the fair one on the shared ResNet-18 trunk (``encoder="scratch"``: the trunk's pooled feature and learned
label embeddings; ``layout="sequence"``; label dropout 0.5), which the shared budgets compare with the baselines.

Table 5 variants: ``s1`` (the oracle), ``s2-v1`` (no diffusion: Z_hat = x_S2, L_ce), ``s2-v2``
(diffusion, L_ce), ``s2-v3`` (diffusion, L_total, noise inserted in each reverse step: the paper's
model), ``s2-v4`` (diffusion, L_total, deterministic reverse steps).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from baselines.backbone import resnet18_trunk, trunk_maps
from baselines.base import Batch, FERModel, StepOutput
from baselines.landmarks import LANDMARK_DIMS, LandmarkNet
from lrdif.diffusion import EPRDiffusion
from lrdif.encoders import FPEN, ClipEncoders, LearnedEncoders
from lrdif.udcformer import TRUNK_DIMS, UDCformer


@dataclass(frozen=True)
class Variant:
    stage: int
    diffusion: bool = True
    kl: bool = True
    insert_noise: bool = True


VARIANTS: dict[str, Variant] = {
    "s1": Variant(stage=1, diffusion=False, kl=False, insert_noise=False),
    "s2-v1": Variant(stage=2, diffusion=False, kl=False, insert_noise=False),
    "s2-v2": Variant(stage=2, diffusion=True, kl=False, insert_noise=False),
    "s2-v3": Variant(stage=2, diffusion=True, kl=True, insert_noise=True),
    "s2-v4": Variant(stage=2, diffusion=True, kl=True, insert_noise=False),
}


def kl_loss(z: torch.Tensor, z_hat: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``sum_i p(i) log(p(i) / q(i))`` over the C dimensions, p = softmax(Z/tau), q = softmax(Z_hat/tau);
    averaged over the batch."""
    log_p = F.log_softmax(z / temperature, dim=1)
    log_q = F.log_softmax(z_hat / temperature, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1).mean()


class LRDif(FERModel):
    channels_last = True

    def __init__(self, num_classes: int, variant: str = "s2-v3", steps: int = 4, z_dim: int = 256, width: int = 64,
                 parameterization: str = "x0", kl_temperature: float = 1.0, encoder: str = "scratch",
                 clip_model: str = "ViT-B-32", clip_weights: str | None = None, mean=(0.5,) * 3, std=(0.5,) * 3,
                 blocks: tuple[int, int, int] = (1, 1, 1), token_dim: int = 128, tokens_per_scale: int = 2,
                 depth: int = 2, window: int | None = None, label_dropout: float = 0.5, label_smoothing: float = 0.0,
                 layout: str = "sequence", head: str = "udcformer",
                 landmark_dims: tuple[int, int, int] = LANDMARK_DIMS):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown LRDif variant '{variant}' (known: {', '.join(VARIANTS)})")
        if not 0 <= label_dropout < 1:
            raise ValueError(f"label_dropout is in [0, 1), not {label_dropout}")
        self.variant_name, self.variant = variant, VARIANTS[variant]
        self.num_classes = num_classes
        self.trunk = resnet18_trunk()
        if encoder == "clip":
            self.encoders = ClipEncoders(num_classes, clip_model, clip_weights or "", mean, std)
        elif encoder == "scratch":
            self.encoders = LearnedEncoders(num_classes, TRUNK_DIMS[-1])
        else:
            raise ValueError(f"encoder is 'clip' or 'scratch', not '{encoder}'")
        e_dim = self.encoders.dim
        self.fpen_s1 = FPEN(2 * e_dim, z_dim)
        self.fpen_s2 = FPEN(e_dim, z_dim)
        self.diffusion = EPRDiffusion(z_dim, steps, parameterization)
        self.udcformer = UDCformer(num_classes, z_dim, TRUNK_DIMS, tuple(landmark_dims), width, tuple(blocks),
                                   token_dim=token_dim, tokens_per_scale=tokens_per_scale, depth=depth, window=window,
                                   layout=layout, head=head)
        self.landmarks = LandmarkNet(tuple(landmark_dims))
        self.kl_temperature, self.label_dropout, self.label_smoothing = kl_temperature, label_dropout, label_smoothing

    # -- what the engine asks ----------------------------------------------------------------------
    @property
    def uses_labels_at_eval(self) -> bool:
        """Stage 1 is an oracle: its evaluation feeds the label in."""
        return self.variant.stage == 1

    def _image(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, list[torch.Tensor]]:
        """The trunk's maps, its pooled feature and the frozen landmark network's maps."""
        maps = trunk_maps(self.trunk, x)
        with torch.no_grad():  # the small landmark CNN runs twice as fast on NCHW input as on NHWC on CPU
            landmarks = self.landmarks.features(x.contiguous())
        return maps, F.adaptive_avg_pool2d(maps[-1], 1).flatten(1), landmarks

    def _e_image(self, x: torch.Tensor, pooled: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        return self.encoders.encode_image(x, index) if self.encoders.encodes_images else pooled

    def prior(self, e_image: torch.Tensor, labels: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """Stage 1's EPR Z from E_I(x) and the label (``num_classes`` = no label); ``x``, the images, for
        priors that read more of them (LLDif's caption)."""
        return self.fpen_s1(torch.cat([self.encoders.encode_label(labels), e_image], dim=1))

    def estimate(self, e_image: torch.Tensor) -> torch.Tensor:
        """Stage 2 at inference: the EPR estimated from the image alone."""
        condition = self.fpen_s2(e_image)
        if not self.variant.diffusion:
            return condition
        return self.diffusion.sample(condition, insert_noise=self.variant.insert_noise, keys=self.sample_keys)

    def _features(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        maps, pooled, landmarks = self._image(x)
        e_image = self._e_image(x, pooled)
        if self.variant.stage == 1:
            if labels is None:
                raise ValueError("LRDif stage 1 is an oracle: it needs the labels")
            z = self.prior(e_image, labels, x)
        else:
            z = self.estimate(e_image)
        return self.udcformer.features(maps, pooled, z, landmarks)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.udcformer.head(self._features(x, labels))

    def embed(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self._features(x, labels)

    def training_step(self, batch: Batch, epoch: int) -> StepOutput:
        x, y = batch.images, batch.labels
        maps, pooled, landmarks = self._image(x)
        e_image = self._e_image(x, pooled, batch.positions)
        if self.variant.stage == 1:
            dropped = torch.rand(y.shape, device=y.device) < self.label_dropout
            z = self.prior(e_image, torch.where(dropped, torch.full_like(y, self.num_classes), y), x)
            logits = self.udcformer(maps, pooled, z, landmarks)
            ce = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
            return StepOutput(ce, logits, {"ce": ce.detach()})
        with torch.no_grad():
            z = self.prior(e_image.detach(), y, x)  # frozen FPEN_S1 and E_L
        condition = self.fpen_s2(e_image)
        if self.variant.diffusion:
            z_hat = self.diffusion.reverse(self.diffusion.noised(z), condition, insert_noise=self.variant.insert_noise)
        else:
            z_hat = condition
        logits = self.udcformer(maps, pooled, z_hat, landmarks)
        ce = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        terms = {"ce": ce.detach()}
        loss = ce
        if self.variant.kl:
            kl = kl_loss(z.float(), z_hat.float(), self.kl_temperature)
            loss = loss + kl
            terms["kl"] = kl.detach()
        return StepOutput(loss, logits, terms)

    # -- stage set-up -------------------------------------------------------------------------------
    def load_stage1(self, state: dict) -> None:
        """Initialise from a stage-1 model: trunk, encoders, FPEN_S1, UDCformer and landmark network."""
        keep = ("trunk.", "encoders.", "fpen_s1.", "udcformer.", "landmarks.")
        own = self.state_dict()
        picked = {k: v for k, v in state.items() if k.startswith(keep) and k in own and own[k].shape == v.shape}
        missing = [k for k in own if k.startswith(keep) and k not in picked]
        if missing:
            raise ValueError(f"the stage-1 checkpoint lacks {len(missing)} tensors, e.g. {missing[:3]}")
        self.load_state_dict(picked, strict=False)

    def train(self, mode: bool = True):
        """The landmark network is always frozen once pre-trained; stage 2 also freezes FPEN_S1 and the
        label encoder (re-applied every epoch, so also after a resume); CLIP's towers are always frozen. What the
        variant never runs (stage 1's FPEN_S2 and diffusion, S2-V1's diffusion) is frozen too, so that DDP waits
        for no gradient that never comes."""
        super().train(mode)
        frozen = [self.landmarks] + ([self.encoders, self.fpen_s1] if self.variant.stage == 2 else [self.fpen_s2])
        if not self.variant.diffusion:
            frozen.append(self.diffusion)
        for module in frozen:
            module.eval()
            module.requires_grad_(False)
        return self
