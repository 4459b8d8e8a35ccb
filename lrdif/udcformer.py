"""UDCformer = DT network (DiffIR/Restormer-style blocks modulated by the EPR Z) + DIL network
(window cross-attention from landmark features to image features), fused over three scales and
classified by vanilla transformer blocks.

Shapes for a ``S x S`` input with ``dims = (48, 96, 192)``: stem stride 4 -> level 1 at S/4,
level 2 at S/8, level 3 at S/16 (112 -> 28, 14, 7; 48 -> 12, 6, 3).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of a (B, C, H, W) map, without affine parameters."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2]).permute(0, 3, 1, 2)


class Modulation(nn.Module):
    """``F' = W1 Z * LN(F) + W2 Z`` (Eq. 2): per-channel scale and shift from the EPR."""

    def __init__(self, channels: int, z_dim: int):
        super().__init__()
        self.norm = ChannelLayerNorm()
        self.w1 = nn.Linear(z_dim, channels)
        self.w2 = nn.Linear(z_dim, channels)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.w1(z)[:, :, None, None] * self.norm(x) + self.w2(z)[:, :, None, None]


class DMNet(nn.Module):
    """Multi-Dconv head transposed attention (attention across channels, C'' x C'')."""

    def __init__(self, channels: int, heads: int):
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))  # the adjustable alpha of Eq. 3
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.dw = nn.Conv2d(3 * channels, 3 * channels, 3, padding=1, groups=3 * channels)
        self.project = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.dw(self.qkv(x)).chunk(3, dim=1)
        q, k, v = (t.reshape(b, self.heads, c // self.heads, h * w) for t in (q, k, v))
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attention = (q @ k.transpose(-2, -1) * self.temperature).softmax(dim=-1)
        return self.project((attention @ v).reshape(b, c, h, w))


class DGNet(nn.Module):
    """Gated-Dconv feed-forward: ``GELU(W_d1 W_c1 F') * W_d2 W_c2 F'`` (Eq. 4)."""

    def __init__(self, channels: int, expansion: float = 2.0):
        super().__init__()
        hidden = int(channels * expansion)
        self.expand = nn.Conv2d(channels, 2 * hidden, 1)
        self.dw = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden)
        self.project = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.dw(self.expand(x)).chunk(2, dim=1)
        return self.project(F.gelu(a) * b)


class DTBlock(nn.Module):
    """One dynamic transformer block: modulated DMNet then modulated DGNet, each with a residual."""

    def __init__(self, channels: int, heads: int, z_dim: int):
        super().__init__()
        self.mod1, self.attention = Modulation(channels, z_dim), DMNet(channels, heads)
        self.mod2, self.ffn = Modulation(channels, z_dim), DGNet(channels)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.mod1(x, z))
        return x + self.ffn(self.mod2(x, z))


