import math

import pytest
import torch
import torch.nn.functional as F
import torchvision

from baselines.backbone import WeightsError, load_resnet18_weights, resnet18_trunk
from baselines.base import Batch
from baselines.models import affinity_loss as dan_affinity
from baselines.models import (
    class_activation_maps,
    partition_loss,
    rank_regularization,
    scn_relabel,
    uncertainty_fusion,
)
from udcbench.methods import BASELINES, create_method, get_method

from conftest import train_steps


@pytest.mark.parametrize("name", BASELINES)
def test_shapes_at_64_and_native_48(name):
    for size in (64, 48):
        config = get_method(name).config("cpu")
        config.input_size = size
        model = create_method(name, 8, config).eval()
        x = torch.randn(3, 3, size, size)
        assert model(x).shape == (3, 8)
        assert model.embed(x).shape[0] == 3


def test_method_args_a_config_leaves_out_take_the_registry_defaults():
    config = get_method("scn").config("paper")
    config.method_args = {"beta": 0.6}  # e.g. a hand-made config or one recorded by an older version
    model = create_method("scn", 3, config)
    assert (model.beta, model.relabel_margin) == (0.6, get_method("scn").method_args["relabel_margin"])
    assert config.method_args == {"beta": 0.6}  # the caller's config is left as it was
    config = get_method("dan").config("cpu")
    config.method_args = {}
    assert len(create_method("dan", 3, config).heads) == get_method("dan").method_args["num_heads"]


def test_a_misspelt_method_arg_is_refused_before_any_data_loads(tmp_path):
    from udcbench.engine.trainer import train
    from udcbench.errors import UdcbenchError

    config = get_method("scn").config("smoke")
    config.method_args = {"betta": 0.6}
    with pytest.raises(UdcbenchError, match=r"scn: unknown method_args \['betta'\]"):
        create_method("scn", 3, config)

    class NoData:  # any use of the dataset fails the test
        def __getattr__(self, name):
            raise AssertionError(f"the dataset was read ({name}) before the method_args were checked")

    with pytest.raises(UdcbenchError, match="unknown method_args"):
        train(config, NoData(), tmp_path / "run")


def test_scn_rank_regularization_by_hand():
    w = torch.tensor([0.9, 0.1, 0.8, 0.2, 0.7])
    # high group (top 60 %): 0.9, 0.8, 0.7 -> 0.8; low: 0.2, 0.1 -> 0.15; gap 0.65
    assert rank_regularization(w, 0.6, 0.15).item() == 0.0
    assert rank_regularization(w, 0.6, 0.8).item() == pytest.approx(0.15)


def test_scn_relabels_exactly_the_confident_disagreements():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.45, 0.3, 0.25], [0.1, 0.1, 0.8], [0.3, 0.6, 0.1]])
    labels = torch.tensor([1, 1, 2, 0])
    change, new = scn_relabel(probs, labels, 0.2)
    # row 0: 0.7 - 0.2 = 0.5 > 0.2 -> 0 ; row 1: 0.45 - 0.3 = 0.15 no ; row 2: own label ; row 3: 0.6 - 0.3 = 0.3 -> 1
    assert change.tolist() == [0, 3] and new.tolist() == [0, 1]


def test_scn_relabelling_starts_at_its_fraction_of_the_schedule():
    paper = create_method("scn", 3, get_method("scn").config("paper"))
    paper.set_schedule(70)
    assert paper.relabel_epoch == 10  # the official epoch 10 of 70
    cpu = create_method("scn", 3, get_method("scn").config("cpu"))
    cpu.set_schedule(15)
    assert cpu.relabel_epoch == 12  # the last fifth of the cpu budget (from scratch)


