"""UDCformer on the ResNet-18 trunk: DT blocks (DiffIR/Restormer-style, modulated by the EPR Z) and DIL blocks
(cross-attention from landmark features to image features) on the trunk's last three feature maps, fused into
tokens, read by vanilla transformer blocks whose CLS token the classifier reads (the paper's head), as POSTER++
builds its cross-attention on IR-50 feature maps.

Shapes for an ``S x S`` input: the trunk's layer2 / layer3 / layer4 maps have 128 / 256 / 512 channels at
S/8, S/16, S/32 (64 -> 8, 4, 2; 112 -> 14, 7, 4). ``head="bypass"`` (a named variant, not the paper's) adds the
CLS token, through a zero-initialised projection, to the trunk's pooled feature and classifies that sum: the
untrained model then computes exactly the trunk's pooled feature, a ResNet-18 with an auxiliary branch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from baselines.landmarks import LANDMARK_DIMS
from baselines.poster import TransformerBlock, relative_position_index

#: Channels of the trunk's layer2, layer3 and layer4 (torchvision's ResNet-18).
TRUNK_DIMS = (128, 256, 512)
#: How the DT blocks are arranged over the three scales (:class:`UDCformer`).
LAYOUTS = ("sequence", "unet")
#: What the classifier reads (:class:`UDCformer`): the UDCformer's output (the paper), or the trunk's pooled
#: feature plus the UDCformer's output through a zero-initialised projection (the bypass variant).
HEADS = ("udcformer", "bypass")


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of a (B, C, H, W) map, without affine parameters."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # written out (layer_norm's eps): F.layer_norm's normalized_shape from x.shape does not export to ONNX
        mean = x.mean(dim=1, keepdim=True)
        centred = x - mean
        return centred * torch.rsqrt(centred.pow(2).mean(dim=1, keepdim=True) + 1e-5)


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


def zero_(layer: nn.Module) -> nn.Module:
    """Zero a residual branch's last layer, so the branch starts as the identity."""
    nn.init.zeros_(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


class DTBlock(nn.Module):
    """One dynamic transformer block: modulated DMNet then modulated DGNet, each with a residual. Its branches
    start random, not at zero: with the bypass head the token path joins the trunk through a projection that
    starts at zero (:class:`UDCformer`), and a second zero in series kept the label in Z from reaching the
    loss (stage 1 never learnt to use it: the prior collapsed to a function of the image, docs/lrdif.md)."""

    def __init__(self, channels: int, heads: int, z_dim: int, expansion: float = 2.0):
        super().__init__()
        self.mod1, self.attention = Modulation(channels, z_dim), DMNet(channels, heads)
        self.mod2, self.ffn = Modulation(channels, z_dim), DGNet(channels, expansion)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.mod1(x, z))
        return x + self.ffn(self.mod2(x, z))