class Downsample(nn.Module):
    """Restormer's down-sampling: conv to C/2 then pixel-unshuffle (x2 channels, /2 size)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels // 2, 3, padding=1), nn.PixelUnshuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 2 or x.shape[-2] % 2:
            x = F.pad(x, (0, x.shape[-1] % 2, 0, x.shape[-2] % 2), mode="replicate")
        return self.body(x)


class DTNetwork(nn.Module):
    """Three scales of DT blocks; returns the feature map of each scale."""

    def __init__(self, z_dim: int, dims: tuple[int, int, int] = (48, 96, 192), blocks=(1, 2, 2), heads=(1, 2, 4)):
        super().__init__()
        # A convolutional stem (conv-BN-GELU twice, stride 4), as POSTER++ takes its image features from a CNN:
        # without normalisation and non-linearity here, the from-scratch UDCformer barely learned on FERPlus
        # (37 % against a small CNN's 53 % after 200 steps; 51 % with this stem).
        self.stem = nn.Sequential(nn.Conv2d(3, dims[0], 3, stride=2, padding=1), nn.BatchNorm2d(dims[0]), nn.GELU(),
                                  nn.Conv2d(dims[0], dims[0], 3, stride=2, padding=1), nn.BatchNorm2d(dims[0]),
                                  nn.GELU())
        self.levels = nn.ModuleList(
            nn.ModuleList(DTBlock(d, h, z_dim) for _ in range(n)) for d, n, h in zip(dims, blocks, heads))
        self.down = nn.ModuleList([Downsample(dims[0]), Downsample(dims[1])])

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        out = []
        for i, level in enumerate(self.levels):
            if i:
                x = self.down[i - 1](x)
            for block in level:
                x = block(x, z)
            out.append(x)
        return out


class WindowCrossAttention(nn.Module):
    """Multi-head cross-attention inside non-overlapping windows: queries from landmark features,
    keys and values from image features, with a learned relative position bias (Eqs. 5-7)."""

    def __init__(self, channels: int, heads: int, window: int):
        super().__init__()
        self.heads, self.window = heads, window
        self.q = nn.Linear(channels, channels)
        self.kv = nn.Linear(channels, 2 * channels)
        self.out = nn.Linear(channels, channels)
        self.bias = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.bias, std=0.02)
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + window - 1
        self.register_buffer("bias_index", relative[..., 0] * (2 * window - 1) + relative[..., 1], persistent=False)

    def _windows(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
        b, c, h, w = x.shape
        s = self.window
        ph, pw = (-h) % s, (-w) % s
        x = F.pad(x, (0, pw, 0, ph))
        hh, ww = (h + ph) // s, (w + pw) // s
        tokens = x.reshape(b, c, hh, s, ww, s).permute(0, 2, 4, 3, 5, 1).reshape(b * hh * ww, s * s, c)
        return tokens, (hh, ww, h, w)

    def forward(self, image: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        b, c = image.shape[:2]
        kv_tokens, (hh, ww, h, w) = self._windows(image)
        q_tokens, _ = self._windows(landmarks)
        n, m, _ = kv_tokens.shape
        d = c // self.heads
        q = self.q(q_tokens).reshape(n, m, self.heads, d).transpose(1, 2)
        k, v = self.kv(kv_tokens).reshape(n, m, 2, self.heads, d).permute(2, 0, 3, 1, 4)
        bias = self.bias[self.bias_index.flatten()].reshape(m, m, self.heads).permute(2, 0, 1)
        attention = (q @ k.transpose(-2, -1) / math.sqrt(d) + bias).softmax(dim=-1)
        out = self.out((attention @ v).transpose(1, 2).reshape(n, m, c))
        s = self.window
        out = out.reshape(b, hh, ww, s, s, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, hh * s, ww * s)
        return out[:, :, :h, :w]


class DILBlock(nn.Module):
    """``X' = MHCA(X) + X ; X'' = MLP(LN(X')) + X'`` (Eqs. 8-9), on (B, C, H, W) maps."""

    def __init__(self, channels: int, heads: int, window: int):
        super().__init__()
        self.norm_image, self.norm_landmarks = ChannelLayerNorm(), ChannelLayerNorm()
        self.attention = WindowCrossAttention(channels, heads, window)
        self.norm = nn.LayerNorm(channels)
        self.mlp = nn.Sequential(nn.Linear(channels, 2 * channels), nn.GELU(), nn.Linear(2 * channels, channels))

    def forward(self, image: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        x = image + self.attention(self.norm_image(image), self.norm_landmarks(landmarks))
        tokens = x.permute(0, 2, 3, 1)
        return (tokens + self.mlp(self.norm(tokens))).permute(0, 3, 1, 2)


class TransformerBlock(nn.Module):
    """Vanilla pre-LN transformer block (MSA + MLP), Eqs. 11-12."""

    def __init__(self, dim: int, heads: int = 4):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.attention(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class UDCformer(nn.Module):
    """DT network + DIL network, fused at three scales into tokens, then transformer blocks and a classifier."""

    def __init__(self, num_classes: int, z_dim: int = 256, dims: tuple[int, int, int] = (48, 96, 192),
                 blocks: tuple[int, int, int] = (1, 2, 2), token_dim: int = 256, tokens_per_scale: int = 4,
                 depth: int = 2, window: int = 7):
        super().__init__()
        self.dt = DTNetwork(z_dim, dims, blocks)
        self.dil = nn.ModuleList(DILBlock(d, h, window) for d, h in zip(dims, (1, 2, 4)))
        self.fuse = nn.ModuleList(nn.Conv2d(2 * d, token_dim, 1) for d in dims)
        self.grid = tokens_per_scale
        self.cls = nn.Parameter(torch.zeros(1, 1, token_dim))
        self.position = nn.Parameter(torch.zeros(1, 1 + 3 * tokens_per_scale**2, token_dim))
        nn.init.trunc_normal_(self.position, std=0.02)
        self.blocks = nn.Sequential(*(TransformerBlock(token_dim) for _ in range(depth)))
        self.norm = nn.LayerNorm(token_dim)
        self.head = nn.Linear(token_dim, num_classes)

    def features(self, x: torch.Tensor, z: torch.Tensor, landmark_maps: list[torch.Tensor]) -> torch.Tensor:
        """The penultimate (CLS) features."""
        tokens = [self.cls.expand(len(x), -1, -1)]
        for f, dil, fuse, lm in zip(self.dt(x, z), self.dil, self.fuse, landmark_maps):
            lm = F.interpolate(lm, size=f.shape[-2:], mode="bilinear", align_corners=False)
            fused = fuse(torch.cat([f, dil(f, lm)], dim=1))
            tokens.append(F.adaptive_avg_pool2d(fused, self.grid).flatten(2).transpose(1, 2))
        sequence = torch.cat(tokens, dim=1) + self.position
        return self.norm(self.blocks(sequence)[:, 0])

    def forward(self, x: torch.Tensor, z: torch.Tensor, landmark_maps: list[torch.Tensor]) -> torch.Tensor:
        return self.head(self.features(x, z, landmark_maps))