def test_scn_training_step_relabels_only_after_its_epoch():
    model = create_method("scn", 3, get_method("scn").config("paper"))
    model.set_schedule(70)
    assert model.relabel_epoch == 10
    batch = Batch(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0]), torch.tensor([10, 11, 12, 13]))
    assert model.training_step(batch, 9).relabel is None
    out = model.training_step(batch, 10)
    positions, new = out.relabel  # every sample's position, its new label or -1 (kept)
    probs = F.softmax(out.logits.detach(), dim=1)
    expected, labels = scn_relabel(probs, batch.labels, 0.2)
    assert positions.tolist() == batch.index.tolist()
    assert (new >= 0).nonzero().flatten().tolist() == expected.tolist() and new[expected].tolist() == labels.tolist()


def test_rul_fusion_by_hand():
    mu = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    u = torch.tensor([[1.0], [3.0]])
    fused = uncertainty_fusion(mu, u, torch.tensor([1, 0]))
    # sample 0: 1/4 * [1,0] + 3/4 * [0,2] ; sample 1: 3/4 * [0,2] + 1/4 * [1,0]
    torch.testing.assert_close(fused, torch.tensor([[0.25, 1.5], [0.25, 1.5]]))


def test_eac_cams_and_consistency():
    feat = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    weight = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, -1.0]])
    cams = class_activation_maps(feat, weight)
    torch.testing.assert_close(cams[:, 0], feat[:, 0])
    torch.testing.assert_close(cams[:, 1], feat[:, 1] - feat[:, 2])
    model = create_method("eac", 4, get_method("eac").config("smoke"))
    out = model.training_step(Batch(torch.randn(2, 3, 32, 32), torch.tensor([0, 1]), torch.arange(2)), 0)
    expected = (out.terms["ce"] + 5.0 * out.terms["consistency"]).item()
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)


def test_eac_consistency_trains_the_trunk_not_the_classifier():
    """As in the official code (CAMs from ``fc.weight.data``); through the classifier it diverges."""
    torch.manual_seed(0)
    batch = Batch(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]), torch.arange(4))
    grads = []
    for weight in (0.0, 5.0):
        torch.manual_seed(0)
        model = create_method("eac", 4, get_method("eac").config("smoke"))
        model.consistency_weight = weight
        model.training_step(batch, 0).loss.backward()
        grads.append((model.fc.weight.grad.clone(), model.trunk[0].weight.grad.clone()))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    assert not torch.allclose(grads[0][1], grads[1][1])


def test_dan_losses_by_hand():
    feat = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    centers = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1])
    # distances to own centre: 1 and (1 + 1) = 2; centre variance per dim: 0.5, 0.5 -> sum 1
    assert dan_affinity(feat, labels, centers).item() == pytest.approx((1 + 2) / 2)
    heads = torch.tensor([[[0.0, 0.0], [2.0, 4.0]]])  # 1 sample, 2 heads, 2 dims
    var = heads.var(dim=1).mean().item()  # (2 + 8) / 2 = 5
    assert partition_loss(heads).item() == pytest.approx(math.log(1 + 2 / var))
    assert partition_loss(heads[:, :1]).item() == 0.0


@pytest.mark.parametrize("name", BASELINES)
def test_a_few_steps_reduce_the_loss(name):
    torch.manual_seed(0)
    config = get_method(name).config("smoke")
    model = create_method(name, 4, config)
    model.set_schedule(100)  # no SCN relabelling here
    x = torch.randn(8, 3, 32, 32)
    losses, _ = train_steps(model, Batch(x, torch.arange(8) % 4, torch.arange(8)), steps=8)
    assert losses[-1] < 0.7 * losses[0], losses


def test_weights_loading_accepts_wrappers_and_rejects_others(tmp_path):
    reference = torchvision.models.resnet18(num_classes=1000)
    state = {f"module.{k}": v for k, v in reference.state_dict().items()}
    torch.save({"state_dict": state}, tmp_path / "msceleb.pth")
    trunk = resnet18_trunk()
    info = load_resnet18_weights(trunk, tmp_path / "msceleb.pth")
    assert len(info["weights_sha256"]) == 64
    torch.testing.assert_close(trunk[0].weight, reference.conv1.weight)
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(WeightsError, match="missing keys"):
        load_resnet18_weights(resnet18_trunk(), tmp_path / "other.pth")
    with pytest.raises(WeightsError, match="not found"):
        load_resnet18_weights(resnet18_trunk(), tmp_path / "nope.pth")


