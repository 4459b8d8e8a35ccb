"""``udcbench calibrate`` on pairs synthesised from a known recipe: the parameters come back, the fitted
simulation is as close to the capture as the true recipe's, and bad pairs are refused in one line."""

import json

import cv2
import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from degradations import build_degradation, load_recipe
from degradations import functional as Fd
from degradations.recipe import parse_recipe
from udcbench.calibration import quality, render
from udcbench.cli import app
from udcbench.datasets import create_dataset

runner = CliRunner()
TRUTH = {"gains": {"r": [0.9, 0.9], "g": [0.85, 0.85], "b": [0.8, 0.8]}, "photons": [8000, 8000],
         "scatter": {"fraction": [0.8, 0.8], "kernel_px": 31, "components": [[1.0, 4.0, 1.2], [0.5, 3.0, 8.0]]},
         "veil": [0.03, 0.03]}


def _scene() -> torch.Tensor:
    """Six built-in synthetic faces tiled into a 192 x 288 scene, (1, 3, H, W) in [0, 1]."""
    ds = create_dataset("synthetic", n_train=8, n_test=2, size=96)
    tiles = [torch.from_numpy(ds.load_image(r)).permute(2, 0, 1).double() / 255 for r in ds.records("train")[:6]]
    return torch.cat([torch.cat(tiles[:3], dim=2), torch.cat(tiles[3:], dim=2)], dim=1)[None]


def _save(path, image: torch.Tensor) -> None:
    rgb = (image[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    assert cv2.imwrite(str(path), rgb[..., ::-1])


def _halo_moments(components) -> tuple[float, float]:
    c = np.array(components, dtype=float)
    w = c[:, 0] / c[:, 0].sum()
    return float(np.sqrt((w * c[:, 1] ** 2).sum())), float(np.sqrt((w * c[:, 2] ** 2).sum()))


pytestmark = pytest.mark.xdist_group("calibration")  # one worker fits the module's pair once


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pair")
    truth = parse_recipe({**load_recipe("toled").raw, "name": "truth", **TRUTH})
    clean = _scene()
    udc = build_degradation(truth).capture(clean.float(), generator=torch.Generator().manual_seed(1))
    _save(folder / "clean.png", clean)
    _save(folder / "udc.png", udc.double())
    result = runner.invoke(app, ["calibrate", "--clean", str(folder / "clean.png"), "--udc", str(folder / "udc.png"),
                                 "--out", str(folder / "panel.yaml"), "--halo-px", "31", "--json"])
    assert result.exit_code == 0, result.output
    return folder, truth, json.loads(result.stdout[result.stdout.index("{"):])


def _recovers_the_truth(fit: dict) -> None:
    """The fitted values within the tolerances of a pair synthesised from ``TRUTH``."""
    np.testing.assert_allclose(fit["gains"], [0.9, 0.85, 0.8], rtol=0.02)
    assert fit["scatter_fraction"] == pytest.approx(0.8, abs=0.05)
    assert fit["veil"] == pytest.approx(0.03, abs=0.01)
    np.testing.assert_allclose(_halo_moments(fit["components"]), _halo_moments(TRUTH["scatter"]["components"]),
                               rtol=0.1)
    assert fit["photons"] == pytest.approx(8000, rel=0.3)


def test_the_fit_recovers_the_recipe_it_was_synthesised_with(pair):
    folder, truth, fit = pair
    _recovers_the_truth(fit)
    assert abs(fit["shift_px"][0]) < 0.5 and abs(fit["shift_px"][1]) < 0.5


def test_the_fitted_simulation_is_within_half_a_db_of_the_true_recipes(pair):
    folder, truth, fit = pair
    clean = torch.from_numpy(cv2.imread(str(folder / "clean.png"))[..., ::-1].copy()).permute(2, 0, 1)[None] / 255
    udc = torch.from_numpy(cv2.imread(str(folder / "udc.png"))[..., ::-1].copy()).permute(2, 0, 1)[None] / 255
    true_psnr = quality(render(truth, clean.double()), udc.double())[0]
    assert fit["psnr_fit"] > true_psnr - 0.5 and fit["psnr_fit"] > fit["psnr_clean"] + 10


def test_the_written_recipe_is_one_synth_uses(pair, tmp_path):
    folder, _, fit = pair
    recipe = load_recipe(folder / "panel.yaml")
    assert recipe.name == "panel" and recipe.kind == "udc" and recipe.scatter()["kernel_px"] == 31
    lo, hi = recipe.raw["gains"]["g"]
    assert lo < fit["gains"][1] < hi
    assert yaml.safe_load((folder / "panel.yaml").read_text())["calibration"][0]["udc"] == "udc.png"
    again = runner.invoke(app, ["calibrate", "--clean", str(folder / "clean.png"), "--udc", str(folder / "udc.png"),
                                "--out", str(folder / "panel.yaml")])
    assert again.exit_code == 2 and "exists" in again.output


def test_pairs_of_different_sizes_or_of_other_scenes_are_refused(pair, tmp_path):
    folder, _, _ = pair
    udc = cv2.imread(str(folder / "udc.png"))
    cv2.imwrite(str(tmp_path / "small.png"), udc[:-8])
    noise = np.random.default_rng(0).integers(0, 255, udc.shape, dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "other.png"), noise)
    for name, words in (("small.png", "differs in size"), ("other.png", "could not be aligned")):
        result = runner.invoke(app, ["calibrate", "--clean", str(folder / "clean.png"), "--udc",
                                     str(tmp_path / name), "--out", str(tmp_path / "x.yaml")])
        assert result.exit_code == 2 and words in result.output and len(result.output.strip().splitlines()) == 1
        assert not (tmp_path / "x.yaml").exists()


def _misaligned(image: torch.Tensor, dx: float, degrees: float) -> torch.Tensor:
    """``image`` rotated by ``degrees`` about its centre and shifted by ``dx`` px (Lanczos, reflected borders)."""
    array = image[0].permute(1, 2, 0).numpy()
    h, w = array.shape[:2]
    matrix = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), degrees, 1.0)
    matrix[0, 2] += dx
    moved = cv2.warpAffine(array, matrix, (w, h), flags=cv2.INTER_LANCZOS4, borderMode=cv2.BORDER_REFLECT)
    return torch.from_numpy(np.ascontiguousarray(moved)).permute(2, 0, 1)[None].clamp(0, 1)


