"""LLDif: the LA-CLIP prior (image, caption, label), the caption switch, and stage 2 inference from the image
alone."""

import json

import pytest
import torch

from baselines.base import Batch
from lrdif.lldif import CAPTIONS, LLDif, caption_index

from conftest import train_steps

SMALL = dict(width=16, token_dim=32, depth=1, z_dim=32)


def test_captions_follow_the_images_brightness():
    levels = torch.tensor([0.02, 0.07, 0.15, 0.3, 0.6])  # sRGB grey levels, one per caption step
    images = (levels.view(5, 1, 1, 1).expand(5, 3, 8, 8) - 0.5) / 0.5  # normalised with mean = std = 0.5
    assert caption_index(images, (0.5,) * 3, (0.5,) * 3).tolist() == [0, 1, 2, 3, 4]
    assert CAPTIONS[0].startswith("an extremely dark") and CAPTIONS[-1] == "a photo of a face"


@pytest.mark.parametrize("size", [48, 112])
@pytest.mark.parametrize("variant", ["s1", "s2-v3"])
def test_shapes(size, variant):
    model = LLDif(7, variant=variant, **SMALL).eval()
    x = torch.randn(2, 3, size, size)
    labels = torch.tensor([1, 3]) if variant == "s1" else None
    assert model(x, labels).shape == (2, 7) and model.embed(x, labels).shape[0] == 2
    assert model.fpen_s1.net[0].in_features == 3 * model.encoders.dim  # PNET: label, image, caption


def test_the_caption_switch_changes_the_prior_and_nothing_else():
    torch.manual_seed(0)
    on = LLDif(7, variant="s1", captions=True, **SMALL).eval()
    off = LLDif(7, variant="s1", captions=False, **SMALL).eval()
    off.load_state_dict(on.state_dict())
    x = torch.rand(3, 3, 48, 48) * 0.4 - 1  # dark images: captions 0-1
    e = torch.randn(3, on.encoders.dim)
    y = torch.tensor([0, 2, 5])
    assert not torch.allclose(on.prior(e, y, x), off.prior(e, y, x))
    z = torch.randn(3, 32)
    maps, pooled, landmarks = on._image(x)
    torch.testing.assert_close(on.udcformer(maps, pooled, z, landmarks), off.udcformer(maps, pooled, z, landmarks))
    torch.testing.assert_close(on.estimate(e), off.estimate(e))  # stage 2's inference path
    assert (off.captions_of(x) == len(CAPTIONS)).all()  # the "no caption" row


def test_no_label_or_caption_reaches_stage_2_inference(monkeypatch):
    model = LLDif(7, variant="s2-v3", **SMALL).eval()
    x = torch.randn(2, 3, 48, 48)
    torch.manual_seed(0)  # the reverse chain samples: the same seed, the same estimate
    before = model(x)

    def refuse(*args, **kw):
        raise AssertionError("stage 2 inference read a label or a caption")

    monkeypatch.setattr(LLDif, "prior", refuse)
    monkeypatch.setattr(LLDif, "captions_of", refuse)
    monkeypatch.setattr(type(model.encoders), "encode_label", refuse)
    torch.manual_seed(0)
    torch.testing.assert_close(model(x), before)  # seeded sampling: the same estimate


@pytest.mark.parametrize("variant", ["s1", "s2-v3"])
def test_a_few_steps_of_each_stage_reduce_the_loss(variant):
    torch.manual_seed(0)
    model = LLDif(5, variant=variant, **SMALL)
    params = [p for p in model.parameters() if p.requires_grad]
    batch = Batch(torch.rand(8, 3, 32, 32) * 0.6 - 1, torch.arange(8) % 5, torch.arange(8))
    losses, out = train_steps(model.train(), batch, steps=8, lr=2e-3, params=params)
    assert losses[-1] < 0.9 * losses[0], losses


def test_stage_2_takes_stage_1s_caption_embedding_and_freezes_it():
    first = LLDif(5, variant="s1", **SMALL)
    second = LLDif(5, variant="s2-v3", **SMALL)
    second.load_stage1(first.state_dict())
    second.train()
    torch.testing.assert_close(second.caption_embedding.weight, first.caption_embedding.weight)
    assert not second.caption_embedding.weight.requires_grad and not any(
        p.requires_grad for p in second.fpen_s1.parameters())


def test_clip_path_encodes_the_captions_with_the_text_tower(tmp_path):
    import open_clip
    from open_clip.factory import _MODEL_CONFIGS

    config = {"embed_dim": 16,
              "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
              "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    (tmp_path / "udcbench-tiny-ll.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path / "udcbench-tiny-ll.json")
    torch.save(open_clip.create_model("udcbench-tiny-ll").state_dict(), tmp_path / "tiny.pt")
    try:
        model = LLDif(7, variant="s1", encoder="clip", clip_model="udcbench-tiny-ll",
                      clip_weights=str(tmp_path / "tiny.pt"), **SMALL)
        assert model.caption_embedding is None and model.caption_text.shape == (len(CAPTIONS) + 1, 16)
        assert (model.caption_text[-1] == 0).all() and model.caption_text[:-1].abs().sum() > 0
        x = torch.randn(2, 3, 48, 48)
        e = model.encoders.encode_image(x)
        assert model.prior(e, torch.tensor([1, 7]), x).shape == (2, 32)
    finally:
        del _MODEL_CONFIGS["udcbench-tiny-ll"]


def test_lldif_is_registered_for_low_light_studies_with_lrdifs_recipe():
    from udcbench.methods import get_method, study_methods

    assert "lldif" in study_methods(kind="lowlight") and "lldif" not in study_methods(kind="udc")
    assert "lldif-s1" not in study_methods(kind="lowlight")  # trained by lldif, as LRDif's stage 1
    spec, lrdif = get_method("lldif"), get_method("lrdif")
    assert spec.stage1 == "lldif-s1" and get_method("lldif-s1").oracle
    assert spec.config("paper").lr == lrdif.config("paper").lr and spec.config("cpu").epochs == 12
    assert spec.method_args["captions"] is True and spec.method_args["window"] == 4