def test_dacl_sparse_center_loss_and_center_step_by_hand():
    from baselines.models import dacl_center_update, sparse_center_loss

    feat = torch.tensor([[1.0, 2.0], [3.0, 0.0], [0.0, 4.0]])
    attention = torch.tensor([[1.0, 0.5], [0.0, 1.0], [0.5, 0.5]])
    labels = torch.tensor([0, 0, 1])
    centers = torch.tensor([[1.0, 1.0], [2.0, 2.0]])
    # 1*0 + 0.5*1 + 0*4 + 1*1 + 0.5*4 + 0.5*4 = 5.5, over 2 and the batch of 3
    assert sparse_center_loss(feat, attention, labels, centers).item() == pytest.approx(5.5 / 2 / 3)
    dacl_center_update(centers, feat, attention, labels, alpha=0.5)
    # class 0: sum a*(x - c) = (0 + 0, 0.5 - 1) over 1 + 2 members; class 1: (-1, 1) over 1 + 1
    torch.testing.assert_close(centers, torch.tensor([[1.0, 1.0 - 0.5 * 0.5 / 3], [2.0 - 0.25, 2.0 + 0.25]]))


def test_dacl_attention_weights_lie_in_zero_one_per_dimension_and_the_loss_trains():
    torch.manual_seed(0)
    model = create_method("dacl", 4, get_method("dacl").config("cpu"))
    x = torch.randn(6, 3, 64, 64)
    logits, pooled, weights = model.eval().parts(x)
    assert logits.shape == (6, 4) and pooled.shape == weights.shape == (6, 512)
    assert ((weights > 0) & (weights < 1)).all()
    model.train()
    batch = Batch(x, torch.tensor([0, 1, 2, 3, 0, 1]), torch.arange(6))
    before = model.centers.clone()
    out = model.training_step(batch, 0)
    assert set(out.terms) == {"ce", "center"} and not torch.equal(model.centers, before)  # centres stepped
    assert not model.centers.requires_grad  # moved by the official rule, not by the optimiser


def test_arm_amends_the_map_with_one_shared_kernel_and_the_batch_affinity():
    from baselines.models import AmendRepresentation

    torch.manual_seed(0)
    arm = AmendRepresentation(32)
    assert arm.de_albino.kernel_size == (9, 9) and arm.out_side == 12  # official 32 / 8 on 112 -> 11 x 11
    x = torch.randn(4, 2, 32, 32)
    arm.train()
    out = arm(x)
    filtered = arm.bn(torch.cat([F.conv2d(x[:, i : i + 1], arm.de_albino.weight, stride=2) for i in range(2)], 1))
    expected = filtered.mean(dim=1) + filtered.mean(dim=(0, 1))  # alpha = 1: the batch-shared affinity
    torch.testing.assert_close(out, expected.flatten(1))
    arm.eval()  # at evaluation the shared term is the running mean: one image's output is the batch's
    torch.testing.assert_close(arm(x[:1]), arm(x)[:1])


def test_arm_reproduces_the_official_shapes_at_224():
    model = create_method("arm", 7, get_method("arm").config("paper")).eval()
    assert (model.arm.de_albino.kernel_size, model.arm.de_albino.stride) == ((32, 32), (8, 8))
    assert model.fc.in_features == 121 and model(torch.randn(2, 3, 224, 224)).shape == (2, 7)