def test_a_pair_shifted_and_rotated_is_aligned_and_recovers_the_recipe(tmp_path):
    """The capture of a scene moved by 2.5 px and turned by 0.5 degrees: calibrate aligns it, reports the
    alignment, and fits the recipe within the tolerance of the aligned pair."""
    truth = parse_recipe({**load_recipe("toled").raw, "name": "truth", **TRUTH})
    clean = _scene()
    udc = build_degradation(truth).capture(_misaligned(clean, 2.5, 0.5).float(),
                                           generator=torch.Generator().manual_seed(1))
    _save(tmp_path / "clean.png", clean)
    _save(tmp_path / "udc.png", udc.double())
    result = runner.invoke(app, ["calibrate", "--clean", str(tmp_path / "clean.png"), "--udc",
                                 str(tmp_path / "udc.png"), "--out", str(tmp_path / "panel.yaml"), "--halo-px", "31",
                                 "--json"])
    assert result.exit_code == 0, result.output
    fit = json.loads(result.stdout[result.stdout.index("{"):])
    assert fit["shift_px"][0] == pytest.approx(2.5, abs=0.2) and abs(fit["shift_px"][1]) < 0.2
    assert abs(fit["rotation_deg"]) == pytest.approx(0.5, abs=0.05) and fit["scale"] == pytest.approx(1, abs=0.005)
    _recovers_the_truth(fit)  # within the aligned pair's tolerances


def test_a_panel_mask_image_gives_the_diffraction_psf_its_cell(tmp_path):
    from degradations.psf import toled_cell

    cv2.imwrite(str(tmp_path / "cell.png"), toled_cell().astype(np.uint8) * 255)
    raw = {**load_recipe("toled").raw, "psf": {**load_recipe("toled").raw["psf"], "mask": "cell.png"}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(raw))
    recipe = load_recipe(tmp_path / "r.yaml")  # the mask resolved beside the recipe file
    np.testing.assert_array_equal(recipe.optics().cell(), toled_cell())
    x = torch.rand(1, 3, 20, 20)
    torch.testing.assert_close(Fd.blur(x, build_degradation(recipe).psf(0.5)),
                               Fd.blur(x, build_degradation(load_recipe("toled")).psf(0.5)))
