"""ResNet-18 FER baselines with their official losses and constants.

- ``ResNet18FER``: plain cross-entropy, the control.
- ``SCN`` (Wang et al., CVPR 2020, Self-Cure Network): sigmoid importance weights on the logits,
  rank regularisation, relabelling.
- ``RUL`` (Zhang et al., NeurIPS 2021, Relative Uncertainty Learning): mean and log-variance
  branches, uncertainty-weighted pairwise fusion, add-up loss.
- ``EAC`` (Zhang et al., ECCV 2022, Erasing Attention Consistency): CAM consistency between an
  erased image and its flip.
- ``DAN`` (Wen et al., 2023, Distract your Attention): four cross-attention heads, affinity and
  partition losses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from baselines.backbone import resnet18_trunk
from baselines.base import Batch, FERModel, StepOutput, cross_entropy


class ResNet18FER(FERModel):
    channels_last = True

    def __init__(self, num_classes: int, label_smoothing: float = 0.0):
        super().__init__()
        self.trunk = resnet18_trunk()
        self.fc = nn.Linear(512, num_classes)
        self.label_smoothing = label_smoothing

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.trunk(x), 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embed(x))

    def training_step(self, batch: Batch, epoch: int) -> StepOutput:
        logits = self(batch.images)
        loss = cross_entropy(logits, batch, self.label_smoothing)
        return StepOutput(loss, logits, {"ce": loss.item()})


# -- SCN ---------------------------------------------------------------------------------------------
def rank_regularization(weights: torch.Tensor, beta: float, margin: float) -> torch.Tensor:
    """SCN's rank loss: the high group (top ``beta`` of the batch by importance) must beat the low
    group's mean importance by ``margin``: ``max(0, margin - (mean_high - mean_low))``."""
    w = weights.flatten()
    n_high = int(beta * w.numel())
    if n_high < 1 or n_high >= w.numel():
        return w.new_zeros(())
    ranked, _ = torch.sort(w, descending=True)
    return F.relu(margin - (ranked[:n_high].mean() - ranked[n_high:].mean()))