def test_manet_multi_scale_block_chains_its_four_groups_both_ways():
    from baselines.models import MultiScaleBlock

    torch.manual_seed(0)
    block = MultiScaleBlock(8, 8).eval()
    x = torch.randn(2, 8, 6, 6)
    g = list(block.entry(x).chunk(4, dim=1))
    f, b = block.forward_convs, block.backward_convs
    a1 = f[0](g[0]); a2 = f[1](F.relu(a1) + g[1]); a3 = f[2](F.relu(a2) + g[2]); a4 = f[3](F.relu(a3) + g[3])  # noqa: E702
    b4 = b[3](g[3]); b3 = b[2](F.relu(b4) + g[2]); b2 = b[1](F.relu(b3) + g[1]); b1 = b[0](F.relu(b2) + g[0])  # noqa: E702
    expected = F.relu(torch.cat([a1, a2, a3, a4], 1) + torch.cat([b1, b2, b3, b4], 1) + x)
    torch.testing.assert_close(block(x), expected)


def test_manet_local_branches_each_see_one_quadrant_and_the_fusion_is_beta_weighted():
    torch.manual_seed(0)
    model = create_method("manet", 5, get_method("manet").config("cpu")).eval()
    model.trunk = torch.nn.Identity()  # feed layer2 maps directly
    x = torch.randn(2, 128, 8, 8)
    changed = x.clone()
    changed[..., :4, :4] += 1.0  # the top-left quadrant only
    with torch.no_grad():
        outs = [branch(q) for branch, q in zip(model.local, [x[..., :4, :4], x[..., :4, 4:], x[..., 4:, :4],
                                                             x[..., 4:, 4:]])]
        local, _ = model.branches(x)
        torch.testing.assert_close(local, torch.stack([o.mean(dim=(2, 3)) for o in outs]).mean(0))
        moved = model.local[1](changed[..., :4, 4:])
        torch.testing.assert_close(moved, outs[1])  # branch 2 never sees the change
        a, b = model.outputs(x)
        torch.testing.assert_close(model(x), 0.6 * a + 0.4 * b)


def test_weights_load_into_a_trunk_cut_after_layer2(tmp_path):
    source = torchvision.models.resnet18(num_classes=7)
    torch.save(source.state_dict(), tmp_path / "msceleb.pth")
    model = create_method("manet", 5, get_method("manet").config("cpu"))
    load_resnet18_weights(model.trunk, tmp_path / "msceleb.pth")
    torch.testing.assert_close(model.trunk[5][1].conv2.weight, source.layer2[1].conv2.weight)


