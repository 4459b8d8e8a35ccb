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
- ``DACL`` (Farzaneh and Qi, WACV 2021, Deep Attentive Center Loss): per-dimension attention from the last
  feature map and the attention-weighted sparse center loss.
- ``ARM`` (Shi and Zhu, arXiv 2103.10189, Amend Representation Module): pixel shuffle, a de-albino kernel
  and a minibatch-shared affinity term in place of the global pooling.
- ``MANet`` (Zhao, Liu and Wang, IEEE TIP 2021): a local attention branch over the four quadrants and a
  multi-scale branch after ResNet-18's layer2, fused with weight beta 0.6.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from baselines import distributed
from baselines.backbone import resnet18_trunk, resnet50_trunk
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
        return StepOutput(loss, logits, {"ce": loss.detach()})


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


def scn_relabel_dense(probs: torch.Tensor, labels: torch.Tensor, threshold: float) -> torch.Tensor:
    """SCN's relabelling: a sample whose top probability beats its given label's by more than ``threshold`` takes
    the top class; one new label per sample, -1 where the label stays (no host sync)."""
    top, predicted = probs.max(dim=1)
    given = probs.gather(1, labels[:, None]).squeeze(1)
    return torch.where(top - given > threshold, predicted, torch.full_like(predicted, -1))


