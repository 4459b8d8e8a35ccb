"""Training augmentation on the run's device, in batches: the official codes' crops (DACL's five-crop, MA-Net's
random resized crop), horizontal flip, Gaussian noise (EAC's, or SCN's ``basic_aug``: a flip or the noise), affine
jitter (kornia's matrices, torch's grid sampling), normalisation and random erasing, on uint8 NHWC batches straight
from the image cache; and the evaluation view a recipe's crop implies (:func:`eval_input`).

Every random number is a counter-based hash of (seed, epoch, image position, draw), computed on the host from the
batch's positions: an image gets the same augmentation in any batch, on any device, with any number of loader
workers or ranks, and a resumed epoch replays exactly. The parameters are drawn first (:func:`draw_params`), then
applied by pure tensor functions (:func:`augment`), as kornia's modules do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cache

import torch
import torch.nn.functional as F
from kornia.geometry.transform import get_affine_matrix2d

from baselines.randomness import MASK, hash_normal, mix
from udcbench.config import TrainConfig

#: The affine jitter: probability, scale range, shift (fraction of the side), rotation (degrees).
AFFINE_P, AFFINE_SCALE, AFFINE_SHIFT, AFFINE_DEGREES = 0.5, (0.9, 1.1), 0.06, 10.0
#: Random erasing: the erased area's share of the image and its aspect ratio range.
ERASE_AREA, ERASE_RATIO = (0.02, 0.25), (0.3, 3.3)
#: torchvision's RandomResizedCrop defaults: the crop's area share and aspect ratio.
RESIZED_AREA, RESIZED_RATIO = (0.08, 1.0), (3 / 4, 4 / 3)
#: Draws per image: flip, affine (6), erasing (5), noise, basic_aug's choice, crop (4), the noise's key.
DRAWS = 19


def hash_uniform(seed: int, epoch: int, index: torch.Tensor, draws: int) -> torch.Tensor:
    """``len(index) x draws`` uniform numbers in [0, 1), a pure function of (seed, epoch, index, draw)."""
    key = mix(torch.tensor([(seed * 0x9E3779B1) & MASK]) ^ mix(torch.tensor([epoch & MASK])))
    per_image = mix((index.to(torch.int64) & MASK) ^ key)
    draw = torch.arange(1, draws + 1, dtype=torch.int64) * 0x85EBCA77 & MASK
    return (mix(per_image[:, None] ^ draw[None, :]).double() / 2**32).float()


@dataclass
class AugmentParams:
    """One batch's augmentation, drawn on the host (small tensors, moved to the device with the batch)."""

    flip_index: torch.Tensor  # positions in the batch that are flipped
    affine_index: torch.Tensor  # positions in the batch that get the affine jitter (or a crop)
    affine: torch.Tensor  # len(affine_index) x 2 x 3 output-to-input matrices in grid_sample's coordinates
    erase: torch.Tensor  # B x 4 int (y0, y1, x0, x1), an empty box where nothing is erased
    noise_index: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.int64))  # get noise
    noise_key: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.int64))  # 32-bit, per image
    noise_std: float = 0.0

    def to(self, device: torch.device) -> AugmentParams:
        moved = (t.to(device, non_blocking=True) for t in (self.flip_index, self.affine_index, self.affine,
                                                           self.erase, self.noise_index, self.noise_key))
        return AugmentParams(*moved, noise_std=self.noise_std)


