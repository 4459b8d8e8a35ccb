import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from degradations import RecipeError, build_degradation, load_recipe, parse_recipe_override, preset_names
from degradations import functional as Fd
from degradations.psf import (
    Optics,
    central_lobe_fraction,
    display_psf,
    load_measured_psf,
    mtf,
    psf_at_wavelength,
    resample_psf,
)
from degradations.recipe import Recipe, parse_recipe


@pytest.mark.parametrize("mask", ["toled", "poled"])
def test_psf_is_a_normalised_density_with_the_open_ratio_in_its_central_lobe(mask):
    optics = Optics(mask=mask)
    psf = display_psf(optics)
    assert psf.shape == (3, 31, 31) and (psf >= 0).all()
    np.testing.assert_allclose(psf.sum(axis=(1, 2)), 1.0, atol=1e-9)
    fine, pitch = psf_at_wavelength(optics, 550)
    spacing = 550e-3 * optics.focal_mm * 1e3 / (optics.cell().shape[1] * optics.mask_sample_um) / pitch
    lobe = central_lobe_fraction(fine, spacing / 2)
    assert abs(lobe - optics.open_ratio) / optics.open_ratio < 0.05, (lobe, optics.open_ratio)


def test_toled_psf_smears_horizontally():
    optics = Optics(mask="toled")
    assert 1.8 < optics.order_spacing_px() < 2.3
    green = display_psf(optics)[1]
    f = np.array([0.1])
    assert mtf(green, f, "x")[0] < 0.3 < 0.9 < mtf(green, f, "y")[0]
    yy, xx = np.mgrid[-15:16, -15:16]
    assert (green * xx**2).sum() > 10 * (green * yy**2).sum()


def test_resample_psf_preserves_energy_and_centre():
    psf = display_psf(Optics())
    np.testing.assert_allclose(resample_psf(psf, 1.0), psf, atol=1e-12)
    small = resample_psf(psf, 0.2)
    assert small.shape[1] % 2 == 1 and small.shape[1] < psf.shape[1]
    np.testing.assert_allclose(small.sum(axis=(1, 2)), 1.0)
    c = small.shape[1] // 2
    assert small[1, c, c] == small[1].max()
    with pytest.raises(ValueError):
        resample_psf(psf, 0.0)


def _reference_conv(x: torch.Tensor, psf: torch.Tensor) -> torch.Tensor:
    ph, pw = psf.shape[-2] // 2, psf.shape[-1] // 2
    padded = F.pad(x, (pw, pw, ph, ph), mode="reflect")
    return F.conv2d(padded, psf.flip(-1, -2)[:, None], groups=3)


@pytest.mark.parametrize("shape", [(5, 5), (7, 3), (21, 21)])
def test_fft_and_direct_blur_equal_a_float64_spatial_convolution(shape):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 40, 33, generator=g, dtype=torch.float64)
    psf = torch.rand(3, *shape, generator=g, dtype=torch.float64)
    psf /= psf.sum(dim=(1, 2), keepdim=True)
    reference = _reference_conv(x, psf)
    torch.testing.assert_close(Fd.blur_fft(x, psf), reference, rtol=0, atol=1e-12)
    torch.testing.assert_close(Fd.blur_direct(x, psf), reference, rtol=0, atol=1e-12)
    torch.testing.assert_close(Fd.blur_fft(x.float(), psf.float()), reference.float(), rtol=0, atol=1e-5)


