"""LRDif (Wang, Zhang, Sankaranarayana, arXiv 2402.00250): two-stage diffusion label restoration.

Stage 1: ``Z = FPEN_S1(concat(E_L(y), E_I(x)))`` guides the UDCformer; trained with cross-entropy.
Its accuracy is an oracle (the label is an input). Stage 2: FPEN_S1 and its encoders are frozen
and give ``Z``; ``Z`` is forward-noised to ``Z_T`` and the whole reverse chain, conditioned on
``x_S2 = FPEN_S2(E_I(x))``, estimates it; the UDCformer (initialised from stage 1) classifies with
the estimate. Loss ``L_ce + L_kl`` with ``L_kl = KL(softmax(Z / tau) || softmax(Z_hat / tau))``. At
inference the chain starts from Gaussian noise: no label anywhere.

Table 5 variants: ``s1`` (the oracle), ``s2-v1`` (no diffusion: Z_hat = x_S2, L_ce), ``s2-v2``
(diffusion, L_ce), ``s2-v3`` (diffusion, L_total, noise inserted in each reverse step: the paper's
model), ``s2-v4`` (diffusion, L_total, deterministic reverse steps).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from baselines.base import Batch, FERModel, StepOutput
from lrdif.diffusion import EPRDiffusion
from lrdif.encoders import FPEN, ClipEncoders, LandmarkNet, ScratchEncoders, ScratchImageEncoder, landmark_heatmaps
from lrdif.udcformer import UDCformer


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
    def __init__(self, num_classes: int, variant: str = "s2-v3", steps: int = 4, z_dim: int = 256,
                 parameterization: str = "x0", kl_temperature: float = 1.0, encoder: str = "scratch",
                 clip_model: str = "ViT-B-32", clip_weights: str | None = None, mean=(0.5,) * 3, std=(0.5,) * 3,
                 dims: tuple[int, int, int] = (48, 96, 192), blocks: tuple[int, int, int] = (1, 2, 2),
                 token_dim: int = 256, depth: int = 2):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown LRDif variant '{variant}' (known: {', '.join(VARIANTS)})")
        self.variant_name, self.variant = variant, VARIANTS[variant]
        if encoder == "clip":
            self.encoders = ClipEncoders(num_classes, clip_model, clip_weights or "", mean, std)
        elif encoder == "scratch":
            self.encoders = ScratchEncoders(num_classes, z_dim)
        else:
            raise ValueError(f"encoder is 'clip' or 'scratch', not '{encoder}'")
        width = self.encoders.dim
        # Stage 2's image encoder. A frozen CLIP tower serves both stages; a scratch encoder learnt in stage 1
        # only what the label left to learn (next to nothing), so stage 2 trains its own copy, initialised
        # from stage 1's, while the prior keeps the frozen original.
        self.image_s2 = ScratchImageEncoder(width) if encoder == "scratch" else None
        self.fpen_s1 = FPEN(2 * width, z_dim)
        self.fpen_s2 = FPEN(width, z_dim)
        self.diffusion = EPRDiffusion(z_dim, steps, parameterization)
        self.udcformer = UDCformer(num_classes, z_dim, dims=tuple(dims), blocks=tuple(blocks), token_dim=token_dim,
                                   depth=depth)
        self.landmarks = LandmarkNet(tuple(dims))
        self.kl_temperature = kl_temperature

    # -- what the engine asks ----------------------------------------------------------------------
    @property
    def uses_labels_at_eval(self) -> bool:
        """Stage 1 is an oracle: its evaluation feeds the label in."""
        return self.variant.stage == 1

    def prior(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Stage 1's EPR Z from the image and its label."""
        return self.fpen_s1(torch.cat([self.encoders.encode_label(labels), self.encoders.encode_image(x)], dim=1))

    def condition(self, x: torch.Tensor) -> torch.Tensor:
        """x_S2 = FPEN_S2(E_I(x)), with stage 2's own image encoder when the encoders are trained from scratch."""
        return self.fpen_s2(self.image_s2(x) if self.image_s2 is not None else self.encoders.encode_image(x))

    def estimate(self, x: torch.Tensor) -> torch.Tensor:
        """Stage 2 at inference: the EPR estimated from the image alone."""
        condition = self.condition(x)
        if not self.variant.diffusion:
            return condition
        return self.diffusion.sample(condition, insert_noise=self.variant.insert_noise)

    def landmark_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        with torch.no_grad():
            return self.landmarks(x)[1]

    def _z(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if self.variant.stage == 1:
            if labels is None:
                raise ValueError("LRDif stage 1 is an oracle: it needs the labels")
            return self.prior(x, labels)
        return self.estimate(x)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.udcformer(x, self._z(x, labels), self.landmark_maps(x))

    def embed(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.udcformer.features(x, self._z(x, labels), self.landmark_maps(x))

    def training_step(self, batch: Batch, epoch: int) -> StepOutput:
        x, y = batch.images, batch.labels
        maps = self.landmark_maps(x)
        if self.variant.stage == 1:
            logits = self.udcformer(x, self.prior(x, y), maps)
            ce = F.cross_entropy(logits, y)
            return StepOutput(ce, logits, {"ce": ce.item()})
        with torch.no_grad():
            z = self.prior(x, y)  # frozen stage-1 FPEN and encoders
        condition = self.condition(x)
        if self.variant.diffusion:
            z_t = self.diffusion.schedule.q_sample(z, self.diffusion.steps, torch.randn_like(z))
            z_hat = self.diffusion.reverse(z_t, condition, insert_noise=self.variant.insert_noise)
        else:
            z_hat = condition
        logits = self.udcformer(x, z_hat, maps)
        ce = F.cross_entropy(logits, y)
        terms = {"ce": ce.item()}
        loss = ce
        if self.variant.kl:
            kl = kl_loss(z.float(), z_hat.float(), self.kl_temperature)
            loss = loss + kl
            terms["kl"] = kl.item()
        return StepOutput(loss, logits, terms)

    # -- stage set-up -------------------------------------------------------------------------------
    def load_stage1(self, state: dict) -> None:
        """Initialise from a stage-1 model: encoders, FPEN_S1, UDCformer and landmark network (and stage 2's
        image encoder from stage 1's scratch image encoder)."""
        keep = ("encoders.", "fpen_s1.", "udcformer.", "landmarks.")
        own = self.state_dict()
        picked = {k: v for k, v in state.items() if k.startswith(keep) and k in own and own[k].shape == v.shape}
        missing = [k for k in own if k.startswith(keep) and k not in picked]
        if missing:
            raise ValueError(f"the stage-1 checkpoint lacks {len(missing)} tensors, e.g. {missing[:3]}")
        self.load_state_dict(picked, strict=False)
        if self.image_s2 is not None:
            self.image_s2.load_state_dict(self.encoders.image.state_dict())

    def pretrain_landmarks(self, images: torch.Tensor, points: np.ndarray, epochs: int = 3, batch_size: int = 64,
                           lr: float = 2e-3, seed: int = 0) -> list[float]:
        """Fit the landmark network to heatmaps of ``points`` (N x 68 x 2, pixels), then freeze it."""
        net = self.landmarks
        net.train().requires_grad_(True)
        optimizer = torch.optim.Adam(net.parameters(), lr=lr)
        targets = landmark_heatmaps(torch.as_tensor(points), images.shape[-1])
        generator = torch.Generator().manual_seed(seed)
        losses = []
        for _ in range(epochs):
            order = torch.randperm(len(images), generator=generator)
            total = 0.0
            for i in range(0, len(images), batch_size):
                idx = order[i : i + batch_size]
                heat = net(images[idx].to(next(net.parameters()).device))[0]
                loss = F.mse_loss(heat, targets[idx].to(heat)) * 100
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.item() * len(idx)
            losses.append(total / len(images))
        net.eval().requires_grad_(False)
        return losses

    def train(self, mode: bool = True):
        """The landmark network is always frozen once pre-trained; stage 2 also freezes FPEN_S1 and the
        encoders (parameters and batch-norm statistics, re-applied every epoch, so also after a resume)."""
        super().train(mode)
        frozen = [self.landmarks] + ([self.encoders, self.fpen_s1] if self.variant.stage == 2 else [])
        for module in frozen:
            module.eval()
            module.requires_grad_(False)
        return self