def draw_params(index: torch.Tensor, size: int, config: TrainConfig, epoch: int) -> AugmentParams:
    """The augmentation of the images at training-set positions ``index`` in ``epoch`` (``size`` px squares)."""
    u = hash_uniform(config.seed, epoch, index, DRAWS)
    none = torch.zeros(0, dtype=torch.int64)
    every = torch.arange(len(index))
    flipped = u[:, 0] < 0.5 if config.flip else torch.zeros(len(index), dtype=torch.bool)
    noisy = u[:, 12] < config.noise
    if config.basic_aug:  # SCN's: with p 0.5 one of (flip, noise), each chosen with p 0.5
        picked = u[:, 0] < 0.5
        flipped, noisy = flipped | (picked & (u[:, 13] < 0.5)), noisy | (picked & (u[:, 13] >= 0.5))
    flip = torch.nonzero(flipped).flatten()
    chosen = torch.nonzero(u[:, 1] < AFFINE_P).flatten() if config.affine else none
    a = u[chosen]
    lo, hi = AFFINE_SCALE
    scale = (lo + (hi - lo) * a[:, 2])[:, None].expand(-1, 2).contiguous()
    shift = (2 * a[:, 3:5] - 1) * AFFINE_SHIFT * size
    angle = (2 * a[:, 5] - 1) * AFFINE_DEGREES
    center = torch.full((len(chosen), 2), (size - 1) / 2)
    # pixel matrices to the normalised ones grid_sample takes (align_corners: -1 and 1 at the corner pixels)
    to_norm = torch.tensor([[2 / (size - 1), 0, -1], [0, 2 / (size - 1), -1], [0, 0, 1]]) if size > 1 else torch.eye(3)
    forward = get_affine_matrix2d(shift, center, scale, angle)
    theta = (to_norm @ torch.linalg.inv(forward) @ torch.linalg.inv(to_norm))[:, :2]  # output -> input
    if config.crop != "none":  # every image is cropped (then jittered, where the recipe also jitters)
        crops = crop_matrices(config, u[:, 14:18])
        jitter = torch.eye(3).repeat(len(index), 1, 1)
        jitter[chosen, :2] = theta
        bottom = torch.tensor([0.0, 0.0, 1.0]).expand(len(index), 1, 3)
        theta = (torch.cat([crops, bottom], 1) @ jitter)[:, :2]
        chosen = every
    erase = torch.zeros(len(index), 4, dtype=torch.int64)
    if config.erasing > 0:
        area = (ERASE_AREA[0] + (ERASE_AREA[1] - ERASE_AREA[0]) * u[:, 7]) * size * size
        ratio = torch.exp(math.log(ERASE_RATIO[0]) + (math.log(ERASE_RATIO[1]) - math.log(ERASE_RATIO[0])) * u[:, 8])
        h = torch.sqrt(area * ratio).round().clamp(1, size).long()
        w = torch.sqrt(area / ratio).round().clamp(1, size).long()
        y0 = (u[:, 9] * (size - h + 1)).long()
        x0 = (u[:, 10] * (size - w + 1)).long()
        on = (u[:, 6] < config.erasing).long()
        erase = torch.stack([y0, y0 + h * on, x0, x0 + w * on], dim=1)
    noise = torch.nonzero(noisy).flatten()
    key = (u[noise, 18].double() * 2**32).long()
    return AugmentParams(flip, chosen, theta.float(), erase, noise, key, config.noise_std)


def crop_matrices(config: TrainConfig, u: torch.Tensor) -> torch.Tensor:
    """B x 2 x 3 output-to-input matrices (grid_sample's coordinates) of each image's crop, from 4 uniforms per
    image: DACL's one of five crops (4 corners and the centre) of ``crop_share`` of the side, or torchvision's
    RandomResizedCrop (area share and log-aspect uniform in its default ranges; a crop that would leave the
    image is clamped to it, where torchvision draws again)."""
    b = len(u)
    if config.crop == "five":
        s = config.crop_share
        corners = torch.tensor([[0.0, 0.0], [-1, -1], [1, -1], [-1, 1], [1, 1]]) * (1 - s)
        centre = corners[(u[:, 0] * 5).long().clamp(max=4)]
        half = torch.full((b, 2), s)
    else:
        lo, hi = RESIZED_AREA
        area = lo + (hi - lo) * u[:, 0]
        ratio = torch.exp(math.log(RESIZED_RATIO[0]) + (math.log(RESIZED_RATIO[1]) - math.log(RESIZED_RATIO[0]))
                          * u[:, 1])
        half = torch.stack([torch.sqrt(area * ratio), torch.sqrt(area / ratio)], 1).clamp(max=1.0)
        centre = (2 * u[:, 2:4] - 1) * (1 - half)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, :, 2] = half[:, 0], half[:, 1], centre
    return theta


