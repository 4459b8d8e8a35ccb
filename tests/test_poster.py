"""POSTER++: shapes, the landmark-query attention against a float64 reference, the layer-scaled start, IR-50
weights, and a few steps that train it."""

import pytest
import torch
import torchvision

from baselines.backbone import WeightsError
from baselines.base import Batch
from baselines.poster import GlobalQueryAttention, IR50Stages, PosterPP, load_ir50_weights, relative_position_index
from udcbench.methods import create_method, get_method

from conftest import train_steps


def small_poster(size=32, **kw):
    return PosterPP(4, input_size=size, trunk="resnet18", depth=1, embed_dim=64, **kw)


def test_relative_position_index_by_hand():
    index = relative_position_index(2)  # positions (0,0) (0,1) (1,0) (1,1); table side 3, centre 4
    assert index.tolist() == [[4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3], [8, 7, 5, 4]]


def test_global_query_attention_against_a_float64_reference():
    torch.manual_seed(0)
    attention = GlobalQueryAttention(8, 2, 3).double()
    tokens, queries = torch.randn(2, 9, 8, dtype=torch.float64), torch.randn(2, 9, 8, dtype=torch.float64)
    k, v = attention.kv(tokens).chunk(2, dim=-1)
    bias = attention.bias_table[relative_position_index(3)]  # (9, 9, heads)
    heads = []
    for h in range(2):
        s = slice(4 * h, 4 * h + 4)
        logits = queries[..., s] @ k[..., s].transpose(1, 2) / 2.0 + bias[..., h]  # sqrt(4) = 2
        heads.append(logits.softmax(-1) @ v[..., s])
    expected = attention.proj(torch.cat(heads, dim=-1))
    torch.testing.assert_close(attention(tokens, queries), expected)


@pytest.mark.parametrize("size", [48, 64, 112])
def test_shapes_on_the_resnet18_trunk(size):
    config = get_method("posterpp").config("cpu")
    config.input_size = size
    model = create_method("posterpp", 8, config).eval()
    x = torch.randn(2, 3, size, size)
    assert model(x).shape == (2, 8) and model.embed(x).shape == (2, 768)
    assert model.image.trunk[6][0].conv1.in_channels == 128  # layer3: the widths of IR-50's first stages


def test_official_shapes_on_ir50_at_224():
    model = create_method("posterpp", 7, get_method("posterpp").config("paper")).eval()
    assert model.sizes == [28, 14, 7]  # one window per map: the official windows 28 / 14 / 7
    maps = model.image(torch.randn(1, 3, 224, 224))
    assert [tuple(m.shape[1:]) for m in maps] == [(64, 56, 56), (128, 28, 28), (256, 14, 14)]
    assert model.position.shape[1] == 1 + 3 * 49
    assert 40e6 < sum(p.numel() for p in model.parameters()) < 46e6  # the paper's 43.7 M


def test_layer_scale_starts_each_scale_near_its_normalised_image_features():
    torch.manual_seed(0)
    model = small_poster()
    scale = model.scales[0]
    image, landmarks = torch.randn(2, 64, 4, 4), torch.randn(2, 64, 4, 4)
    normed = torch.nn.functional.layer_norm(image.flatten(2).transpose(1, 2), (64,))
    out = scale.eval()(image, landmarks).flatten(2).transpose(1, 2)
    assert (out - normed).abs().max() < 1e-3 < (out - image.flatten(2).transpose(1, 2)).abs().max()


def test_ir50_weights_load_strictly_in_both_namings(tmp_path):
    source = IR50Stages()
    state = {f"module.{k}": v + 0.5 for k, v in source.state_dict().items()}
    state["module.output_layer.0.weight"] = torch.ones(512)  # the part POSTER++ drops
    torch.save({"state_dict": state}, tmp_path / "ir50.pth")
    target = IR50Stages()
    info = load_ir50_weights(target, tmp_path / "ir50.pth")
    assert len(info["weights_sha256"]) == 64
    torch.testing.assert_close(target.body3[13].res_layer[3].weight, source.body3[13].res_layer[3].weight + 0.5)
    # ArcFace's own naming: one ``body`` of 24 units (the fourth stage ignored)
    flat = {}
    for key, value in source.state_dict().items():
        stage, unit, rest = key.split(".", 2) if key.startswith("body") else (key, None, None)
        if unit is None:
            flat[key] = value
        else:
            flat[f"body.{(0, 3, 7)[int(stage[4]) - 1] + int(unit)}.{rest}"] = value
    flat["body.23.res_layer.1.weight"] = torch.zeros(512, 512, 3, 3)
    torch.save(flat, tmp_path / "arcface.pth")
    load_ir50_weights(target, tmp_path / "arcface.pth")
    torch.testing.assert_close(target.body2[0].shortcut_layer[0].weight, source.body2[0].shortcut_layer[0].weight)
    del flat["body.5.res_layer.0.weight"]
    torch.save(flat, tmp_path / "broken.pth")
    with pytest.raises(WeightsError, match="not an IR-50 .1 missing"):
        load_ir50_weights(target, tmp_path / "broken.pth")


def test_weights_go_to_the_trunk_the_preset_builds(tmp_path):
    source = torchvision.models.resnet18(num_classes=7)
    torch.save(source.state_dict(), tmp_path / "msceleb.pth")
    model = create_method("posterpp", 5, get_method("posterpp").config("cpu"))
    model.load_backbone_weights(tmp_path / "msceleb.pth")  # layer1-3 of the file; layer4 and fc left out
    torch.testing.assert_close(model.image.trunk[6][1].conv2.weight, source.layer3[1].conv2.weight)
    with pytest.raises(WeightsError, match="not an IR-50"):
        create_method("posterpp", 5, get_method("posterpp").config("paper")).load_backbone_weights(
            tmp_path / "msceleb.pth")


def test_a_few_steps_reduce_the_loss_and_the_landmark_net_stays_frozen():
    torch.manual_seed(0)
    model = small_poster()
    frozen = {k: v.clone() for k, v in model.landmarks.state_dict().items()}
    batch = Batch(torch.randn(16, 3, 32, 32), torch.arange(16) % 4, torch.arange(16))
    losses, _ = train_steps(model, batch)
    assert losses[-1] < 0.7 * losses[0], losses
    for key, value in model.landmarks.state_dict().items():
        torch.testing.assert_close(value, frozen[key])
