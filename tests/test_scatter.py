"""The scatter halo, veil and column pattern (what an ideal binary mask leaves out): float64 references and
replay."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from degradations import build_degradation
from degradations import functional as Fd
from degradations.recipe import RecipeError, parse_recipe


def _conv64(x, psf):
    """Per-channel convolution by the definition, reflect-padded, in float64."""
    kh, kw = psf.shape[-2:]
    padded = F.pad(x, (kw // 2, kw // 2, kh // 2, kh // 2), mode="reflect")
    return F.conv2d(padded, psf.flip(-1, -2)[:, None], groups=3)


def test_gaussian_halo_is_the_weighted_sum_of_its_sampled_gaussians():
    components = torch.tensor([[3.0, 2.0, 1.0], [1.0, 0.7, 4.0]], dtype=torch.float64)
    halo = Fd.gaussian_halo(15, components)
    r = np.arange(15) - 7
    expected = np.zeros((15, 15))
    for w, sx, sy in components.tolist():
        g = np.exp(-0.5 * (r[:, None] / sy) ** 2 - 0.5 * (r[None, :] / sx) ** 2)
        expected += w / 4.0 * g / g.sum()
    np.testing.assert_allclose(halo.numpy(), expected / expected.sum(), rtol=0, atol=1e-15)
    assert halo.sum().item() == pytest.approx(1.0)
    torch.testing.assert_close(halo, halo.flip(0), rtol=0, atol=1e-18)
    torch.testing.assert_close(halo, halo.flip(1), rtol=0, atol=1e-18)
    wide = Fd.gaussian_halo(15, torch.tensor([[1.0, 5.0, 1.0]], dtype=torch.float64))
    assert wide.sum(0).std() < wide.sum(1).std()  # sigma_x > sigma_y: spread along x, so its columns are flatter


def test_scatter_blur_equals_one_blur_by_each_images_mixed_psf():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 30, 26, generator=g, dtype=torch.float64)
    psf = torch.rand(3, 5, 5, generator=g, dtype=torch.float64)
    psf /= psf.sum(dim=(1, 2), keepdim=True)
    halo = Fd.gaussian_halo(21, torch.tensor([[1.0, 6.0, 2.0]], dtype=torch.float64)).expand(3, 21, 21)
    fraction = torch.tensor([0.3, 0.8], dtype=torch.float64)
    out = Fd.scatter_blur(x, psf, halo, fraction)
    for i, f in enumerate(fraction.tolist()):
        mixed = f * halo.clone()
        mixed[:, 8:13, 8:13] += (1 - f) * psf
        torch.testing.assert_close(out[i : i + 1], _conv64(x[i : i + 1], mixed), rtol=0, atol=1e-12)


def test_veil_and_column_pattern_by_hand():
    x = torch.rand(2, 3, 6, 8, dtype=torch.float64)
    v = torch.tensor([0.0, 0.25], dtype=torch.float64)
    out = Fd.veil(x, v)
    torch.testing.assert_close(out[0], x[0])
    torch.testing.assert_close(out[1], 0.75 * x[1] + 0.25 * x[1].mean(dim=(1, 2), keepdim=True))
    torch.testing.assert_close(out.mean(dim=(2, 3)), x.mean(dim=(2, 3)))  # energy kept
    flat = torch.full((1, 3, 2, 8), 0.5, dtype=torch.float64)
    one = torch.ones(1, dtype=torch.float64)
    striped = Fd.column_pattern(flat, 0.01 * one, 4.0 * one, 0.0 * one)
    expected = 0.5 + 0.01 * torch.tensor([0.0, 1.0, 0.0, -1.0] * 2, dtype=torch.float64)
    torch.testing.assert_close(striped[0, 2, 1], expected, rtol=0, atol=1e-15)
    assert (striped[0, :, 0] == striped[0, :, 1]).all()  # the same in every row and channel


SCATTER_RECIPE = {"kind": "udc", "gains": {c: [0.9, 1.0] for c in "rgb"}, "photons": [4000, 10000],
                  "psf": {"mask": "toled", "kernel_px": 15},
                  "scatter": {"fraction": [0.5, 0.7], "kernel_px": 31, "components": [[1.0, 6.0, 2.0]]},
                  "veil": [0.05, 0.1], "stripes": {"amplitude": [0.001, 0.002], "period": [30, 37]}}


def test_a_scatter_recipe_replays_and_its_parts_act():
    recipe = parse_recipe(SCATTER_RECIPE)
    module = build_degradation(recipe)
    x = torch.rand(3, 3, 40, 40, generator=torch.Generator().manual_seed(2))
    y = module.capture(x, generator=[torch.Generator().manual_seed(i) for i in range(3)])
    params = module.params
    assert {"scatter", "veil", "stripe_amplitude", "stripe_period", "stripe_phase"} <= set(params)
    assert ((params["scatter"] >= 0.5) & (params["scatter"] <= 0.7)).all()
    assert torch.equal(module.capture(x, params=params), y)
    # the scatter spreads a point much further than the diffraction PSF alone
    point = torch.zeros(1, 3, 61, 61)
    point[..., 30, 30] = 1.0
    plain = build_degradation(parse_recipe({k: v for k, v in SCATTER_RECIPE.items() if k not in ("scatter", "veil",
                                                                                                   "stripes")}))
    fixed = {k: v[:1] for k, v in params.items()}
    fixed["veil"], fixed["stripe_amplitude"] = torch.zeros(1), torch.zeros(1)  # the halo alone here
    spread = module(point, params=fixed, noise=False, quantize=False)
    narrow = plain(point, params={k: fixed[k] for k in ("gains", "photons", "noise_seed")}, noise=False, quantize=False)
    assert spread[0, 1, 30, 30] < 0.7 * narrow[0, 1, 30, 30]
    assert narrow[0, 1, 30, 40] == 0 < 0.01 < spread[0, 1, 30, 40]  # 10 px out along x, beyond the 15-px PSF
    assert spread[0, 1, 30, 40] > 2 * spread[0, 1, 40, 30]  # the halo is wider along x


def test_presets_without_scatter_draw_what_they_always_drew():
    module = build_degradation(parse_recipe({k: v for k, v in SCATTER_RECIPE.items()
                                             if k not in ("scatter", "veil", "stripes")}))
    assert set(module.sample(2, torch.Generator().manual_seed(0))) == {"gains", "photons", "noise_seed"}


@pytest.mark.parametrize("bad", [{"scatter": {"fraction": [0.5, 1.5], "kernel_px": 31, "components": [[1, 2, 3]]}},
                                 {"scatter": {"fraction": [0.5, 0.6], "kernel_px": 30, "components": [[1, 2, 3]]}},
                                 {"scatter": {"fraction": [0.5, 0.6], "kernel_px": 31, "components": [[1, -2, 3]]}},
                                 {"veil": [0.2, 0.1]}, {"stripes": {"amplitude": [0, 0.1]}}])
def test_bad_scatter_entries_are_refused(bad):
    with pytest.raises(RecipeError):
        parse_recipe({**SCATTER_RECIPE, **bad})


def test_stripes_keep_their_capture_period_at_any_scale():
    recipe = parse_recipe({**{k: v for k, v in SCATTER_RECIPE.items() if k not in ("scatter", "veil")},
                           "gains": {c: [1.0, 1.0] for c in "rgb"}})
    module = build_degradation(recipe)
    flat = torch.full((1, 3, 16, 64), 0.5)
    module(flat, psf_scale=0.5, generator=torch.Generator().manual_seed(0), noise=False, quantize=False)
    period = module.params["stripe_period"].item() * 0.5  # in this image's pixels
    out = module(flat, psf_scale=0.5, params=module.params, noise=False, quantize=False)[0, 1, 8]
    spectrum = torch.fft.rfft(out - out.mean()).abs()
    assert abs(64 / spectrum.argmax().item() - period) < period * 0.25
    assert math.isclose(module.params["stripe_period"].item(), period * 2)