#: Official training values, read in the authors' code (SCN: kaiwang960112/Self-Cure-Network src/train.py builds
#: ``Adam(params, weight_decay=1e-4)``, Adam's default lr, and ``ExponentialLR(gamma=0.9)``, 70 epochs, batch 64).
#: RUL: zyh-uaiaaaa/Relative-Uncertainty-Learning src/main.py, Adam with the trunk at 2e-4 and the classifier's own
#: group at 2e-3, weight decay 1e-4, ExponentialLR(0.9), 60 epochs of 64.
#: MANet: zengqunzhao/MA-Net main.py, SGD 0.01 (momentum 0.9, weight decay 1e-4), StepLR(15, 0.1), 100 epochs of 128.
# Each baseline's training recipe and constants as its authors' code sets them (the file named), at 224 px.
IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
#: Augmentation and normalisation as each official training script and dataset class do them. basic_aug: SCN's
#: dataset (RUL and ARM copy it): with p 0.5 one of (flip, Gaussian noise of variance 30), no other flip.
BASIC_AUG = {"flip": False, "basic_aug": True, "noise": 0.0, "crop": "none", "affine": False, **IMAGENET}
OFFICIAL = {
    # yaoing/DAN rafdb.py: SGD 0.1 (momentum 0.9), StepLR 10 / 0.1, 40 epochs of 256, rotation and crops, erasing;
    # flips, ImageNet normalisation; AffinityLoss(device) at its default num_class=8 centres
    "dan": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4, "schedule": "step", "step_size": 10,
            "gamma": 0.1, "epochs": 40, "batch_size": 256, "affine": True, "erasing": 0.5, "input_size": 224,
            "flip": True, "basic_aug": False, "noise": 0.0, "crop": "none", **IMAGENET,
            "method_args": {"num_heads": 4, "centers": 8}},
    # DACL main.py: SGD 0.01, weight decay 5e-4, the rate / 10 every 20 epochs, 60 epochs of 64; alpha 0.5, lambda
    # 0.01; Resize(256), RandomFiveCrop(224), RandomHorizontalFlip, its own mean and std, no erasing
    "dacl": {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "step",
             "step_size": 20, "gamma": 0.1, "epochs": 60, "batch_size": 64, "input_size": 224, "erasing": 0.0,
             "flip": True, "basic_aug": False, "noise": 0.0, "crop": "five", "crop_share": 224 / 256, "affine": False,
             "mean": (0.5752, 0.4495, 0.4012), "std": (0.2086, 0.1911, 0.1827),
             "method_args": {"lamb": 0.01, "alpha": 0.5}},
    # Erasing-Attention-Consistency src/main.py: Adam 1e-4, weight decay 1e-4, x0.9 per epoch, 60 epochs of 32,
    # erasing; lam 5; the image and its flip in two passes; add_g noise with p 0.5; the main image never flipped
    "eac": {"optimizer": "adam", "lr": 1e-4, "weight_decay": 1e-4, "schedule": "exponential", "gamma": 0.9,
            "epochs": 60, "batch_size": 32, "erasing": 0.5, "affine": False, "input_size": 224,
            "flip": False, "basic_aug": False, "noise": 0.5, "crop": "none", **IMAGENET,
            "method_args": {"consistency_weight": 5.0, "separate_passes": True, "backbone": "resnet18"}},
    # ARM train_raf-db.py: Adam at its default 1e-3, weight decay 1e-4, x0.9 per epoch, 70 epochs of 256, erasing
    "arm": {"optimizer": "adam", "lr": 1e-3, "weight_decay": 1e-4, "schedule": "exponential", "gamma": 0.9,
            "epochs": 70, "batch_size": 256, "erasing": 0.5, "input_size": 224, **BASIC_AUG},
    # MA-Net main.py: SGD 0.01, weight decay 1e-4, the rate / 10 every 15 epochs, 100 epochs of 128;
    # RandomResizedCrop((224, 224)), RandomHorizontalFlip, ToTensor and no Normalize
    "manet": {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4, "schedule": "step",
              "step_size": 15, "gamma": 0.1, "epochs": 100, "batch_size": 128, "input_size": 224, "erasing": 0.0,
              "flip": True, "basic_aug": False, "noise": 0.0, "crop": "resized", "affine": False,
              "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)},
    # POSTER_V2 main.py: SAM (rho 0.05) around Adam 3.5e-5, no weight decay, x0.98 per epoch, 200 epochs of 144;
    # flips, ImageNet normalisation, erasing
    "posterpp": {"optimizer": "adam", "lr": 3.5e-5, "weight_decay": 0.0, "sam_rho": 0.05, "schedule": "exponential",
                 "gamma": 0.98, "epochs": 200, "batch_size": 144, "erasing": 0.5, "input_size": 224,
                 "flip": True, "basic_aug": False, "noise": 0.0, "crop": "none", "affine": False, **IMAGENET},
    # RUL src/main.py: Adam 2e-4 for the trunk, 2e-3 for the classifier, x0.9 per epoch, 60 epochs of 64
    "rul": {"optimizer": "adam", "lr": 2e-4, "head_lr_scale": 10.0, "weight_decay": 1e-4, "schedule": "exponential",
            "gamma": 0.9, "epochs": 60, "batch_size": 64, "input_size": 224, "erasing": 0.5, **BASIC_AUG},
    # SCN src/train.py: Adam at its default 1e-3, weight decay 1e-4, x0.9 per epoch, 70 epochs of 64; relabelling
    # from epoch 10 at margin 0.2, the importance weights' beta 0.7
    "scn": {"optimizer": "adam", "lr": 1e-3, "weight_decay": 1e-4, "schedule": "exponential", "gamma": 0.9,
            "epochs": 70, "batch_size": 64, "input_size": 224, "erasing": 0.5, **BASIC_AUG,
            "method_args": {"beta": 0.7, "relabel_margin": 0.2, "relabel_start": 10 / 70}},
}
#: What every entry above states: the recipe's augmentation and normalisation are always checked.
AUGMENTATION = ("flip", "basic_aug", "noise", "crop", "affine", "erasing", "mean", "std")


