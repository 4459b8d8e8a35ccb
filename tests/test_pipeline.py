"""The input pipeline: the decoded-image cache, the loader, the device augmentation (against float64 references),
and run settings (loader workers, compile) that leave a run's recipe, and its place in the tables, as they are."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from kornia.geometry.transform import get_affine_matrix2d, warp_affine
from typer.testing import CliRunner

from udcbench.cli import app
from udcbench.config import TrainConfig
from udcbench.datasets import create_dataset
from udcbench.datasets.generate import generate_synthetic
from udcbench.engine import data as engine_data
from udcbench.engine.augment import AugmentParams, augment, draw_params, hash_uniform, to_input
from udcbench.engine.data import batch_loader, epoch_batches, forget_decoded, load_images

from conftest import write_png

runner = CliRunner()


def _images(n: int = 64, size: int = 32) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8))


def test_an_images_augmentation_depends_on_seed_epoch_and_position_only():
    config = TrainConfig(erasing=0.5)
    images = _images()
    a = augment(images[[3, 7, 11]], draw_params(torch.tensor([3, 7, 11]), 32, config, 2), config.mean, config.std)
    b = augment(images[[11, 3]], draw_params(torch.tensor([11, 3]), 32, config, 2), config.mean, config.std)
    torch.testing.assert_close(a[[2, 0]], b, rtol=0, atol=0)  # the same image, wherever it sits in a batch
    c = augment(images[[3, 7, 11]], draw_params(torch.tensor([3, 7, 11]), 32, config, 3), config.mean, config.std)
    assert not torch.equal(a, c)  # another epoch, other draws
    u = hash_uniform(0, 0, torch.arange(20000), 4)
    assert u.min() >= 0 and u.max() < 1 and abs(u.mean().item() - 0.5) < 0.01  # uniform, [0, 1)


def test_flip_and_normalisation_match_a_float64_reference():
    config = TrainConfig(affine=False, erasing=0.0)
    images = _images(16)
    params = draw_params(torch.arange(16), 32, config, 0)
    out = augment(images, params, config.mean, config.std)
    assert out.is_contiguous(memory_format=torch.channels_last) and out.dtype == torch.float32
    ref = images.double().permute(0, 3, 1, 2) / 255
    flipped = set(params.flip_index.tolist())
    assert 0 < len(flipped) < 16
    ref = torch.stack([r.flip(-1) if i in flipped else r for i, r in enumerate(ref)])
    ref = (ref - torch.tensor(config.mean, dtype=torch.float64).view(1, 3, 1, 1)) / \
        torch.tensor(config.std, dtype=torch.float64).view(1, 3, 1, 1)
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=1e-5)
    mean, std = ref.new_tensor(config.mean).view(1, 3, 1, 1), ref.new_tensor(config.std).view(1, 3, 1, 1)
    plain = (images.double().permute(0, 3, 1, 2) / 255 - mean) / std
    torch.testing.assert_close(to_input(images, config.mean, config.std).double(), plain, rtol=0, atol=1e-5)


def test_the_affine_jitter_matches_kornias_warp_in_float64():
    config = TrainConfig(flip=False, erasing=0.0)
    images = _images(32, 24)
    index = torch.arange(32)
    params = draw_params(index, 24, config, 1)
    chosen = params.affine_index
    assert 5 < len(chosen) < 27  # about half
    out = augment(images, params, (0.0, 0.0, 0.0), (1 / 255,) * 3)  # normalisation off: pixel values out
    u = hash_uniform(config.seed, 1, index[chosen], 11)  # the draws, rebuilt by hand
    scale = (0.9 + 0.2 * u[:, 2])[:, None].expand(-1, 2).double()
    shift = ((2 * u[:, 3:5] - 1) * 0.06 * 24).double()
    angle = ((2 * u[:, 5] - 1) * 10).double()
    forward = get_affine_matrix2d(shift, torch.full((len(chosen), 2), 11.5, dtype=torch.float64), scale, angle)
    ref = warp_affine(images[chosen].permute(0, 3, 1, 2).double(), forward[:, :2], dsize=(24, 24), mode="bilinear",
                      padding_mode="reflection", align_corners=True).round().clamp(0, 255)
    assert (out[chosen].double() - ref).abs().max() <= 1  # rounding at .5 only
    untouched = [i for i in range(32) if i not in set(chosen.tolist())]
    torch.testing.assert_close(out[untouched].double(), images[untouched].permute(0, 3, 1, 2).double())


def test_erasing_follows_its_probability_and_area_range():
    config = TrainConfig(flip=False, affine=False, erasing=0.25)
    params = draw_params(torch.arange(4000), 64, config, 0)
    e = params.erase
    area = ((e[:, 1] - e[:, 0]) * (e[:, 3] - e[:, 2])).double() / 64**2
    erased = area > 0
    assert abs(erased.double().mean().item() - 0.25) < 0.03
    assert area[erased].min() >= 0.01 and area[erased].max() <= 0.3  # 0.02-0.25, rounded to whole pixels
    assert (e[:, 1] <= 64).all() and (e[:, 3] <= 64).all() and (e[:, [0, 2]] >= 0).all()
    out = augment(_images(8, 64), AugmentParams(params.flip_index[:0], params.affine_index[:0], params.affine[:0],
                                                e[:8]), config.mean, config.std)
    for i in range(8):
        y0, y1, x0, x1 = e[i].tolist()
        assert (out[i, :, y0:y1, x0:x1] == 0).all()


def test_basic_aug_flips_or_adds_noise_a_quarter_each_never_both_and_the_noise_has_its_spread():
    config = TrainConfig(flip=False, affine=False, erasing=0.0, basic_aug=True)
    params = draw_params(torch.arange(8000), 32, config, 0)
    flipped, noisy = set(params.flip_index.tolist()), set(params.noise_index.tolist())
    assert not flipped & noisy  # one of the two, never both (SCN's basic_aug)
    assert abs(len(flipped) / 8000 - 0.25) < 0.02 and abs(len(noisy) / 8000 - 0.25) < 0.02
    grey = torch.full((64, 32, 32, 3), 128, dtype=torch.uint8)
    eac = TrainConfig(flip=False, affine=False, erasing=0.0, noise=0.5)
    p = draw_params(torch.arange(64), 32, eac, 0)
    assert 16 < len(p.noise_index) < 48 and len(p.flip_index) == 0  # p 0.5; EAC never flips its main image
    out = augment(grey, p, (0.0, 0.0, 0.0), (1 / 255,) * 3)  # pixel values out
    noise = out[p.noise_index].double() - 128
    # variance 30 (std 5.48) before truncation to uint8, which takes 0.5 off the mean: by hand, as numpy's astype
    assert abs(noise.std().item() - 30**0.5) < 0.1 and abs(noise.mean().item() + 0.5) < 0.1
    keep = [i for i in range(64) if i not in set(p.noise_index.tolist())]
    assert (out[keep] == 128).all()
    again = augment(grey[[5, 3]], draw_params(torch.tensor([5, 3]), 32, eac, 0), (0.0, 0.0, 0.0), (1 / 255,) * 3)
    torch.testing.assert_close(again, out[[5, 3]], rtol=0, atol=0)  # the same noise in any batch


def test_five_crop_takes_a_corner_or_the_centre_and_evaluation_the_centre_in_float64():
    from udcbench.engine.augment import eval_input

    config = TrainConfig(flip=False, affine=False, erasing=0.0, crop="five", crop_share=0.75)
    # a ramp image: the crop's mean position tells where it was taken
    ramp = torch.arange(33, dtype=torch.float64).repeat(33, 1)
    images = torch.stack([ramp, ramp.T, torch.zeros(33, 33, dtype=torch.float64)], -1).round().to(torch.uint8)
    images = images.expand(500, -1, -1, -1).contiguous()
    params = draw_params(torch.arange(500), 33, config, 0)
    out = augment(images, params, (0.0, 0.0, 0.0), (1 / 255,) * 3).double()
    centres = {(round(x), round(y)) for x, y in zip(out[:, 0].mean((1, 2)).tolist(), out[:, 1].mean((1, 2)).tolist())}
    # crops of 0.75 of the side: centres at 16 (the middle) or 16 +- 16 * 0.25 = 12, 20 along each axis
    assert centres == {(16, 16), (12, 12), (20, 12), (12, 20), (20, 20)}
    evaluated = eval_input(images[:1], config).double()  # normalised with ImageNet's mean and std
    mean, std = torch.tensor(config.mean, dtype=torch.float64), torch.tensor(config.std, dtype=torch.float64)
    ref = torch.linspace(4, 28, 33, dtype=torch.float64)  # the centre 0.75 of 0..32, resampled to 33 pixels
    torch.testing.assert_close(evaluated[0, 0, 5] * std[0] + mean[0], ref.round() / 255, rtol=0, atol=1e-6)
    plain = eval_input(images[:1], TrainConfig())
    torch.testing.assert_close(plain, to_input(images[:1], config.mean, config.std))  # no crop: the whole image


def test_decoded_images_are_cached_on_disk_once_and_decoded_again_when_an_image_changes(tmp_path: Path, monkeypatch):
    generate_synthetic(tmp_path / "faces", n_train=14, n_test=7, size=40)
    adapter = create_dataset("imagefolder", tmp_path / "faces")
    records = adapter.records("train")
    calls = []
    original = type(adapter).load_image
    monkeypatch.setattr(type(adapter), "load_image", lambda self, r: calls.append(r.id) or original(self, r))
    widths: list[int] = []
    first = load_images(adapter, records, 32, "loading", sizes=widths, cache_dir=tmp_path / "cache")
    forget_decoded()
    again = load_images(adapter, records, 32, "loading", cache_dir=tmp_path / "cache")
    assert isinstance(again, np.memmap) and not again.flags.writeable and widths == [40] * len(records)
    assert len(calls) == len(records) and np.array_equal(first, again)
    assert not list((tmp_path / "cache" / "decoded").glob(".*partial"))
    cv2.imwrite(str(records[0].path), np.zeros((40, 40, 3), np.uint8))  # a changed image: decoded again
    changed = load_images(adapter, records, 32, "loading", cache_dir=tmp_path / "cache")
    assert len(calls) == 2 * len(records) and not changed[0].any() and np.array_equal(changed[1:], again[1:])


def test_parallel_decoding_writes_what_one_process_writes(tmp_path: Path, monkeypatch):
    generate_synthetic(tmp_path / "faces", n_train=28, n_test=7, size=40)
    adapter = create_dataset("imagefolder", tmp_path / "faces")
    records = adapter.records("train")
    alone = load_images(adapter, records, 24, "loading", cache_dir=tmp_path / "one")
    monkeypatch.setattr(engine_data, "PARALLEL_MIN_IMAGES", 4)
    monkeypatch.setattr(engine_data, "decode_workers", lambda: 2)
    widths: list[int] = []
    parallel = load_images(adapter, records, 24, "loading", sizes=widths, cache_dir=tmp_path / "two")
    assert np.array_equal(alone, parallel) and widths == [40] * len(records)


def test_loader_workers_give_the_batches_of_the_loop_in_process(tmp_path: Path):
    generate_synthetic(tmp_path / "faces", n_train=28, n_test=7, size=40)
    adapter = create_dataset("imagefolder", tmp_path / "faces")
    images = load_images(adapter, adapter.records("train"), 24, "loading", cache_dir=tmp_path / "cache")
    batches = epoch_batches(len(images), 8, 3, seed=0, epoch=1, rank=0, world=1)
    here = list(batch_loader(images, batches, workers=0, pin=False))
    workers = list(batch_loader(images, batches, workers=2, pin=False))
    assert len(here) == 3 and all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(here, workers))
    assert torch.equal(here[0][0], torch.from_numpy(images[batches[0]]))
    halves = [epoch_batches(len(images), 8, 3, seed=0, epoch=1, rank=r, world=2) for r in (0, 1)]
    assert [h0 + h1 for h0, h1 in zip(*halves)] == batches  # two ranks share each global batch


def _ferplus(root: Path, per_class: dict[str, int]) -> None:
    """A FERPlus layout (per-folder label.csv) with ``per_class[split]`` images of each of its 8 classes."""
    for split, folder in (("train", "FER2013Train"), ("valid", "FER2013Valid")):
        rows = []
        for label in range(8):
            for k in range(per_class[split]):
                name = f"fer{len(rows) + 1000 * (split == 'valid'):07d}.png"
                votes = [0] * 10
                votes[label] = 10
                rows.append(f"{name},\"(0, 0, 48, 48)\",{','.join(map(str, votes))}")
                write_png(root / folder / name, 37 * label + k, gray=True)
        (root / folder / "label.csv").write_text("\n".join(rows) + "\n")


def test_a_run_differing_only_in_run_settings_sits_in_table_3_beside_its_twin(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("UDCBENCH_COMPILE_BACKEND", "eager")  # torch.compile's path, without a C++ build
    _ferplus(tmp_path / "data" / "ferplus", {"train": 6, "valid": 2})
    synth = runner.invoke(app, ["synth", "ferplus", "--preset", "toled"])
    assert synth.exit_code == 0, synth.output
    base = ["train", "resnet18", "--data", "data/udc-ferplus", "--preset", "smoke", "--json"]
    fast = runner.invoke(app, [*base, "--set", "num_workers=8", "--set", "compile=true", "--set",
                               "eval_batch_size=7"])
    assert fast.exit_code == 0, fast.output
    record = json.loads(fast.stdout)
    assert record["execution"]["num_workers"] == 8 and record["execution"]["compile"] is True
    assert record["config_changes"] == {}
    plain = runner.invoke(app, [*base, "--seed", "1"])
    assert plain.exit_code == 0, plain.output
    changed = runner.invoke(app, [*base, "--seed", "2", "--set", "lr=0.02"])  # a recipe change stays out
    assert changed.exit_code == 0, changed.output
    table = runner.invoke(app, ["table", "3", "--preset", "smoke", "--json"])
    assert table.exit_code == 0, table.output
    shown = json.loads(table.stdout)
    (cell,) = [r for r in shown["rows"] if r["udcbench_method"] == "resnet18"]
    assert cell["n"] == 2 and cell["dataset"] == "ferplus"
    assert any("overrides" in note for note in shown["notes"])


@pytest.mark.parametrize("value", ["-2", "x"])
def test_num_workers_is_checked(tmp_path: Path, monkeypatch, value: str):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["train", "test_cnn", "--data", "synthetic", "--preset", "smoke", "--set",
                                 f"num_workers={value}"])
    assert result.exit_code == 2 and "num_workers" in result.output