def scn_relabel(probs: torch.Tensor, labels: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`scn_relabel_dense` as (positions in the batch, new labels)."""
    new = scn_relabel_dense(probs, labels, threshold)
    change = torch.nonzero(new >= 0).flatten()
    return change, new[change]


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
            with torch.no_grad():  # dense (-1: keep), so that nothing waits on the device for a count
                relabel = (batch.index, scn_relabel_dense(F.softmax(logits.float(), dim=1), batch.labels,
                                                          self.relabel_margin))
        return StepOutput(ce + rr, logits, {"ce": ce.detach(), "rank": rr.detach()}, relabel)


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
        return StepOutput(loss, logits, {"ce_i": loss_a.detach(), "ce_j": loss_b.detach()})


# -- EAC ---------------------------------------------------------------------------------------------
def class_activation_maps(feat: torch.Tensor, fc_weight: torch.Tensor) -> torch.Tensor:
    """CAMs from the classifier weights: (B, 512, h, w) x (C, 512) -> (B, C, h, w)."""
    return torch.einsum("bchw,kc->bkhw", feat, fc_weight)


class EAC(ResNet18FER):
    """The engine's augmentation erases a random patch; the model adds the flip of the erased image."""

    def __init__(self, num_classes: int, consistency_weight: float = 5.0, separate_passes: bool = False,
                 backbone: str = "resnet18"):
        super().__init__(num_classes)
        if backbone == "resnet50":  # the official code's other backbone (2048 features)
            self.trunk, self.fc = resnet50_trunk(), nn.Linear(2048, num_classes)
        elif backbone != "resnet18":
            raise ValueError(f"EAC's backbone is resnet18 or resnet50, got '{backbone}'")
        self.consistency_weight = consistency_weight
        # The official code runs the image and its flip through the network one after the other (batch-norm
        # statistics of each half apart); one pass over both is faster and mixes them.
        self.separate_passes = separate_passes

    def training_step(self, batch: Batch, epoch: int) -> StepOutput:
        if self.separate_passes:
            feat = torch.cat([self.trunk(batch.images), self.trunk(batch.images.flip(-1))])
        else:
            feat = self.trunk(torch.cat([batch.images, batch.images.flip(-1)]))
        logits = self.fc(F.adaptive_avg_pool2d(feat, 1).flatten(1))
        # The official code builds the CAMs from ``fc.weight.data``: the consistency term trains the trunk
        # only. Through the classifier too, it diverged from scratch on FERPlus (NaN within 13 steps).
        cams = class_activation_maps(feat, self.fc.weight.detach())
        n = len(batch.images)
        ce = cross_entropy(logits[:n], batch)
        consistency = F.mse_loss(cams[:n], cams[n:].flip(-1))
        loss = ce + self.consistency_weight * consistency
        return StepOutput(loss, logits[:n], {"ce": ce.detach(), "consistency": consistency.detach()})


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

    def __init__(self, num_classes: int, num_heads: int = 4, centers: int | None = None):
        super().__init__()
        self.trunk = resnet18_trunk()
        self.heads = nn.ModuleList([CrossAttentionHead() for _ in range(num_heads)])
        self.fc = nn.Linear(512, num_classes)
        self.bn = nn.BatchNorm1d(num_classes)
        # the official AffinityLoss keeps its default 8 centres whatever the class count (RAF-DB's 7: one spare
        # centre that only widens the centres' variance); ``centers=None``: one per class
        if centers is not None and centers < num_classes:
            raise ValueError(f"DAN needs a centre per class: centers {centers} < {num_classes} classes")
        self.centers = nn.Parameter(torch.randn(centers or num_classes, 512))

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
        return StepOutput(ce + af + pt, logits,
                          {"ce": ce.detach(), "affinity": af.detach(), "partition": pt.detach()})


# -- DACL --------------------------------------------------------------------------------------------
def sparse_center_loss(feat: torch.Tensor, attention: torch.Tensor, labels: torch.Tensor,
                       centers: torch.Tensor) -> torch.Tensor:
    """DACL's sparse center loss ``sum_ij a_ij (x_ij - c_{y_i j})^2 / 2 / B``; the centres are not trained by
    gradient here (:func:`dacl_center_update` moves them)."""
    diff = feat - centers.detach()[labels]
    return (attention * diff.pow(2)).sum() / 2 / len(feat)


@torch.no_grad()
def dacl_center_update(centers: torch.Tensor, feat: torch.Tensor, attention: torch.Tensor, labels: torch.Tensor,
                       alpha: float) -> None:
    """The official centre step (an SGD step of rate ``alpha`` on the centres' custom gradient):
    ``c_j += alpha * sum_{i: y_i = j} a_i * (x_i - c_j) / (1 + n_j)``. Under DDP the sums run over the global
    batch (every rank's share), so that every rank moves its centres alike, as one process would."""
    moved = torch.zeros_like(centers).index_add_(0, labels, attention * (feat - centers[labels]))
    counts = torch.zeros(len(centers), device=centers.device).index_add_(0, labels, torch.ones_like(labels,
                                                                                                  dtype=centers.dtype))
    both = distributed.all_reduce_sum(torch.cat([moved, counts[:, None]], dim=1))
    centers.add_(alpha * both[:, :-1] / (1 + both[:, -1:]))


class DACL(FERModel):
    """Farzaneh and Qi, WACV 2021: an attention network over the flattened last feature map gives a weight in
    (0, 1) per feature dimension (a softmax over two logits per dimension); the sparse center loss weighs
    each dimension's distance to its class centre by it; cross-entropy + ``lamb`` * that loss."""

    channels_last = True

    def __init__(self, num_classes: int, input_size: int = 224, lamb: float = 0.01, alpha: float = 0.5,
                 hidden: tuple[int, int, int] = (3584, 512, 64)):
        super().__init__()
        self.trunk = resnet18_trunk()
        spatial = max(1, -(-input_size // 32))
        h1, h2, h3 = hidden
        self.attention = nn.Sequential(  # the context encoder of the official code, its widths at 224 px
            nn.Flatten(), nn.Linear(512 * spatial * spatial, h1), nn.BatchNorm1d(h1), nn.ReLU(inplace=True),
            nn.Linear(h1, h2), nn.BatchNorm1d(h2), nn.ReLU(inplace=True),
            nn.Linear(h2, h3), nn.BatchNorm1d(h3), nn.Tanh(), nn.Linear(h3, 2 * 512))
        for m in self.attention.modules():
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight)
                nn.init.zeros_(m.bias)
        self.fc = nn.Linear(512, num_classes)
        self.register_buffer("centers", torch.empty(num_classes, 512))
        nn.init.kaiming_normal_(self.centers.t())  # as the official reset (fan over the classes)
        self.lamb, self.alpha = lamb, alpha

    def parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits, pooled features and the attention weights (B x 512)."""
        feat = self.trunk(x)
        weights = self.attention(feat).reshape(x.shape[0], 512, 2).softmax(dim=-1)[..., 1]
        pooled = F.adaptive_avg_pool2d(feat, 1).flatten(1)
        return self.fc(pooled), pooled, weights

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.parts(x)[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.parts(x)[0]

    def training_step(self, batch: Batch, epoch: int) -> StepOutput:
        logits, feat, weights = self.parts(batch.images)
        ce = cross_entropy(logits, batch)
        center = sparse_center_loss(feat.float(), weights.float(), batch.labels, self.centers)
        dacl_center_update(self.centers, feat.detach().float(), weights.detach().float(), batch.labels, self.alpha)
        return StepOutput(ce + self.lamb * center, logits, {"ce": ce.detach(), "center": center.detach()})


# -- ARM ---------------------------------------------------------------------------------------------
class AmendRepresentation(nn.Module):
    """ARM (Shi and Zhu, arXiv 2103.10189) in place of the global pooling: the 512-channel map is rearranged
    into 2 channels at 16x the resolution (pixel shuffle), each filtered by one shared "de-albino" kernel
    (a strided convolution without padding, against the padding-eroded border), batch-normalised; then the
    mean over the 2 channels plus ``alpha`` times the affinity shared over the minibatch (the mean over the
    batch and channels). The official kernel is 32 with stride 8 on the 112-px map of a 224-px input
    (11 x 11 out); here both scale with the map (2/7 and 1/14 of its side). At evaluation the shared affinity
    is a running mean of the training batches' (the official code takes the test batch's: predictions that
    depend on what else is in the batch)."""

    def __init__(self, side: int, momentum: float = 0.1):
        super().__init__()
        kernel, stride = max(1, round(side * 2 / 7)), max(1, round(side / 14))
        self.de_albino = nn.Conv2d(1, 1, kernel, stride=stride, bias=False)
        self.bn = nn.BatchNorm2d(2)
        self.alpha = nn.Parameter(torch.tensor([1.0]))
        self.out_side = (side - kernel) // stride + 1
        self.register_buffer("shared", torch.zeros(self.out_side, self.out_side))
        self.momentum = momentum

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        x = self.bn(self.de_albino(x.reshape(b * c, 1, h, w)).reshape(b, c, self.out_side, self.out_side))
        if self.training:  # over the global batch under DDP (differentiably), as on one device
            shared = distributed.all_reduce_mean_grad(x.mean(dim=(0, 1)))
            with torch.no_grad():
                self.shared.lerp_(shared.detach().float(), self.momentum)
        else:
            shared = self.shared.to(x.dtype)
        return (x.mean(dim=1, keepdim=True) + self.alpha * shared).flatten(1)


class ARM(FERModel):
    """ResNet-18 with the amend representation module in place of the pooling, trained with cross-entropy
    (the official training loss: its affinity is the module's minibatch-shared term)."""

    channels_last = True

    def __init__(self, num_classes: int, input_size: int = 224):
        super().__init__()
        self.trunk = resnet18_trunk()
        self.arrange = nn.PixelShuffle(16)
        self.arm = AmendRepresentation(16 * max(1, -(-input_size // 32)))
        self.fc = nn.Linear(self.arm.out_side**2, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.arm(self.arrange(self.trunk(x)).contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embed(x))

    def training_step(self, batch: Batch, epoch: int) -> StepOutput:
        logits = self(batch.images)
        ce = cross_entropy(logits, batch)
        return StepOutput(ce, logits, {"ce": ce.detach()})


# -- MANet -------------------------------------------------------------------------------------------
class CBAM(nn.Module):
    """Convolutional block attention (Woo et al., ECCV 2018), as MANet's attentive blocks use it: channel
    attention (a shared MLP, reduction 16, on the average- and max-pooled map), then spatial attention (a 7x7
    convolution on the channel mean and max)."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.mlp = nn.Sequential(nn.Conv2d(channels, channels // reduction, 1, bias=False), nn.ReLU(inplace=True),
                                 nn.Conv2d(channels // reduction, channels, 1, bias=False))
        self.spatial = nn.Conv2d(2, 1, 7, padding=3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * torch.sigmoid(self.mlp(F.adaptive_avg_pool2d(x, 1)) + self.mlp(F.adaptive_max_pool2d(x, 1)))
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(pooled))


def _conv_bn(cin: int, cout: int, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(cout))


class _Residual(nn.Module):
    """A residual block ``relu(body(x) + shortcut(x))`` with a 1x1 projection where the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.shortcut = _conv_bn(cin, cout, stride, 1) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class AttentiveBlock(_Residual):
    """ResNet's basic block with CBAM on its residual branch (MANet's local attention branch)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__(cin, cout, stride)
        self.body = nn.Sequential(_conv_bn(cin, cout, stride), nn.ReLU(inplace=True), _conv_bn(cout, cout),
                                  CBAM(cout))


class MultiScaleBlock(_Residual):
    """MANet's multi-scale block: a 3x3 convolution, its channels split in four groups, each passed through
    its own 3x3 conv-BN after adding the previous group's output, in both directions (group 1 to 4 and 4 to 1);
    the two directions summed."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__(cin, cout, stride)
        self.entry = nn.Sequential(_conv_bn(cin, cout, stride), nn.ReLU())
        width = cout // 4
        self.forward_convs = nn.ModuleList(_conv_bn(width, width) for _ in range(4))
        self.backward_convs = nn.ModuleList(_conv_bn(width, width) for _ in range(4))

    @staticmethod
    def _chain(groups: list[torch.Tensor], convs: nn.ModuleList) -> list[torch.Tensor]:
        out = [convs[0](groups[0])]
        for group, conv in zip(groups[1:], convs[1:]):
            out.append(conv(F.relu(out[-1]) + group))
        return out

    def body(self, x: torch.Tensor) -> torch.Tensor:
        groups = list(self.entry(x).chunk(4, dim=1))
        ahead = self._chain(groups, self.forward_convs)
        back = self._chain(groups[::-1], self.backward_convs[::-1])[::-1]
        return torch.cat(ahead, dim=1) + torch.cat(back, dim=1)


def _stage(block: type, cin: int, cout: int, stride: int, blocks: int = 2) -> nn.Sequential:
    return nn.Sequential(block(cin, cout, stride), *(block(cout, cout) for _ in range(blocks - 1)))


class MANet(FERModel):
    """Zhao, Liu and Wang, IEEE TIP 2021: ResNet-18's stem, layer1 and layer2 shared; a local attention branch
    (the layer2 map cut into its four quadrants, each through its own layer3 and stride-1 layer4 of attentive
    blocks, the outputs put back together) and a multi-scale branch (layer3 and layer4 of multi-scale
    blocks), each pooled into its own classifier; loss and prediction ``beta * local + (1 - beta) * global``.
    ``--weights`` (a torchvision-named ResNet-18) loads the shared stem, layer1 and layer2 (``trunk``)."""

    def __init__(self, num_classes: int, beta: float = 0.6):
        super().__init__()
        self.trunk = resnet18_trunk()[:6]  # conv1 ... layer2, as torchvision names them
        self.local = nn.ModuleList(
            nn.Sequential(_stage(AttentiveBlock, 128, 256, 2), _stage(AttentiveBlock, 256, 512, 1)) for _ in range(4))
        self.multi_scale = nn.Sequential(_stage(MultiScaleBlock, 128, 256, 2),
                                         _stage(MultiScaleBlock, 256, 512, 2))
        self.fc_local, self.fc_global = nn.Linear(512, num_classes), nn.Linear(512, num_classes)
        self.beta = beta
        for m in [*self.local.modules(), *self.multi_scale.modules()]:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def branches(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The pooled local-attention and multi-scale features."""
        x = self.trunk(x)
        h, w = x.shape[-2] // 2, x.shape[-1] // 2
        quadrants = [x[..., :h, :w], x[..., :h, w:], x[..., h:, :w], x[..., h:, w:]]
        out = [branch(q) for branch, q in zip(self.local, quadrants)]
        local = torch.cat([torch.cat(out[:2], dim=3), torch.cat(out[2:], dim=3)], dim=2)
        return F.adaptive_avg_pool2d(local, 1).flatten(1), F.adaptive_avg_pool2d(self.multi_scale(x), 1).flatten(1)

    def outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        local, global_ = self.branches(x)
        return self.fc_local(local), self.fc_global(global_)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(self.branches(x), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        local, global_ = self.outputs(x)
        return self.beta * local + (1 - self.beta) * global_

    def training_step(self, batch: Batch, epoch: int) -> StepOutput:
        local, global_ = self.outputs(batch.images)
        ce_local, ce_global = cross_entropy(local, batch), cross_entropy(global_, batch)
        loss = self.beta * ce_local + (1 - self.beta) * ce_global
        logits = self.beta * local + (1 - self.beta) * global_
        return StepOutput(loss, logits, {"ce_local": ce_local.detach(), "ce_global": ce_global.detach()})
