"""The landmark network that LRDif's DIL blocks and POSTER++'s cross-attention take their queries from: a
small CNN in place of the papers' pre-trained MobileFaceNet (no face-landmark weights ship with udcbench),
pre-trained on the dataset's 68 landmarks (``udcbench landmarks``) and then frozen."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: Channels of :class:`LandmarkNet`'s features at strides 4, 8 and 16.
LANDMARK_DIMS = (48, 96, 192)


class LandmarkNet(nn.Module):
    """A small CNN predicting the 68 landmarks as heatmaps at 1/4 resolution; its features at strides
    4, 8 and 16 are what the methods read (``features``, without the heatmap head)."""

    def __init__(self, dims: tuple[int, int, int] = LANDMARK_DIMS, points: int = 68):
        super().__init__()

        def block(cin, cout, stride):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.BatchNorm2d(cout), nn.ReLU())

        self.dims = tuple(dims)
        self.s4 = nn.Sequential(block(3, 32, 2), block(32, dims[0], 2))
        self.s8 = block(dims[0], dims[1], 2)
        self.s16 = block(dims[1], dims[2], 2)
        # a 1x1 head: a 3x3 one at stride 4 cost 1.7 ResNet-18 training steps per image (its pre-training alone
        # about 5 of the control's 15 epochs at 64 px)
        self.heatmap = nn.Sequential(nn.Conv2d(sum(dims), 96, 1), nn.BatchNorm2d(96), nn.ReLU(),
                                     nn.Conv2d(96, points, 1))

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        f4 = self.s4(x)
        f8 = self.s8(f4)
        return [f4, f8, self.s16(f8)]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        f4, f8, f16 = self.features(x)
        size = f4.shape[-2:]
        up = [F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in (f8, f16)]
        return self.heatmap(torch.cat([f4, *up], dim=1)), [f4, f8, f16]


def landmark_heatmaps(points: torch.Tensor, image_size: int, sigma: float = 1.0) -> torch.Tensor:
    """Gaussian heatmaps at 1/4 resolution for (B, 68, 2) pixel landmarks."""
    size = -(-image_size // 4)
    grid = (torch.arange(size, dtype=torch.float32) + 0.5) * 4 - 0.5
    px = points.float()
    gx = torch.exp(-((grid[None, None, :] - px[..., 0:1]) / 4) ** 2 / (2 * sigma**2))
    gy = torch.exp(-((grid[None, None, :] - px[..., 1:2]) / 4) ** 2 / (2 * sigma**2))
    return gy[..., :, None] * gx[..., None, :]


def pretrain_landmark_net(net: LandmarkNet, images, points: np.ndarray, epochs: int = 3, batch_size: int = 64,
                          lr: float = 2e-3, seed: int = 0, prepare=None) -> list[float]:
    """Fit ``net`` to heatmaps of ``points`` (N x 68 x 2, pixels of ``images``), then freeze it. Returns the
    mean loss of each epoch. ``images`` is the normalised N x 3 x S x S input, or anything indexable (the uint8
    image cache) with ``prepare`` turning a batch of it into that input: the set is never held as floats, nor are
    its heatmaps (made per batch)."""
    net.train().requires_grad_(True)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    points = torch.as_tensor(points)
    generator = torch.Generator().manual_seed(seed)
    device = next(net.parameters()).device
    losses = []
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        total = torch.zeros((), device=device)
        for i in range(0, len(images), batch_size):
            idx = order[i : i + batch_size]
            batch = images[idx] if prepare is None else prepare(images[idx.numpy()])
            batch = batch.to(device)
            heat = net(batch)[0]
            target = landmark_heatmaps(points[idx], batch.shape[-1]).to(heat)
            loss = F.mse_loss(heat, target) * 100
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(idx)
        losses.append(total.item() / len(images))
    net.eval().requires_grad_(False)
    return losses