def test_identity_settings_return_the_input_exactly(tmp_path):
    delta = np.zeros((3, 3))
    delta[1, 1] = 1.0
    np.save(tmp_path / "delta.npy", delta)
    recipe = parse_recipe({"kind": "udc", "gains": {c: [1.0, 1.0] for c in "rgb"}, "photons": [1e12, 1e12],
                           "read_noise": 0.0, "psf": {"file": str(tmp_path / "delta.npy")}})
    x = torch.randint(0, 256, (3, 3, 24, 20), generator=torch.Generator().manual_seed(1)).float() / 255
    y = build_degradation(recipe)(x, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(y, x, rtol=0, atol=0)
    torch.testing.assert_close(Fd.blur(x, torch.from_numpy(delta).float().expand(3, 3, 3)), x, rtol=0, atol=0)
    torch.testing.assert_close(Fd.channel_scale(x, torch.ones(3, 3)), x, rtol=0, atol=0)


@pytest.mark.parametrize("level", [0.3, 0.004])
@pytest.mark.parametrize("exact_below", [None, 100.0])
def test_noise_variance_on_a_flat_image_matches_the_model(level, exact_below):
    photons = 5000.0
    x = torch.full((4, 3, 64, 64), level)
    gens = [torch.Generator().manual_seed(i) for i in range(4)]
    y = Fd.poisson_gaussian_noise(x, torch.full((4,), photons), gens, exact_below=exact_below)
    electrons = (y * photons).double()
    expected = level * photons + Fd.READ_NOISE_E**2
    assert abs(electrons.mean().item() - level * photons) < 0.05 * expected**0.5 + 0.5
    assert abs(electrons.var().item() / expected - 1) < 0.05


def test_noise_does_not_depend_on_batching():
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    photons = torch.tensor([2000.0, 4000.0, 6000.0, 8000.0])
    together = Fd.poisson_gaussian_noise(x, photons, [torch.Generator().manual_seed(i) for i in range(4)])
    alone = torch.cat([Fd.poisson_gaussian_noise(x[i : i + 1], photons[i : i + 1], [torch.Generator().manual_seed(i)])
                       for i in range(4)])
    torch.testing.assert_close(together, alone, rtol=0, atol=0)


def test_gradients_flow_through_scaling_and_blur():
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    gains = torch.rand(2, 3, requires_grad=True)
    psf = torch.rand(3, 5, 5, requires_grad=True)
    for blur in (Fd.blur_fft, Fd.blur_direct):
        y = blur(Fd.channel_scale(Fd.srgb_to_linear(x), gains), psf)
        y.square().mean().backward()
        for t in (x, gains, psf):
            assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
            t.grad = None


@pytest.mark.parametrize("name", ["toled", "poled", "lowlight"])
def test_presets_replay_and_per_image_generators(name):
    module = build_degradation(load_recipe(name))
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    y = module(x, psf_scale=0.3, generator=[torch.Generator().manual_seed(i) for i in range(3)])
    again = module(x, psf_scale=0.3, params=module.params)
    torch.testing.assert_close(y, again, rtol=0, atol=0)
    single = module(x[1:2], psf_scale=0.3, generator=[torch.Generator().manual_seed(1)])
    torch.testing.assert_close(single, y[1:2], rtol=0, atol=0)
    assert y.min() >= 0 and y.max() <= 1 and torch.allclose(y * 255, (y * 255).round(), atol=1e-4)


def test_poled_and_lowlight_are_dark_and_poled_cuts_blue():
    x = torch.full((8, 3, 16, 16), 0.6)
    poled = build_degradation(load_recipe("poled"))(x, generator=torch.Generator().manual_seed(0))
    linear = Fd.srgb_to_linear(poled)
    assert poled.mean() < 0.45 and linear[:, 2].mean() < 0.4 * linear[:, 1].mean()  # real P-OLED: 0.070 / 0.214
    dark = build_degradation(load_recipe("lowlight"))(x, generator=torch.Generator().manual_seed(0))
    assert dark.mean() < 0.4


def test_measured_psf_formats(tmp_path):
    import cv2

    gray = np.zeros((4, 6))
    gray[2, 3] = 1.0
    np.save(tmp_path / "g.npy", gray)
    np.save(tmp_path / "rgb.npy", np.stack([gray] * 3, axis=-1))
    cv2.imwrite(str(tmp_path / "psf.png"), (gray * 255).astype(np.uint8))
    for name in ("g.npy", "rgb.npy", "psf.png"):
        psf = load_measured_psf(tmp_path / name)
        assert psf.shape == (3, 7, 7) and np.allclose(psf.sum(axis=(1, 2)), 1)
    np.save(tmp_path / "bad.npy", -gray)
    with pytest.raises(ValueError, match="non-negative"):
        load_measured_psf(tmp_path / "bad.npy")
    with pytest.raises(FileNotFoundError):
        load_measured_psf(tmp_path / "missing.npy")


def test_recipes_validate_and_scale(tmp_path):
    assert preset_names() == ["lowlight", "poled", "toled"]
    toled = load_recipe("toled")
    assert toled.psf_scale("ferplus", 48) == pytest.approx(48 / 256)  # calibrated per dataset
    assert toled.psf_scale("rafdb", 100) == pytest.approx(100 / 512)
    assert toled.psf_scale("kdef", 562) == pytest.approx(562 * 0.45 / 512)
    assert parse_recipe_override(toled, psf_scale=0.5).psf_scale("ferplus", 48) == 0.5
    assert parse_recipe_override(toled, psf_scale=0.5).digest != toled.digest
    documented = Recipe(toled.name, toled.kind, {**toled.raw, "description": "new words", "calibration": [{"drop": 1}]})
    assert documented.digest == toled.digest  # documentation never changes the images
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({**toled.raw, "name": "mine", "photons": [100, 200]}))
    assert load_recipe(path).raw["photons"] == [100, 200]
    for broken, message in (
        ({**toled.raw, "gains": {"r": [0.9, 1.0]}}, "gains"),
        ({**toled.raw, "photons": [200, 100]}, "photons"),
        ({**toled.raw, "psf": {"mask": "lcd"}}, "unknown display mask"),
        ({**toled.raw, "domain": "log"}, "domain"),
        ({**toled.raw, "kind": "fog"}, "kind"),
    ):
        with pytest.raises(RecipeError, match=message):
            parse_recipe(broken)
    with pytest.raises(RecipeError, match="no preset or recipe file"):
        load_recipe("oled9000")


def _cached_psf(cache_dir: str) -> float:
    from degradations.psf import display_psf

    return float(display_psf(load_recipe("toled").optics(), Path(cache_dir)).sum())


def test_processes_sharing_a_psf_cache_do_not_collide(tmp_path):
    """Synthesis workers compute a missing PSF at the same time: each writes its own temporary file."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(4) as pool:
        sums = list(pool.map(_cached_psf, [str(tmp_path)] * 8))
    assert sums == pytest.approx([3.0] * 8)
    assert [p.name for p in (tmp_path / "psf").iterdir()] == [next((tmp_path / "psf").iterdir()).name]
    assert next((tmp_path / "psf").iterdir()).suffix == ".npy"


def test_a_psf_is_cached_through_a_temporary_file_of_this_process_only(tmp_path, monkeypatch):
    import os

    import degradations.psf as psf

    saved = []
    real_save = np.save
    monkeypatch.setattr(psf.np, "save", lambda path, array: saved.append(Path(path)) or real_save(path, array))
    psf.display_psf(load_recipe("toled").optics(), tmp_path)
    assert len(saved) == 1 and f".{os.getpid()}." in saved[0].name  # two workers never share one
    assert [p.suffix for p in (tmp_path / "psf").iterdir()] == [".npy"] and not saved[0].exists()
