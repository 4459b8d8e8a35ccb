"""POSTER++ (Mao et al., "POSTER V2: A simpler and stronger facial expression recognition network", arXiv
2301.12149), after the authors' code (Talented-Q/POSTER_V2), read, not copied.

Image features at three scales (the first three stages of IR-50 in the paper, 64 / 128 / 256 channels; on the
``cpu`` budget ResNet-18's layer1-3, the same widths), each through a stride-2 3x3 convolution, are attended
by queries from a frozen landmark network (MobileFaceNet in the paper; here :class:`LandmarkNet`, pre-trained
on the dataset's landmarks, its features pooled to the image maps' sizes and projected to their widths): a
window cross-attention whose window is the whole map (the official 28 / 14 / 7 windows on 28 / 14 / 7 maps),
keys and values from the layer-normed image tokens, the landmark features as queries as they are (no query
projection), a learned relative position bias; then a residual feed-forward with layer scale 1e-5 and stochastic
depth. The three maps are embedded to 768-d tokens (two stride-2 convolutions, one, and a 1x1), concatenated
with a CLS token and position embeddings, read by two vanilla transformer blocks; the CLS goes through an SE
gate and a linear head. Loss: cross-entropy (the official recipe adds SAM, ``TrainConfig.sam_rho``).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from baselines.backbone import WeightsError, load_resnet18_weights, load_strictly, read_checkpoint, resnet18_trunk
from baselines.base import Batch, FERModel, StepOutput, cross_entropy
from baselines.landmarks import LANDMARK_DIMS, LandmarkNet

#: Channels of the three image scales (IR-50's first three stages, ResNet-18's layer1-3).
SCALE_DIMS = (64, 128, 256)
HEADS = (2, 4, 8)
EMBED_DIM = 768


def _half(n: int) -> int:
    """A map side after a stride-2 convolution with ``padding = kernel // 2`` (or ResNet's stem pooling)."""
    return (n - 1) // 2 + 1


