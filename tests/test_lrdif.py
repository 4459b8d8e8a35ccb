import numpy as np
import pytest
import torch
import torch.nn.functional as F

from baselines.base import Batch
from baselines.landmarks import LandmarkNet, pretrain_landmark_net
from lrdif.diffusion import EPRDiffusion, Schedule, beta_schedule
from lrdif.model import VARIANTS, LRDif, kl_loss
from lrdif.udcformer import CrossAttention, Modulation, UDCformer

from conftest import train_steps

SMALL = dict(width=16, token_dim=32, depth=1, z_dim=32)


def small_lrdif(variant="s2-v3", **kw):
    return LRDif(5, variant=variant, **{**SMALL, **kw})


@pytest.mark.parametrize("size", [112, 64, 48])
def test_shapes_through_every_module(size):
    model = small_lrdif()
    x = torch.randn(2, 3, size, size)
    heat, landmarks = model.landmarks(x)
    assert heat.shape == (2, 68, size // 4, size // 4)
    assert [m.shape[-1] for m in landmarks] == [size // 4, size // 8, size // 16]
    maps, pooled, _ = model._image(x)
    side = [-(-size // s) for s in (8, 16, 32)]
    assert [m.shape[1:] for m in maps] == [(c, s, s) for c, s in zip((128, 256, 512), side)]
    assert pooled.shape == (2, 512)  # E_I: the trunk's pooled feature
    z = model.prior(pooled, torch.tensor([0, 5]))  # 5 = no label
    assert z.shape == (2, 32) and model.estimate(pooled).shape == (2, 32)
    model.eval()
    assert model(x).shape == (2, 5) and model.embed(x).shape == (2, 32)  # the UDCformer's CLS (token_dim)
    bypass = small_lrdif(head="bypass").eval()
    assert bypass(x).shape == (2, 5) and bypass.embed(x).shape == (2, 512)  # the trunk's pooled feature plus it


def test_the_untrained_bypass_variant_is_the_trunk_and_the_default_head_is_not():
    """The bypass variant joins the trunk through a zero-initialised projection: untrained, its features are the
    trunk's pooled feature. The default head (the paper's) reads the UDCformer's output: nothing of the trunk's
    pooled feature reaches the classifier directly."""
    from baselines.models import ResNet18FER

    torch.manual_seed(0)
    default = small_lrdif().eval()
    assert not hasattr(default.udcformer, "merge") and default.udcformer.head.in_features == SMALL["token_dim"]
    model = small_lrdif(head="bypass").eval()
    control = ResNet18FER(5).eval()
    control.trunk.load_state_dict(model.trunk.state_dict())
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.embed(x), control.embed(x))


def test_modulation_is_exactly_w1z_ln_plus_w2z():
    mod = Modulation(6, 4)
    x, z = torch.randn(2, 6, 3, 5), torch.randn(2, 4)
    ln = (x - x.mean(dim=1, keepdim=True)) / torch.sqrt(x.var(dim=1, unbiased=False, keepdim=True) + 1e-5)
    expected = mod.w1(z)[:, :, None, None] * ln + mod.w2(z)[:, :, None, None]
    torch.testing.assert_close(mod(x, z), expected, rtol=1e-5, atol=1e-5)


def test_window_attention_keeps_shape_and_mixes_only_within_windows():
    attention = CrossAttention(8, 2, 4).eval()
    image, landmarks = torch.randn(1, 8, 8, 8), torch.randn(1, 8, 8, 8)
    out = attention(image, landmarks)
    assert out.shape == (1, 8, 8, 8)
    changed = image.clone()
    changed[..., 4:, 4:] += 1.0  # the bottom-right window only
    diff = (attention(changed, landmarks) - out).abs()
    assert diff[..., :4, :].max() == 0 and diff[..., :, :4].max() == 0 and diff[..., 4:, 4:].max() > 0
    assert attention(torch.randn(1, 8, 6, 10), torch.randn(1, 8, 6, 10)).shape == (1, 8, 6, 10)  # padded


def _reference_attention(attention: CrossAttention, image: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
    """Float64 cross-attention computed window by window over the real tokens only (no padding at all)."""
    att = attention.double()
    b, c, h, w = image.shape
    s = att.window or max(h, w)
    heads, d = att.heads, c // att.heads
    out = torch.zeros(b, c, h, w, dtype=torch.float64)
    for top in range(0, h, s):
        for left in range(0, w, s):
            img = image[:, :, top : top + s, left : left + s].double()
            lm = landmarks[:, :, top : top + s, left : left + s].double()
            hh, ww = img.shape[-2:]
            kv = att.kv(img.flatten(2).transpose(1, 2))
            q = att.q(lm.flatten(2).transpose(1, 2)).reshape(b, -1, heads, d).transpose(1, 2)
            k, v = (t.reshape(b, -1, heads, d).transpose(1, 2) for t in kv.chunk(2, dim=-1))
            logits = q @ k.transpose(-2, -1) / d**0.5
            if att.window is not None:  # the relative position bias between the real positions
                rows, cols = torch.meshgrid(torch.arange(hh), torch.arange(ww), indexing="ij")
                pos = (rows * s + cols).flatten()
                table = att.bias[att.bias_index[pos][:, pos].flatten()].reshape(len(pos), len(pos), heads)
                logits = logits + table.permute(2, 0, 1)
            y = att.out((logits.softmax(-1) @ v).transpose(1, 2).reshape(b, -1, c))
            out[:, :, top : top + hh, left : left + ww] = y.transpose(1, 2).reshape(b, c, hh, ww)
    att.float()
    return out


@pytest.mark.parametrize("window, size", [(7, 12), (7, 6), (7, 3), (4, 10), (None, 12)])
def test_cross_attention_never_attends_to_padding(window, size):
    """At 48 px the maps are smaller than the window: keys on padding must carry no weight."""
    torch.manual_seed(0)
    attention = CrossAttention(8, 2, window).eval()
    image, landmarks = torch.randn(2, 8, size, size), torch.randn(2, 8, size, size)
    with torch.no_grad():
        out = attention(image, landmarks)
        torch.testing.assert_close(out.double(), _reference_attention(attention, image, landmarks), rtol=1e-4,
                                   atol=1e-5)
        attention.pad_value = 100.0  # the padding's value changes nothing
        torch.testing.assert_close(attention(image, landmarks), out)


def test_schedule_ends_near_noise_for_every_t():
    """abar_T <= 1 - beta_T = 0.01 for every T, including T = 1 (beta_schedule(1) was [0.1]: abar_1 = 0.9)."""
    for steps in (1, 2, 3, 4, 8, 16):
        schedule = Schedule(steps)
        assert schedule.betas[-1] == pytest.approx(0.99)
        assert schedule.alphas_cumprod[-1] <= 0.01 + 1e-7, steps
    assert beta_schedule(1).tolist() == [pytest.approx(0.99)]


@pytest.mark.parametrize("steps", [1, 2, 4, 8])
def test_the_label_cannot_pass_through_the_forward_noise(steps):
    """Z_T carries (next to) nothing of the label at any T, even when the prior's raw output is large: a
    nearest-class-mean reader of Z_T, given the exact class means, stays within 4 points of chance."""
    torch.manual_seed(0)
    model = small_lrdif(steps=steps, z_dim=256)
    with torch.no_grad():
        model.fpen_s1.net[-1].weight.mul_(1000.0)  # a prior whose norm grew
        labels = torch.arange(4000) % 5
        z = model.prior(torch.randn(5, 512)[labels], labels)  # Z set by the label (and a fixed image per class)
        assert z.pow(2).mean(dim=1).sqrt().allclose(torch.ones(4000))  # unit RMS: the norm cannot grow
        z_t = model.diffusion.noised(z)
        means = model.diffusion.noised(z[:5], torch.zeros(5, 256))  # sqrt(abar_T) Z / sqrt(C) per class
        read = torch.cdist(z_t, means).argmin(dim=1)
    accuracy = (read == labels).float().mean().item()
    assert accuracy < 0.2 + 0.04, accuracy


def test_schedule_against_float64():
    s = Schedule(4)
    betas = np.linspace(np.sqrt(0.1), np.sqrt(0.99), 4) ** 2
    alphas = 1 - betas
    abar = np.cumprod(alphas)
    prev = np.concatenate([[1.0], abar[:-1]])
    np.testing.assert_allclose(beta_schedule(4).numpy(), betas)
    np.testing.assert_allclose(s.alphas_cumprod.numpy(), abar, rtol=1e-6)
    np.testing.assert_allclose(s.posterior_variance.numpy(), betas * (1 - prev) / (1 - abar), rtol=1e-6)
    np.testing.assert_allclose(s.coef_x0.numpy(), betas * np.sqrt(prev) / (1 - abar), rtol=1e-6)
    np.testing.assert_allclose(s.coef_xt.numpy(), (1 - prev) * np.sqrt(alphas) / (1 - abar), rtol=1e-6)


def test_q_sample_statistics():
    s = Schedule(4)
    z0 = torch.full((20000, 2), 3.0)
    zt = s.q_sample(z0, 2, torch.randn(20000, 2, generator=torch.Generator().manual_seed(0)))
    abar = float(s.alphas_cumprod[1])
    assert abs(zt.mean().item() - 3.0 * abar**0.5) < 0.02
    assert abs(zt.var().item() - (1 - abar)) < 0.02


def test_kl_loss_by_hand():
    z, z_hat = torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, np.log(3.0)]])
    # p = (1/2, 1/2), q = (1/4, 3/4): KL = 1/2 log 2 + 1/2 log(2/3)
    assert kl_loss(z, z_hat).item() == pytest.approx(0.5 * np.log(2) + 0.5 * np.log(2 / 3), rel=1e-5)
    assert kl_loss(z_hat, z_hat).item() == pytest.approx(0.0, abs=1e-7)


def test_the_label_never_reaches_stage_two_inference(monkeypatch):
    model = small_lrdif("s2-v3").eval()

    def leak(*args, **kwargs):
        raise AssertionError("the label encoder was called at inference")

    monkeypatch.setattr(model.encoders, "encode_label", leak)
    monkeypatch.setattr(model, "prior", leak)
    x = torch.randn(3, 3, 48, 48)
    assert model(x).shape == (3, 5)
    assert model.embed(x).shape == (3, 32)
    assert not model.uses_labels_at_eval and small_lrdif("s1").uses_labels_at_eval
    with pytest.raises(ValueError, match="oracle"):
        small_lrdif("s1")(x)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_a_few_steps_of_each_stage_reduce_the_loss(variant):
    torch.manual_seed(0)
    model = small_lrdif(variant)
    if VARIANTS[variant].stage == 2:
        model.load_stage1(small_lrdif("s1").state_dict())
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    if VARIANTS[variant].stage == 2:
        assert not any(p.requires_grad for p in model.fpen_s1.parameters())
        assert not any(p.requires_grad for p in model.encoders.parameters())
    batch = Batch(torch.randn(8, 3, 32, 32), torch.arange(8) % 5, torch.arange(8))
    losses, out = train_steps(model, batch, steps=8, lr=2e-3, params=params)
    assert losses[-1] < 0.9 * losses[0], losses
    assert ("kl" in out.terms) == VARIANTS[variant].kl


def test_landmark_pretraining_fits_heatmaps():
    torch.manual_seed(0)
    net = LandmarkNet()
    points = np.tile(np.array([[10.0, 12.0]] * 68, dtype=np.float32), (32, 1, 1))
    losses = pretrain_landmark_net(net, torch.randn(32, 3, 48, 48), points, epochs=6, batch_size=16)
    assert losses[-1] < losses[0]
    assert not net.training and not any(p.requires_grad for p in net.parameters())


def test_diffusion_parameterisations_and_noise_switch():
    for param in ("x0", "eps"):
        d = EPRDiffusion(8, steps=4, parameterization=param)
        c = torch.randn(5, 8)
        g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
        a = d.sample(c, insert_noise=False, generator=g())
        b = d.sample(c, insert_noise=False, generator=g())
        torch.testing.assert_close(a, b)
        assert not torch.equal(d.sample(c, insert_noise=True, generator=g()), a)
    with pytest.raises(ValueError):
        EPRDiffusion(8, parameterization="v")


@pytest.fixture
def tiny_clip(tmp_path):
    """A tiny open_clip model config (registered while the test runs) and its random weights saved to a file."""
    import json

    import open_clip
    from open_clip.factory import _MODEL_CONFIGS

    config = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    (tmp_path / "udcbench-tiny-test.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path / "udcbench-tiny-test.json")
    model = open_clip.create_model("udcbench-tiny-test")
    torch.save(model.state_dict(), tmp_path / "tiny.pt")
    yield model, tmp_path / "tiny.pt"
    del _MODEL_CONFIGS["udcbench-tiny-test"]


def test_clip_path_with_a_tiny_local_model(tmp_path, tiny_clip):
    """Random weights saved to a file and loaded back through the real code."""
    model, _ = tiny_clip
    lrdif = LRDif(7, encoder="clip", clip_model="udcbench-tiny-test", clip_weights=str(tmp_path / "tiny.pt"), **SMALL)
    assert lrdif.encoders.kind == "clip" and lrdif.encoders.dim == 16
    torch.testing.assert_close(lrdif.encoders.model.visual.conv1.weight, model.visual.conv1.weight)
    assert not any(p.requires_grad for p in lrdif.encoders.parameters())
    x = torch.randn(2, 3, 48, 48)
    e_image = lrdif.encoders.encode_image(x)
    assert e_image.shape == (2, 16) and lrdif.prior(e_image, torch.tensor([1, 7])).shape == (2, 32)  # 7: none
    cached = lrdif.encoders.encode_image(x, torch.tensor([4, 9]))
    torch.testing.assert_close(cached, e_image)
    # the training set's positions 4 and 9 are served from the cache, whatever the (augmented) view
    torch.testing.assert_close(lrdif.encoders.encode_image(torch.randn(2, 3, 48, 48), torch.tensor([9, 4])),
                               e_image.flip(0))
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        LRDif(7, encoder="clip", clip_model="udcbench-tiny-test", clip_weights=str(tmp_path / "none.pt"), **SMALL)


class _DeviceOnly(torch.Tensor):
    """Positions as they are on a GPU: reading them on the host would wait for the device."""

    def tolist(self):
        raise AssertionError("the device's positions were read on the host")

    item = tolist


def test_the_clip_cache_reads_the_loaders_host_positions_not_the_devices(tmp_path, tiny_clip):
    lrdif = LRDif(7, encoder="clip", clip_model="udcbench-tiny-test", clip_weights=str(tiny_clip[1]), **SMALL)
    images, labels = torch.randn(2, 3, 32, 32), torch.tensor([1, 3])
    on_device = torch.tensor([4, 9]).as_subclass(_DeviceOnly)
    with pytest.raises(AssertionError, match="read on the host"):  # the refusal is real
        lrdif.training_step(Batch(images, labels, on_device), 0)
    lrdif.training_step(Batch(images, labels, on_device, host_index=torch.tensor([4, 9])), 0)
    assert sorted(lrdif.encoders._cache) == [4, 9]


def test_the_unet_layout_carries_the_deepest_scale_up_to_the_finest():
    """U-Net style (the paper's model): every output scale depends on every input scale, and the finest on the
    deepest through the decoder; in sequence each scale's DT blocks see their own map only."""
    torch.manual_seed(0)
    kw = dict(dims=(8, 16, 32), landmark_dims=(4, 4, 4), width=8, token_dim=16, depth=1, z_dim=8)
    maps = [torch.randn(2, d, s, s, requires_grad=True) for d, s in zip((8, 16, 32), (6, 3, 2))]
    z = torch.randn(2, 8)
    for layout, reaches in (("unet", True), ("sequence", False)):
        former = UDCformer(3, layout=layout, **kw)
        reduced = [r(f) for r, f in zip(former.reduce, maps)]
        out = former.dt(reduced, z) if layout == "unet" else reduced
        assert [o.shape for o in out] == [r.shape for r in reduced]
        if layout == "unet":
            (grad,) = torch.autograd.grad(out[0].sum(), maps[2])
            assert grad.abs().sum() > 0
        logits = former(maps, torch.randn(2, 32), z, [torch.randn(2, 4, 4, 4)] * 3)
        assert logits.shape == (2, 3) and (layout == "unet") is reaches
    with pytest.raises(ValueError, match="layout"):
        UDCformer(3, layout="ring", **kw)


def test_the_paper_preset_is_the_papers_model_and_the_shared_budgets_the_fair_one():
    from udcbench.methods import get_method
    from udcbench.methods.lrdif import model_description

    for name in ("lrdif", "lrdif-s1", "lrdif-s2-v1"):
        paper, cpu = (get_method(name).config(p).method_args for p in ("paper", "cpu"))
        assert (paper["encoder"], paper["layout"], paper["label_dropout"]) == ("clip", "unet", 0.0)
        assert (cpu["encoder"], cpu["layout"], cpu["label_dropout"]) == ("scratch", "sequence", 0.5)
        assert model_description(paper).startswith("the paper's model: CLIP ViT-B-32 encoders, DT blocks U-Net")
        assert model_description(cpu).startswith("the fair model: the shared trunk's E_I")
    assert get_method("lrdif").config("quick").method_args["encoder"] == "scratch"


def test_cli_trains_the_papers_model_with_a_local_clip_file_and_names_the_file_without_one(tmp_path, monkeypatch,
                                                                                           tiny_clip):
    import json

    from typer.testing import CliRunner

    from udcbench.cli import app

    _, weights = tiny_clip
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    assert runner.invoke(app, ["generate", "--n-train", "42", "--n-test", "14", "--size", "48"]).exit_code == 0
    small = ["--set", "method_args.width=8", "--set", "method_args.token_dim=16", "--set", "method_args.z_dim=16",
             "--set", "method_args.landmark_epochs=1", "--set", "max_steps=2", "--set", "input_size=48",
             "--set", "epochs=1", "--set", "batch_size=8", "--set", "method_args.clip_model=udcbench-tiny-test"]
    missing = runner.invoke(app, ["train", "lrdif", "--data", "data/synthetic", "--preset", "paper", *small])
    assert missing.exit_code == 2, missing.output
    assert "open_clip_pytorch_model.bin" in missing.output and "--clip FILE" in missing.output
    study = runner.invoke(app, ["reproduce", "--preset", "paper"])  # refused before any data is made
    assert study.exit_code == 2 and "--clip FILE" in study.output and not (tmp_path / "data" / "udc-synthetic").exists()
    wrong = runner.invoke(app, ["train", "scn", "--preset", "paper", "--clip", str(weights)])
    assert wrong.exit_code != 0 and "--clip is for" in wrong.output
    result = runner.invoke(app, ["train", "lrdif", "--data", "data/synthetic", "--preset", "paper", *small,
                                 "--clip", str(weights)])
    assert result.exit_code == 0, result.output
    for run in ("lrdif-s1-paper-s0", "lrdif-paper-s0"):
        record = json.loads((tmp_path / "runs" / "synthetic" / run / "results.json").read_text())
        assert record["notes"]["model"] == ("the paper's model: CLIP udcbench-tiny-test encoders, DT blocks U-Net "
                                            "style, label dropout 0, classifier on the UDCformer's output")
        assert record["notes"]["clip_weights"]["file"] == str(weights.resolve())
        assert "method_args.clip_weights" not in record["config_changes"]  # a file, not a recipe change
        assert record["method_args"]["layout"] == "unet"


@pytest.mark.parametrize("head", ["udcformer", "bypass"])
def test_udcformer_classifies_from_z(head):
    torch.manual_seed(0)
    former = UDCformer(3, z_dim=8, dims=(8, 16, 32), landmark_dims=(4, 4, 4), width=8, token_dim=16, depth=1,
                       head=head)
    if head == "bypass":
        torch.nn.init.normal_(former.merge.weight)  # as after some training (the token path joins at zero)
    maps = [torch.randn(2, d, 8 // (2**i), 8 // (2**i)) for i, d in enumerate((8, 16, 32))]
    landmarks = [torch.randn(2, 4, 12 // (2**i), 12 // (2**i)) for i in range(3)]
    pooled = maps[-1].mean(dim=(2, 3))
    a = former(maps, pooled, torch.zeros(2, 8), landmarks)
    b = former(maps, pooled, torch.ones(2, 8), landmarks)
    assert a.shape == (2, 3) and not torch.allclose(a, b)
    assert F.softmax(a, dim=1).sum(dim=1).allclose(torch.ones(2))
    if head == "udcformer":  # the pooled feature does not reach the classifier
        torch.testing.assert_close(a, former(maps, pooled + 100, torch.zeros(2, 8), landmarks))


def test_an_unknown_head_is_refused():
    with pytest.raises(ValueError, match="head is udcformer or bypass"):
        UDCformer(3, head="pooled")


def test_cli_trains_both_stages_then_variants_reuse_stage_one_unless_they_change_it(tmp_path, monkeypatch):
    import json

    from typer.testing import CliRunner

    from udcbench.cli import app

    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    assert runner.invoke(app, ["generate", "--n-train", "70", "--n-test", "35", "--size", "48"]).exit_code == 0
    small = ["--set", "method_args.width=8", "--set", "method_args.token_dim=16",
             "--set", "method_args.z_dim=16", "--set", "method_args.landmark_epochs=1", "--set", "max_steps=2",
             "--set", "input_size=48"]
    result = runner.invoke(app, ["train", "lrdif", "--data", "data/synthetic", "--preset", "smoke", *small])
    assert result.exit_code == 0, result.output
    runs = tmp_path / "runs" / "synthetic"
    stage1 = json.loads((runs / "lrdif-s1-smoke-s0" / "results.json").read_text())
    stage2 = json.loads((runs / "lrdif-smoke-s0" / "results.json").read_text())
    assert stage1["notes"]["landmarks"] == {"ground_truth": 70}
    assert stage2["notes"]["stage1_run"].endswith("lrdif-s1-smoke-s0")
    (runs / "lrdif-s1-smoke-s0" / "best.pt").unlink()  # stage 2 starts from stage 1's last epoch
    variant = runner.invoke(app, ["train", "lrdif-s2-v1", "--data", "data/synthetic", "--preset", "smoke", *small])
    assert variant.exit_code == 0, variant.output
    assert "training lrdif-s1" not in variant.output  # stage 1 is reused
    steps = runner.invoke(app, ["train", "lrdif", "--data", "data/synthetic", "--preset", "smoke", *small,
                                "--set", "method_args.steps=2", "--tag", "t2"])
    assert steps.exit_code == 0, steps.output
    assert "training lrdif-s1" not in steps.output  # stage 1 never reads the diffusion's steps (Figure 6's sweep)
    ablation = ["--set", "method_args.label_dropout=0.0"]
    clash = runner.invoke(app, ["train", "lrdif-s2-v1", "--data", "data/synthetic", "--preset", "smoke", *small,
                                *ablation])
    assert clash.exit_code == 2 and "method_args.label_dropout" in clash.output and "--tag" in clash.output
    own = runner.invoke(app, ["train", "lrdif-s2-v1", "--data", "data/synthetic", "--preset", "smoke", *small,
                              *ablation, "--tag", "nodrop"])
    assert own.exit_code == 0, own.output
    first = json.loads((runs / "lrdif-s1-smoke-s0-nodrop" / "results.json").read_text())  # its own stage 1
    assert first["config_changes"]["method_args.label_dropout"] == 0.0
    second = json.loads((runs / "lrdif-s2-v1-smoke-s0-nodrop" / "results.json").read_text())
    assert second["notes"]["stage1_run"].endswith("lrdif-s1-smoke-s0-nodrop")
    bad = runner.invoke(app, ["train", "lrdif", "--data", "data/synthetic", "--stage", "2"])
    assert bad.exit_code == 2 and "--from" in bad.output


def test_stage_one_drops_labels_at_the_set_rate(monkeypatch):
    """With label_dropout p, stage 1 trains on "no label" (index C) for a fraction p of the images, so the model
    also learns to classify from the image; evaluation (the oracle) always has the label."""
    torch.manual_seed(0)
    model = small_lrdif("s1", label_dropout=0.5).train()
    seen = []
    original = model.encoders.encode_label
    monkeypatch.setattr(model.encoders, "encode_label", lambda y: seen.append(y.clone()) or original(y))
    batch = Batch(torch.randn(64, 3, 32, 32), torch.arange(64) % 5, torch.arange(64))
    model.training_step(batch, 0)
    given = seen[-1]
    assert 0.3 < (given == 5).float().mean() < 0.7
    kept = given != 5
    assert torch.equal(given[kept], batch.labels[kept])
    model.eval()
    model(batch.images, batch.labels)
    assert torch.equal(seen[-1], batch.labels)
    with pytest.raises(ValueError, match="label_dropout"):
        small_lrdif("s1", label_dropout=1.0)


def test_weights_load_into_the_shared_trunk_as_for_the_baselines(tmp_path):
    import torchvision

    from baselines.backbone import load_resnet18_weights
    from udcbench.methods import get_method

    source = torchvision.models.resnet18(num_classes=7)
    torch.save(source.state_dict(), tmp_path / "msceleb.pth")
    model = small_lrdif()
    provenance = load_resnet18_weights(model.trunk, tmp_path / "msceleb.pth")
    assert provenance["init"].endswith("msceleb.pth")
    torch.testing.assert_close(model.trunk[0].weight, source.conv1.weight)
    torch.testing.assert_close(model.trunk[7][1].conv2.weight, source.layer4[1].conv2.weight)
    assert all(get_method(name).backbone_weights for name in ("lrdif", "lrdif-s1", "lrdif-s2-v1"))


def test_the_label_reaches_the_loss_after_the_first_step_of_stage_one():
    """One zero-initialised projection between the token path and the trunk, not two in series: after one
    update the label embedding gets a gradient (with the DT blocks' branches also at zero it got none for
    epochs, and stage 1 learnt to ignore the label)."""
    torch.manual_seed(0)
    model = small_lrdif("s1", label_dropout=0.0).train()
    batch = Batch(torch.randn(8, 3, 32, 32), torch.arange(8) % 5, torch.arange(8))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        optimizer.zero_grad()
        model.training_step(batch, 0).loss.backward()
        optimizer.step()
    assert model.encoders.label.weight.grad.abs().sum() > 0
    assert model.udcformer.dt[0][0].mod1.w1.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["lrdif", "lrdif-s1", "lldif", "lldif-s1"])
def test_cpu_preset_is_the_controls_recipe_with_the_gradient_norm_clipped(name):
    from udcbench.methods import get_method

    ours, control = get_method(name).config("cpu"), get_method("resnet18").config("cpu")
    assert ours.grad_clip == 5.0 and control.grad_clip == 0.0
    for field in ("input_size", "optimizer", "lr", "momentum", "weight_decay", "schedule", "batch_size",
                  "label_smoothing"):
        assert getattr(ours, field) == getattr(control, field), field


def test_every_departure_of_lrdif_is_recorded_and_shown():
    from typer.testing import CliRunner

    from udcbench.cli import app
    from udcbench.methods import get_method

    departures = " ".join(get_method("lrdif").departures)
    for words in ("x0-parameterisation", "unit root-mean-square", "2 x 2 tokens", "CLS token", "100 epochs",
                  "training split's 68 landmarks", "method_args.head=bypass"):
        assert words in departures, words
    shown = CliRunner().invoke(app, ["methods", "--details"]).stdout
    assert "method_args.head=bypass" in shown and "'head': 'udcformer'" in shown


def test_sampled_evaluation_is_the_same_in_any_batch_or_share_of_the_images():
    """Each image's reverse-chain noise comes from its own key (its position and the seed): evaluated in batches of
    5 or 32, or in two shares as two ranks would, LRDif's sampled outputs agree exactly."""
    from baselines.randomness import image_keys
    from udcbench.config import TrainConfig
    from udcbench.engine.evaluation import predict
    from udcbench.engine.runtime import runtime

    torch.manual_seed(0)
    model = small_lrdif().eval()
    images = np.random.default_rng(0).integers(0, 256, (23, 48, 48, 3), dtype=np.uint8)
    rt = runtime("cpu")
    out = {b: predict(model, images, TrainConfig(input_size=48, eval_batch_size=b, amp=False), rt, features=True)[0]
           for b in (5, 32)}
    np.testing.assert_allclose(out[5], out[32], rtol=0, atol=1e-4)  # float sums by batch size only: no other noise
    x = torch.randn(6, 3, 48, 48)
    model.sample_keys = image_keys(0, torch.arange(6))
    whole = model.embed(x)
    model.sample_keys = image_keys(0, torch.arange(3, 6))
    torch.manual_seed(123)  # the global generator no longer matters
    share = model.embed(x[3:])
    model.sample_keys = None
    torch.testing.assert_close(whole[3:], share, rtol=0, atol=1e-5)