def scn_relabel(probs: torch.Tensor, labels: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples whose top probability beats their given label's by more than ``threshold``:
    (positions in the batch, new labels)."""
    top, predicted = probs.max(dim=1)
    given = probs.gather(1, labels[:, None]).squeeze(1)
    change = torch.nonzero(top - given > threshold).flatten()
    return change, predicted[change]


#: SCN relabels from epoch 10 of its official 70: the fraction of the schedule where relabelling starts.
SCN_RELABEL_START = 10 / 70


class SCN(FERModel):
    channels_last = True

    def __init__(self, num_classes: int, beta: float = 0.7, rank_margin: float = 0.15, relabel_margin: float = 0.2,
                 relabel_start: float = SCN_RELABEL_START, drop_rate: float = 0.0):
        super().__init__()
        self.trunk = resnet18_trunk()
        self.dropout = nn.Dropout(drop_rate)
        self.fc = nn.Linear(512, num_classes)
        self.alpha = nn.Sequential(nn.Linear(512, 1), nn.Sigmoid())
        self.beta, self.rank_margin, self.relabel_margin = beta, rank_margin, relabel_margin
        #: Relabelling starts at this fraction of the schedule: epoch 10 of the paper's 70 by default.
        self.relabel_start = relabel_start
        self.set_schedule(70)

    def set_schedule(self, epochs: int) -> None:
        self.relabel_epoch = max(1, round(self.relabel_start * epochs))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.trunk(x), 1).flatten(1)

    def weighted(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = self.dropout(self.embed(x))
        weights = self.alpha(feat)
        return weights * self.fc(feat), weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weighted(x)[0]

    def training_step(self, batch: Batch, epoch: int) -> StepOutput:
        logits, weights = self.weighted(batch.images)
        ce = cross_entropy(logits, batch)
        rr = rank_regularization(weights, self.beta, self.rank_margin)
        relabel = None
        if epoch >= self.relabel_epoch:
            with torch.no_grad():
                change, new = scn_relabel(F.softmax(logits.float(), dim=1), batch.labels, self.relabel_margin)
            relabel = (batch.index[change], new)
        return StepOutput(ce + rr, logits, {"ce": ce.item(), "rank": rr.item()}, relabel)


# -- RUL ---------------------------------------------------------------------------------------------
def _rul_branch(out_dim: int, drop_rate: float, spatial: int) -> nn.Sequential:
    return nn.Sequential(
        nn.BatchNorm2d(512, eps=2e-5, affine=False),
        nn.Dropout(drop_rate),
        nn.Flatten(),
        nn.Linear(512 * spatial * spatial, out_dim),
        nn.BatchNorm1d(out_dim, eps=2e-5),
    )


def uncertainty_fusion(mu: torch.Tensor, uncertainty: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """RUL's pairwise fusion: ``w_i x_i + w_j x_j`` with ``w_i = u_i / (u_i + u_j)``, j = perm[i]."""
    u_i, u_j = uncertainty, uncertainty[perm]
    return u_i / (u_i + u_j) * mu + u_j / (u_i + u_j) * mu[perm]


class RUL(FERModel):
    channels_last = True

    def __init__(self, num_classes: int, input_size: int = 224, out_dim: int = 64, drop_rate: float = 0.4):
        super().__init__()
        self.trunk = resnet18_trunk()
        spatial = max(1, -(-input_size // 32))  # ceil(input / 32), as ResNet's strided convs give
        self.mu = _rul_branch(out_dim, drop_rate, spatial)
        self.log_var = _rul_branch(out_dim, drop_rate, spatial)
        self.fc = nn.Linear(out_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.mu(self.trunk(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embed(x))  # the plain mean branch at test

    def training_step(self, batch: Batch, epoch: int) -> StepOutput:
        feat = self.trunk(batch.images)
        mu, log_var = self.mu(feat), self.log_var(feat)
        perm = torch.randperm(len(mu), device=mu.device)
        fused = uncertainty_fusion(mu, log_var.exp().mean(dim=1, keepdim=True), perm)
        logits = self.fc(fused)
        loss_a, loss_b = F.cross_entropy(logits, batch.labels), F.cross_entropy(logits, batch.labels[perm])
        loss = 0.5 * loss_a + 0.5 * loss_b
        return StepOutput(loss, logits, {"ce_i": loss_a.item(), "ce_j": loss_b.item()})


# -- EAC ---------------------------------------------------------------------------------------------
def class_activation_maps(feat: torch.Tensor, fc_weight: torch.Tensor) -> torch.Tensor:
    """CAMs from the classifier weights: (B, 512, h, w) x (C, 512) -> (B, C, h, w)."""
    return torch.einsum("bchw,kc->bkhw", feat, fc_weight)


class EAC(ResNet18FER):
    """The engine's augmentation erases a random patch; the model adds the flip of the erased image."""

    def __init__(self, num_classes: int, consistency_weight: float = 5.0):
        super().__init__(num_classes)
        self.consistency_weight = consistency_weight

    def training_step(self, batch: Batch, epoch: int) -> StepOutput:
        both = torch.cat([batch.images, batch.images.flip(-1)])
        feat = self.trunk(both)
        logits = self.fc(F.adaptive_avg_pool2d(feat, 1).flatten(1))
        # The official code builds the CAMs from ``fc.weight.data``: the consistency term trains the trunk
        # only. Through the classifier too, it diverged from scratch on FERPlus (NaN within 13 steps).
        cams = class_activation_maps(feat, self.fc.weight.detach())
        n = len(batch.images)
        ce = cross_entropy(logits[:n], batch)
        consistency = F.mse_loss(cams[:n], cams[n:].flip(-1))
        loss = ce + self.consistency_weight * consistency
        return StepOutput(loss, logits[:n], {"ce": ce.item(), "consistency": consistency.item()})


# -- DAN ---------------------------------------------------------------------------------------------
class SpatialAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1x1 = nn.Sequential(nn.Conv2d(512, 256, 1), nn.BatchNorm2d(256))
        self.conv_3x3 = nn.Sequential(nn.Conv2d(256, 512, 3, padding=1), nn.BatchNorm2d(512))
        self.conv_1x3 = nn.Sequential(nn.Conv2d(256, 512, (1, 3), padding=(0, 1)), nn.BatchNorm2d(512))
        self.conv_3x1 = nn.Sequential(nn.Conv2d(256, 512, (3, 1), padding=(1, 0)), nn.BatchNorm2d(512))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1x1(x)
        y = F.relu(self.conv_3x3(y) + self.conv_1x3(y) + self.conv_3x1(y))
        return x * y.sum(dim=1, keepdim=True)


class ChannelAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.attention = nn.Sequential(nn.Linear(512, 32), nn.BatchNorm1d(32), nn.ReLU(inplace=True),
                                       nn.Linear(32, 512), nn.Sigmoid())

    def forward(self, sa: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(sa, 1).flatten(1)
        return pooled * self.attention(pooled)


class CrossAttentionHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.sa, self.ca = SpatialAttention(), ChannelAttention()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.001)
                nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ca(self.sa(x))


def affinity_loss(feat: torch.Tensor, labels: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """DAN's affinity loss: squared distance of each pooled feature to its class centre, normalised by
    the centres' total variance, averaged over the batch."""
    x = F.adaptive_avg_pool2d(feat, 1).flatten(1) if feat.dim() == 4 else feat
    distances = (x[:, None, :] - centers[None].to(x)).pow(2).sum(dim=2)  # B x C
    own = distances.gather(1, labels[:, None]).squeeze(1)
    return (own / centers.var(dim=0).sum()).clamp(min=1e-12, max=1e12).sum() / len(x)


def partition_loss(heads: torch.Tensor) -> torch.Tensor:
    """DAN's partition loss ``log(1 + num_heads / variance across heads)``; 0 for one head."""
    n = heads.size(1)
    return torch.log1p(n / heads.var(dim=1).mean()) if n > 1 else heads.new_zeros(())


class DAN(FERModel):
    channels_last = True

    def __init__(self, num_classes: int, num_heads: int = 4):
        super().__init__()
        self.trunk = resnet18_trunk()
        self.heads = nn.ModuleList([CrossAttentionHead() for _ in range(num_heads)])
        self.fc = nn.Linear(512, num_classes)
        self.bn = nn.BatchNorm1d(num_classes)
        self.centers = nn.Parameter(torch.randn(num_classes, 512))

    def parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feat = self.trunk(x)
        heads = torch.stack([h(feat) for h in self.heads], dim=1)  # B x heads x 512
        if heads.size(1) > 1:
            heads = F.log_softmax(heads, dim=1)
        return self.bn(self.fc(heads.sum(dim=1))), feat, heads

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.parts(x)[2].sum(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.parts(x)[0]

    def training_step(self, batch: Batch, epoch: int) -> StepOutput:
        logits, feat, heads = self.parts(batch.images)
        ce = cross_entropy(logits, batch)
        af = affinity_loss(feat.float(), batch.labels, self.centers)
        pt = partition_loss(heads.float())
        return StepOutput(ce + af + pt, logits, {"ce": ce.item(), "affinity": af.item(), "partition": pt.item()})