class CrossAttention(nn.Module):
    """Multi-head cross-attention (Eqs. 5-7): queries from landmark features, keys and values from image
    features, over the whole map (``window=None``, as POSTER++ at these map sizes) or inside non-overlapping
    ``window x window`` windows with a learned relative position bias. A map that the windows do not tile is
    padded, and padded keys are masked out: no query attends to padding."""

    def __init__(self, channels: int, heads: int, window: int | None = None):
        super().__init__()
        self.heads, self.window = heads, window
        self.q = nn.Linear(channels, channels)
        self.kv = nn.Linear(channels, 2 * channels)
        self.out = nn.Linear(channels, channels)
        self.pad_value = 0.0  # whatever it is, masking makes the output independent of it
        if window is not None:
            self.bias = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
            nn.init.trunc_normal_(self.bias, std=0.02)
            self.register_buffer("bias_index", relative_position_index(window), persistent=False)

    def _windows(self, x: torch.Tensor, s: int, value: float) -> tuple[torch.Tensor, int, int]:
        """(B, C, H, W) -> (B * windows, s * s, C), padded with ``value`` to multiples of ``s``."""
        b, c, h, w = x.shape
        x = F.pad(x, (0, (-w) % s, 0, (-h) % s), value=value)
        hh, ww = x.shape[-2] // s, x.shape[-1] // s
        return x.reshape(b, c, hh, s, ww, s).permute(0, 2, 4, 3, 5, 1).reshape(b * hh * ww, s * s, c), hh, ww

    def forward(self, image: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        b, c, h, w = image.shape
        if self.window is None:
            kv_tokens, q_tokens = image.flatten(2).transpose(1, 2), landmarks.flatten(2).transpose(1, 2)
            bias = None
        else:
            s = self.window
            kv_tokens, hh, ww = self._windows(image, s, self.pad_value)
            q_tokens = self._windows(landmarks, s, self.pad_value)[0]
            m = s * s
            bias = self.bias[self.bias_index.flatten()].reshape(m, m, self.heads).permute(2, 0, 1)
            real = self._windows(image.new_ones(1, 1, h, w), s, 0.0)[0][..., 0] > 0  # (windows, m): not padding
            masked = torch.zeros(real.shape, dtype=image.dtype, device=image.device).masked_fill(~real, -math.inf)
            bias = bias[None] + masked.repeat(b, 1)[:, None, None, :]  # (B * windows, heads, m, m)
        n, m, _ = kv_tokens.shape
        d = c // self.heads
        q = self.q(q_tokens).reshape(n, m, self.heads, d).transpose(1, 2)
        k, v = self.kv(kv_tokens).reshape(n, m, 2, self.heads, d).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        out = self.out(out.transpose(1, 2).reshape(n, m, c))
        if self.window is None:
            return out.transpose(1, 2).reshape(b, c, h, w)
        s = self.window
        out = out.reshape(b, hh, ww, s, s, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, hh * s, ww * s)
        return out[:, :, :h, :w]


class DILBlock(nn.Module):
    """``X' = MHCA(X) + X ; X'' = MLP(LN(X')) + X'`` (Eqs. 8-9), on (B, C, H, W) maps; the landmark features
    (``landmark_channels`` wide, from the frozen landmark network) are projected to the image's width."""

    def __init__(self, channels: int, landmark_channels: int, heads: int, window: int | None = None):
        super().__init__()
        self.project_landmarks = nn.Conv2d(landmark_channels, channels, 1)
        self.norm_image, self.norm_landmarks = ChannelLayerNorm(), ChannelLayerNorm()
        self.attention = CrossAttention(channels, heads, window)
        self.norm = nn.LayerNorm(channels)
        self.mlp = nn.Sequential(nn.Linear(channels, 2 * channels), nn.GELU(), nn.Linear(2 * channels, channels))

    def forward(self, image: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        landmarks = self.project_landmarks(landmarks)
        x = image + self.attention(self.norm_image(image), self.norm_landmarks(landmarks))
        tokens = x.permute(0, 2, 3, 1)
        return (tokens + self.mlp(self.norm(tokens))).permute(0, 3, 1, 2)


def run_blocks(level: nn.ModuleList, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """One scale's DT blocks in turn, each modulated by the EPR ``z``."""
    for block in level:
        x = block(x, z)
    return x


class DTUNet(nn.Module):
    """The DT blocks "layered in a U-Net style" (the paper, after DiffIR's DIRformer) over the trunk's three
    scales: an encoder (each level's DT blocks on the trunk's map plus the level above, downsampled by a strided
    3x3 convolution), the deepest level as the bottleneck, and a decoder (upsampled, concatenated with the
    encoder's skip, merged by a 1x1 convolution, then the level's DT blocks again). Returns one map per scale,
    finest first: the decoder's two and the bottleneck."""

    def __init__(self, width: int, z_dim: int, blocks: tuple[int, int, int], heads: tuple[int, int, int]):
        super().__init__()

        def level(n: int, h: int) -> nn.ModuleList:
            return nn.ModuleList(DTBlock(width, h, z_dim) for _ in range(n))

        self.encoder = nn.ModuleList(level(n, h) for n, h in zip(blocks, heads))
        self.decoder = nn.ModuleList(level(n, h) for n, h in zip(blocks[:-1], heads[:-1]))
        self.down = nn.ModuleList(nn.Conv2d(width, width, 3, stride=2, padding=1) for _ in blocks[:-1])
        self.merge = nn.ModuleList(nn.Conv2d(2 * width, width, 1) for _ in blocks[:-1])

    def forward(self, maps: list[torch.Tensor], z: torch.Tensor) -> list[torch.Tensor]:
        skips, x = [], None
        for i, (f, level) in enumerate(zip(maps, self.encoder)):
            if x is not None:  # the trunk's map at this scale plus the level above, downsampled to it
                f = f + F.interpolate(self.down[i - 1](x), size=f.shape[-2:], mode="nearest")
            x = run_blocks(level, f, z)
            skips.append(x)
        out = [x]
        for i in reversed(range(len(self.decoder))):
            up = F.interpolate(x, size=skips[i].shape[-2:], mode="bilinear", align_corners=False)
            x = run_blocks(self.decoder[i], self.merge[i](torch.cat([skips[i], up], dim=1)), z)
            out.insert(0, x)
        return out


class UDCformer(nn.Module):
    """DT blocks and DIL blocks on the trunk's three feature maps (each projected to ``width`` channels), fused
    into ``tokens_per_scale ** 2`` tokens per scale, a CLS token read by ``depth`` transformer blocks, and the
    classifier on it (``head="udcformer"``, the paper's: the UDCformer's output is the prediction), or on the
    trunk's pooled feature plus the CLS through a projection that starts at zero (``head="bypass"``).
    ``layout``: ``sequence`` runs each scale's DT blocks on its own map; ``unet`` layers them U-Net style across
    the scales (:class:`DTUNet`, the paper's description)."""

    def __init__(self, num_classes: int, z_dim: int = 256, dims: tuple[int, int, int] = TRUNK_DIMS,
                 landmark_dims: tuple[int, int, int] = LANDMARK_DIMS, width: int = 64,
                 blocks: tuple[int, int, int] = (1, 1, 1), heads: tuple[int, int, int] = (1, 2, 4),
                 token_dim: int = 128, tokens_per_scale: int = 2, depth: int = 2, window: int | None = None,
                 layout: str = "sequence", head: str = "udcformer"):
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"layout is {' or '.join(LAYOUTS)}, not '{layout}'")
        if head not in HEADS:
            raise ValueError(f"head is {' or '.join(HEADS)}, not '{head}'")
        self.layout, self.head_kind = layout, head
        # each trunk map is projected to ``width`` channels first, as POSTER++ projects its IR-50 maps: the DT and
        # DIL blocks at the trunk's own widths (up to 512) cost twice the trunk itself on CPU
        self.reduce = nn.ModuleList(nn.Sequential(nn.Conv2d(d, width, 1, bias=False), nn.BatchNorm2d(width))
                                    for d in dims)
        if layout == "unet":
            self.dt = DTUNet(width, z_dim, tuple(blocks), tuple(heads))
        else:
            self.dt = nn.ModuleList(nn.ModuleList(DTBlock(width, h, z_dim) for _ in range(n))
                                    for n, h in zip(blocks, heads))
        self.dil = nn.ModuleList(DILBlock(width, lm, h, window) for lm, h in zip(landmark_dims, heads))
        self.fuse = nn.ModuleList(nn.Conv2d(2 * width, token_dim, 1) for _ in dims)
        self.grid = tokens_per_scale
        self.cls = nn.Parameter(torch.zeros(1, 1, token_dim))
        self.position = nn.Parameter(torch.zeros(1, 1 + len(dims) * tokens_per_scale**2, token_dim))
        nn.init.trunc_normal_(self.position, std=0.02)
        self.blocks = nn.Sequential(*(TransformerBlock(token_dim) for _ in range(depth)))
        self.norm = nn.LayerNorm(token_dim)
        if head == "bypass":
            self.merge = zero_(nn.Linear(token_dim, dims[-1]))
        self.head = nn.Linear(dims[-1] if head == "bypass" else token_dim, num_classes)

    def features(self, maps: list[torch.Tensor], pooled: torch.Tensor, z: torch.Tensor,
                 landmark_maps: list[torch.Tensor]) -> torch.Tensor:
        """The penultimate features: the transformer's CLS token (normalised), or with the bypass head the trunk's
        pooled feature plus that token, projected."""
        tokens = [self.cls.expand(pooled.shape[0], -1, -1)]  # shape, not len(): traced as the batch, not a constant
        maps = [reduce(f) for f, reduce in zip(maps, self.reduce)]
        if self.layout == "unet":
            maps = self.dt(maps, z)
        else:
            maps = [run_blocks(level, f, z) for f, level in zip(maps, self.dt)]
        for f, dil, fuse, lm in zip(maps, self.dil, self.fuse, landmark_maps):
            lm = F.interpolate(lm, size=f.shape[-2:], mode="bilinear", align_corners=False)
            fused = fuse(torch.cat([f, dil(f, lm)], dim=1))
            tokens.append(F.adaptive_avg_pool2d(fused, self.grid).flatten(2).transpose(1, 2))
        sequence = torch.cat(tokens, dim=1) + self.position
        cls = self.norm(self.blocks(sequence)[:, 0])
        return pooled + self.merge(cls) if self.head_kind == "bypass" else cls

    def forward(self, maps: list[torch.Tensor], pooled: torch.Tensor, z: torch.Tensor,
                landmark_maps: list[torch.Tensor]) -> torch.Tensor:
        return self.head(self.features(maps, pooled, z, landmark_maps))