def eval_input(images: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    """The model's input at evaluation (and prediction): uint8 B x H x W x 3 -> normalised, after the centre crop
    of a recipe that crops one of five (DACL's Resize(256) + CenterCrop(224)); other recipes see the whole image."""
    if config.crop == "five" and len(images):
        b, h = images.shape[:2]
        theta = torch.tensor([[config.crop_share, 0, 0], [0, config.crop_share, 0]], device=images.device)
        images = _warp(images, theta.expand(b, 2, 3))
    return to_input(images, config.mean, config.std)


def _warp(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """uint8 B x H x W x 3 resampled through output-to-input matrices (bilinear, reflected borders, rounded)."""
    picked = images.permute(0, 3, 1, 2).float()
    grid = F.affine_grid(theta.to(picked.dtype), list(picked.shape), align_corners=True)
    warped = F.grid_sample(picked, grid, mode="bilinear", padding_mode="reflection", align_corners=True)
    return warped.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


@cache
def _affine_constants(mean: tuple, std: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``1 / (255 std)`` and ``mean / std`` per channel, made once per device: a tensor built from Python numbers
    on a GPU is a blocking copy, two syncs per step if made per call."""
    return (torch.tensor([1 / (255 * s) for s in std], device=device),
            torch.tensor([m / s for m, s in zip(mean, std)], device=device))


def to_input(images: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 B x H x W x 3 -> the model's normalised float input ``(x / 255 - mean) / std``, B x 3 x H x W in
    channels-last memory (computed in NHWC, in place on one float copy, with per-pixel-tiled constants that keep
    the arithmetic vectorised)."""
    b, h, w, c = images.shape
    scale, shift = _affine_constants(tuple(mean), tuple(std), images.device)
    scale, shift = scale.repeat(h * w), shift.repeat(h * w)
    x = images.reshape(b, h * w * c).float().mul_(scale).sub_(shift)
    return x.view(b, h, w, c).permute(0, 3, 1, 2)


def augment(images: torch.Tensor, params: AugmentParams, mean, std) -> torch.Tensor:
    """Flip, crop and affine jitter (bilinear, reflected borders, rounded to uint8 as an 8-bit image library does),
    Gaussian noise (clipped and truncated to uint8, as the official codes' ``astype(np.uint8)``), normalise, erase
    (to 0, the normalised mean): uint8 B x H x W x 3 on any device in, the normalised B x 3 x H x W float batch out
    (channels-last). Only the images drawn for a step are touched by it."""
    x = images
    if len(params.flip_index) or len(params.affine_index) or len(params.noise_index):
        x = images.clone()
    if len(params.flip_index):
        x.index_copy_(0, params.flip_index, x.index_select(0, params.flip_index).flip(2))
    if len(params.affine_index):
        x.index_copy_(0, params.affine_index, _warp(x.index_select(0, params.affine_index), params.affine))
    if len(params.noise_index):
        picked = x.index_select(0, params.noise_index).float()
        noisy = picked + params.noise_std * hash_normal(params.noise_key, tuple(picked.shape[1:]))
        x.index_copy_(0, params.noise_index, noisy.clamp_(0, 255).to(torch.uint8))
    out = to_input(x, mean, std)
    h, w = x.shape[1:3]
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    e = params.erase
    box = (ys >= e[:, 0, None, None]) & (ys < e[:, 1, None, None]) & (xs >= e[:, 2, None, None]) & \
        (xs < e[:, 3, None, None])
    return out.masked_fill_(box[:, None], 0.0)