@pytest.mark.parametrize("method", sorted(OFFICIAL))
def test_the_paper_preset_is_the_official_recipe(method):
    config, official = get_method(method).config("paper"), dict(OFFICIAL[method])
    assert set(AUGMENTATION) <= set(official), f"{method}: augmentation and normalisation not checked"
    args = official.pop("method_args", {})
    assert {k: getattr(config, k) for k in official} == official
    assert {k: config.method_args[k] for k in args} == args


def test_every_baseline_was_checked_against_its_authors_code():
    """Every baseline's departures are recorded (an empty list: checked, none found) and its recipe is above."""
    from udcbench.methods.resnet import BASELINES

    checked = [*BASELINES, "posterpp"]
    assert [m for m in checked if get_method(m).departures is None] == []
    assert set(checked) - {"resnet18"} == set(OFFICIAL)  # the control has no authors' code (its departure says so)


def test_the_classifier_trains_at_its_own_rate_where_the_recipe_says():
    from udcbench.engine.optim import make_optimizer, make_scheduler, param_groups

    config = get_method("rul").config("paper")
    model = create_method("rul", 7, config)
    optimizer = make_optimizer(param_groups(model, config), config)
    rates = [group["lr"] for group in optimizer.param_groups]
    assert rates == [pytest.approx(2e-4), pytest.approx(2e-3)]
    assert {id(p) for p in optimizer.param_groups[1]["params"]} == {id(p) for p in model.fc.parameters()}
    config.schedule, config.epochs = "onecycle", 1
    make_scheduler(make_optimizer(param_groups(model, config), config), config, 10)  # one peak per group
    assert len(param_groups(model, get_method("resnet18").config("paper"))) == 1


def test_eac_runs_the_image_and_its_flip_in_two_passes_at_the_paper_preset():
    paper, cpu = (create_method("eac", 7, get_method("eac").config(p)) for p in ("paper", "cpu"))
    assert paper.separate_passes and not cpu.separate_passes
    torch.manual_seed(0)
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    cpu.load_state_dict(paper.state_dict())
    out = [m.train().training_step(Batch(images, labels, torch.arange(4)), 0) for m in (paper, cpu)]
    assert all(torch.isfinite(o.loss) for o in out)
    # the two passes keep the halves' batch-norm statistics apart: the losses differ, the logits' shape does not
    assert out[0].logits.shape == out[1].logits.shape == (4, 7) and not torch.allclose(out[0].loss, out[1].loss)


def test_methods_details_show_the_paper_preset_and_its_known_departures():
    from typer.testing import CliRunner

    from udcbench.cli import app

    result = CliRunner().invoke(app, ["methods", "--details"])
    assert result.exit_code == 0, result.output
    eac = result.stdout[result.stdout.index("eac ("):]
    assert "head_lr_scale=1.0" in eac and "'backbone': 'resnet18'" in eac.split("\n\n")[0]
    scn = result.stdout[result.stdout.index("scn ("):].split("\n\n")[0]
    assert "none found (checked against the authors' code)" in scn
    assert "none recorded" in result.stdout  # the methods not yet checked say so, not "none"


def test_eac_takes_the_official_codes_resnet50():
    from udcbench.config import apply_overrides
    from udcbench.errors import UdcbenchError

    config = apply_overrides(get_method("eac").config("smoke"), ["method_args.backbone=resnet50"])
    model = create_method("eac", 7, config)
    assert model.fc.in_features == 2048 and model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    with pytest.raises(UdcbenchError, match="resnet18 or resnet50"):
        create_method("eac", 7, apply_overrides(get_method("eac").config("smoke"), ["method_args.backbone=vgg"]))