class IRBlock(nn.Module):
    """IR-50's unit (ArcFace's ``bottleneck_IR``): BN, 3x3 conv, PReLU, 3x3 conv (strided), BN, plus a shortcut
    (a strided identity, or a 1x1 conv and BN where the width changes). Attribute names follow the official
    checkpoints', so an ``ir50.pth`` loads strictly."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.shortcut_layer = (nn.MaxPool2d(1, stride) if cin == cout else
                               nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))
        self.res_layer = nn.Sequential(nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.PReLU(cout),
                                       nn.Conv2d(cout, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class IR50Stages(nn.Module):
    """The first three stages of IR-50 (3, 4 and 14 units), on the input resized to 112 x 112 as in POSTER++:
    maps of 64 / 128 / 256 channels at 56 / 28 / 14."""

    size = 112

    def __init__(self):
        super().__init__()
        self.input_layer = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        widths, units = (64, *SCALE_DIMS), (3, 4, 14)
        for i, n in enumerate(units):
            blocks = [IRBlock(widths[i], widths[i + 1], 2)] + [IRBlock(widths[i + 1], widths[i + 1], 1)
                                                               for _ in range(n - 1)]
            self.add_module(f"body{i + 1}", nn.Sequential(*blocks))

    def map_sizes(self, input_size: int) -> tuple[int, int, int]:
        return _half(self.size), _half(_half(self.size)), _half(_half(_half(self.size)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.input_layer(F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False))
        maps = []
        for body in (self.body1, self.body2, self.body3):
            x = body(x)
            maps.append(x)
        return maps


class ResNet18Stages(nn.Module):
    """torchvision's ResNet-18 up to layer3 (``trunk``): layer1 / layer2 / layer3 maps, 64 / 128 / 256 channels
    at strides 4 / 8 / 16."""

    def __init__(self):
        super().__init__()
        self.trunk = resnet18_trunk()[:7]

    @staticmethod
    def map_sizes(input_size: int) -> tuple[int, int, int]:
        s4 = _half(_half(input_size))
        return s4, _half(s4), _half(_half(s4))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.trunk[:5](x)
        maps = [x]
        for layer in self.trunk[5:]:
            maps.append(layer(maps[-1]))
        return maps


def load_ir50_weights(stages: IR50Stages, path: Path | str) -> dict:
    """Load an IR-50 face-recognition checkpoint (ArcFace / POSTER++ naming: ``input_layer.*``, ``body1.*`` ...,
    or one ``body.N`` sequence of 24 units, unwrapped from ``state_dict`` / ``module.``) into ``stages``
    strictly; the fourth stage and the output layer are ignored. Returns provenance."""
    path = Path(path)
    state = read_checkpoint(path)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: the file does not hold a state dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    starts = (0, 3, 7, 21)  # one ``body`` of 3 + 4 + 14 + 3 units -> body1 / body2 / body3 (the fourth dropped)
    renamed = {}
    for key, value in state.items():
        head, _, rest = key.partition(".")
        if head == "body":
            unit, _, tail = rest.partition(".")
            stage = sum(int(unit) >= s for s in starts)
            if stage <= 3:
                renamed[f"body{stage}.{int(unit) - starts[stage - 1]}.{tail}"] = value
        elif head != "output_layer":
            renamed[key] = value
    return load_strictly(stages, renamed, path, "an IR-50")


def relative_position_index(window: int) -> torch.Tensor:
    """(window^2, window^2) indices into a ``(2 window - 1)^2`` table of relative position biases (Swin)."""
    grid = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    relative = (grid[:, :, None] - grid[:, None, :]).permute(1, 2, 0) + window - 1
    return relative[..., 0] * (2 * window - 1) + relative[..., 1]


class GlobalQueryAttention(nn.Module):
    """Window attention with global queries (GC ViT, as POSTER++ uses it) over one window that covers the map:
    keys and values from the image tokens, the queries given (the landmark tokens, not projected), split into
    ``heads``; scaled dot products plus a learned relative position bias; an output projection."""

    def __init__(self, dim: int, heads: int, window: int):
        super().__init__()
        self.heads, self.window = heads, window
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.bias_table, std=0.02)
        self.register_buffer("bias_index", relative_position_index(window), persistent=False)

    def forward(self, tokens: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """``tokens``, ``queries``: (B, window^2, dim)."""
        b, n, c = tokens.shape
        d = c // self.heads
        k, v = self.kv(tokens).reshape(b, n, 2, self.heads, d).permute(2, 0, 3, 1, 4)
        q = queries.reshape(b, n, self.heads, d).transpose(1, 2)
        bias = self.bias_table[self.bias_index.flatten()].reshape(n, n, self.heads).permute(2, 0, 1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype)[None])
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class CrossScale(nn.Module):
    """One scale: ``x = LN(image) + g1 * attention(LN(image), landmarks)``; ``x + g2 * MLP(LN(x))`` (layer
    scale g = 1e-5, stochastic depth ``drop_path``), on (B, C, H, W) maps with H = W = ``window``."""

    def __init__(self, dim: int, heads: int, window: int, drop_path: float, layer_scale: float = 1e-5):
        super().__init__()
        self.norm_image, self.norm = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attention = GlobalQueryAttention(dim, heads, window)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.gamma1 = nn.Parameter(torch.full((dim,), layer_scale))
        self.gamma2 = nn.Parameter(torch.full((dim,), layer_scale))
        self.drop = torchvision.ops.StochasticDepth(drop_path, "row")

    def forward(self, image: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        b, c, h, w = image.shape
        shortcut = self.norm_image(image.flatten(2).transpose(1, 2))
        x = shortcut + self.drop(self.gamma1 * self.attention(shortcut, landmarks.flatten(2).transpose(1, 2)))
        x = x + self.drop(self.gamma2 * self.mlp(self.norm(x)))
        return x.transpose(1, 2).reshape(b, c, h, w)


class TransformerBlock(nn.Module):
    """Vanilla pre-LN transformer block (multi-head self-attention + MLP), as POSTER++ and LRDif fuse tokens."""

    def __init__(self, dim: int, heads: int = 4, mlp_ratio: float = 2.0, eps: float = 1e-5):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=eps), nn.LayerNorm(dim, eps=eps)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.attention(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class SEGate(nn.Module):
    """``x * sigmoid(W2 relu(W1 x))`` on the CLS feature."""

    def __init__(self, dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.net(x)


class PosterPP(FERModel):
    """POSTER++ on an ``input_size`` x ``input_size`` input, with the image trunk ``ir50`` (the paper's) or
    ``resnet18`` (layer1-3, the ``cpu`` budget's: ``--weights`` then takes the baselines' MS-Celeb ResNet-18)."""

    channels_last = True

    def __init__(self, num_classes: int, input_size: int = 224, trunk: str = "ir50", depth: int = 2,
                 embed_dim: int = EMBED_DIM, landmark_dims: tuple[int, int, int] = LANDMARK_DIMS):
        super().__init__()
        if trunk == "ir50":
            self.image = IR50Stages()
        elif trunk == "resnet18":
            self.image = ResNet18Stages()
        else:
            raise ValueError(f"trunk is 'ir50' or 'resnet18', not '{trunk}'")
        self.trunk_name = trunk
        sizes = [_half(s) for s in self.image.map_sizes(input_size)]  # after the stride-2 convolutions
        self.sizes = sizes
        self.reduce = nn.ModuleList(nn.Conv2d(d, d, 3, 2, 1) for d in SCALE_DIMS)
        self.landmarks = LandmarkNet(tuple(landmark_dims))
        self.queries = nn.ModuleList(nn.Conv2d(lm, d, 1) for lm, d in zip(landmark_dims, SCALE_DIMS))
        drop = torch.linspace(0, 0.5, 5)[:3].tolist()  # the official stochastic depth of the three scales
        self.scales = nn.ModuleList(CrossScale(d, h, s, p) for d, h, s, p in zip(SCALE_DIMS, HEADS, sizes, drop))
        self.tokenize = nn.ModuleList([
            nn.Sequential(nn.Conv2d(SCALE_DIMS[0], embed_dim, 3, 2, 1), nn.Conv2d(embed_dim, embed_dim, 3, 2, 1)),
            nn.Conv2d(SCALE_DIMS[1], embed_dim, 3, 2, 1),
            nn.Conv2d(SCALE_DIMS[2], embed_dim, 1),
        ])
        tokens = _half(_half(sizes[0])) ** 2 + _half(sizes[1]) ** 2 + sizes[2] ** 2
        self.cls = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.position = nn.Parameter(torch.zeros(1, 1 + tokens, embed_dim))
        self.blocks = nn.Sequential(*(TransformerBlock(embed_dim, 8, 4.0, 1e-6) for _ in range(depth)))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.se = SEGate(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes)
        for module in (self.tokenize, self.blocks, self.norm, self.se, self.head):  # the official ViT's init
            module.apply(_vit_init)
        nn.init.trunc_normal_(self.cls, std=0.02)
        nn.init.trunc_normal_(self.position, std=0.02)

    def load_backbone_weights(self, path: Path | str) -> dict:
        """``--weights``: an IR-50 checkpoint for the ``ir50`` trunk, a torchvision-named ResNet-18 (its layers up
        to layer3) for ``resnet18``."""
        if isinstance(self.image, IR50Stages):
            return load_ir50_weights(self.image, path)
        return load_resnet18_weights(self.image.trunk, path)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # the frozen landmark network
            landmarks = self.landmarks.features(x.contiguous())
        tokens = []
        for f, lm, reduce, query, scale, tokenize, size in zip(self.image(x), landmarks, self.reduce, self.queries,
                                                               self.scales, self.tokenize, self.sizes):
            q = query(F.adaptive_avg_pool2d(lm, size))
            tokens.append(tokenize(scale(reduce(f), q)).flatten(2).transpose(1, 2))
        sequence = torch.cat([self.cls.expand(x.shape[0], -1, -1), *tokens], dim=1) + self.position
        return self.se(self.norm(self.blocks(sequence))[:, 0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))

    def training_step(self, batch: Batch, epoch: int) -> StepOutput:
        logits = self(batch.images)
        loss = cross_entropy(logits, batch)
        return StepOutput(loss, logits, {"ce": loss.detach()})

    def train(self, mode: bool = True):
        """The landmark network stays frozen once pre-trained."""
        super().train(mode)
        self.landmarks.eval().requires_grad_(False)
        return self


def _vit_init(m: nn.Module) -> None:
    """The official ViT part's initialisation: linear layers N(0, 0.01) truncated, convolutions He (fan out)."""
    if isinstance(m, nn.MultiheadAttention):  # its q, k, v projections (one Linear in the official code)
        nn.init.trunc_normal_(m.in_proj_weight, std=0.01)
        nn.init.zeros_(m.in_proj_bias)
    elif isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.01)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, mode="fan_out")
        if m.bias is not None:
            nn.init.zeros_(m.bias)
