"""The ResNet-18 methods: the plain control, SCN, RUL, EAC, DAN, DACL, ARM and MANet, on the shared budget."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from udcbench.config import TrainConfig
from udcbench.errors import UdcbenchError
from udcbench.methods.base import register_method

if TYPE_CHECKING:  # the models import torch; the registry does not (``udcbench --help`` lists the methods)
    from baselines.base import FERModel

BASELINES = ("resnet18", "scn", "rul", "eac", "dan", "dacl", "arm", "manet")
# DACL, ARM and MANet are left out of ``reproduce --study quick`` by default: its budget holds the paper's main
# comparison (the five methods before them and LRDif); MANet alone costs 3.2 ResNet-18 steps per image.
# ``reproduce --study quick --methods dacl ...`` trains them on request.


def _paper(**kw: Any) -> dict[str, Any]:
    return {"input_size": 224, "amp": True, "affine": False, **kw}


@register_method(
    "resnet18", title="ResNet-18", paper="He et al., CVPR 2016 (plain cross-entropy control)",
    description="The control: ResNet-18 with cross-entropy (label smoothing 0.1 on the cpu budget).",
    paper_recipe=_paper(optimizer="sgd", lr=0.01, weight_decay=1e-4, schedule="exponential", gamma=0.9, epochs=40,
                        batch_size=64, erasing=0.5),
    cpu_recipe=dict(label_smoothing=0.1),
    tsne=True,  # Figures 4 and 5 set the control beside LRDif
    departures=(
        "the LRDif paper gives no recipe for its ResNet-18 control: this one (SGD 0.01, x0.9 per epoch, 40 epochs of "
        "64) follows the baselines around it, it is not a published one",
    ),
)
def _resnet18(num_classes: int, config: TrainConfig) -> FERModel:
    from baselines.models import ResNet18FER

    return ResNet18FER(num_classes, label_smoothing=config.label_smoothing)


@register_method(
    "scn", title="SCN", paper="Wang et al., Suppressing Uncertainties for Large-Scale FER, CVPR 2020",
    description="Self-Cure Network: importance-weighted logits, rank regularisation, relabelling.",
    # The official src/train.py builds Adam without a learning rate (``Adam(params, weight_decay=1e-4)``): Adam's
    # default 1e-3, decayed by 0.9 per epoch.
    # its dataset's basic_aug (with p 0.5 a flip or Gaussian noise of variance 30) and RandomErasing; no other flip
    paper_recipe=_paper(optimizer="adam", lr=1e-3, weight_decay=1e-4, schedule="exponential", gamma=0.9, epochs=70,
                        batch_size=64, erasing=0.5, flip=False, basic_aug=True),
    # relabelling from epoch 10 of 70, as the official recipe
    method_args={"beta": 0.7, "rank_margin": None, "relabel_margin": 0.2, "relabel_start": 10 / 70},
    # From scratch the model is still weak at 10/70 of the schedule and relabels a third of FERPlus
    # (docs/training.md, "SCN from scratch"), so the short budgets relabel in their last fifth only.
    cpu_method_args={"relabel_start": 0.8},
    departures=(),
)
def _scn(num_classes: int, config: TrainConfig) -> FERModel:
    from baselines.models import SCN

    args = config.method_args
    margin = args["rank_margin"]
    if margin is None:  # the authors' margins: 0.07 at batch 64, 0.15 otherwise
        margin = 0.07 if config.batch_size == 64 else 0.15
    return SCN(num_classes, beta=args["beta"], rank_margin=margin, relabel_margin=args["relabel_margin"],
               relabel_start=args["relabel_start"])


@register_method(
    "rul", title="RUL", paper="Zhang et al., Relative Uncertainty Learning for FER, NeurIPS 2021",
    description="Mean and log-variance branches, uncertainty-weighted pairwise fusion, add-up loss.",
    # The official src/main.py: Adam at 2e-4 for the trunk and 2e-3 for the classifier (its own parameter group),
    # weight decay 1e-4, decayed by 0.9 per epoch, 60 epochs of 64.
    # SCN's dataset and its basic_aug (a flip or Gaussian noise, 25 % each), RandomErasing
    paper_recipe=_paper(optimizer="adam", lr=2e-4, head_lr_scale=10.0, weight_decay=1e-4, schedule="exponential",
                        gamma=0.9, epochs=60, batch_size=64, erasing=0.5, flip=False, basic_aug=True),
    method_args={"out_dim": 64, "drop_rate": 0.4},
    departures=(),
)
def _rul(num_classes: int, config: TrainConfig) -> FERModel:
    from baselines.models import RUL

    return RUL(num_classes, input_size=config.input_size, out_dim=config.method_args["out_dim"],
               drop_rate=config.method_args["drop_rate"])


@register_method(
    "eac", title="EAC", paper="Zhang et al., Learn From All: Erasing Attention Consistency, ECCV 2022",
    description="CAM consistency between an erased image and its horizontal flip (weight 5).",
    # add_g (Gaussian noise of variance 30) with p 0.5 and RandomErasing; the main image is never flipped (its flip is
    # the consistency term's second view)
    paper_recipe=_paper(optimizer="adam", lr=1e-4, weight_decay=1e-4, schedule="exponential", gamma=0.9, epochs=60,
                        batch_size=32, erasing=0.5, flip=False, noise=0.5),
    # From scratch at the shared budget's peak lr (0.1) a spike of the consistency term collapsed the trunk on
    # UDC-FERPlus (features at the term's trivial minimum, the prior class predicted from epoch 4 on); the
    # official recipe steps far more gently (Adam 1e-4). Clipping the gradient norm (about 3 in steady
    # training) trims such spikes only.
    cpu_recipe=dict(erasing=0.5, grad_clip=5.0),
    # Two epochs on the quick budget: from the face pre-training's trunk the consistency term holds the cross-entropy
    # back for most of the first (test accuracy after one epoch 34 %, after two 57 / 61 % for seeds 0 / 1, the
    # control 76 % after one; docs/results.md, "The quick study").
    quick_recipe=dict(epochs=2),
    # the paper preset runs the image and its flip in two passes as the official code; the shared budgets in one
    # backbone: resnet18 (the paper's comparison) or the official code's resnet50 (--weights then a ResNet-50)
    method_args={"consistency_weight": 5.0, "separate_passes": True, "backbone": "resnet18"},
    cpu_method_args={"separate_passes": False},
    departures=(
        "the official code trains a ResNet-50; the comparison is on ResNet-18 (method_args.backbone=resnet50 is the "
        "official one)",
    ),
)
def _eac(num_classes: int, config: TrainConfig) -> FERModel:
    from baselines.models import EAC

    args = config.method_args
    backbone = args.get("backbone", "resnet18")
    if backbone not in ("resnet18", "resnet50"):
        raise UdcbenchError(f"--set method_args.backbone: resnet18 or resnet50, got '{backbone}'")
    return EAC(num_classes, consistency_weight=args["consistency_weight"],
               separate_passes=bool(args.get("separate_passes", False)), backbone=backbone)


@register_method(
    "dan", title="DAN", paper="Wen et al., Distract Your Attention: Multi-head Cross Attention Network, 2023",
    description="Four cross-attention heads, attention fusion, affinity and partition losses.",
    paper_recipe=_paper(optimizer="sgd", lr=0.1, weight_decay=1e-4, schedule="step", step_size=10, gamma=0.1,
                        epochs=40, batch_size=256, affine=True, erasing=0.5),
    # the official AffinityLoss keeps its default num_class=8 centres (RAF-DB has 7 classes); one per class elsewhere
    method_args={"num_heads": 4, "centers": 8},
    cpu_method_args={"centers": None},
    departures=(
        "the official code rotates (20 degrees) and pad-crops (32 px) a fifth of the images; here the shared affine "
        "jitter (half the images: rotation up to 10 degrees, shift 6 %, scale 0.9-1.1)",
    ),
)
def _dan(num_classes: int, config: TrainConfig) -> FERModel:
    from baselines.models import DAN

    centers = config.method_args.get("centers")
    return DAN(num_classes, num_heads=config.method_args["num_heads"],
               centers=None if centers is None else max(int(centers), num_classes))


@register_method(
    "dacl", title="DACL", in_quick_study=False,
    paper="Farzaneh and Qi, Facial Expression Recognition in the Wild via Deep Attentive Center Loss, WACV 2021",
    description="Per-dimension attention from the last feature map; attention-weighted sparse center loss.",
    # the official recipe (workspace.py, main.py): SGD 0.01, momentum 0.9, weight decay 5e-4, batch 64, 60 epochs,
    # the rate divided by 10 every 20 epochs; centres stepped at alpha 0.5, loss weight lambda 0.01; Resize(256), one
    # of five 224 crops (RandomFiveCrop), flips, its own RAF-DB mean and std; at test the centre crop
    paper_recipe=_paper(optimizer="sgd", lr=0.01, weight_decay=5e-4, schedule="step", step_size=20, gamma=0.1,
                        epochs=60, batch_size=64, erasing=0.0, crop="five", crop_share=224 / 256,
                        mean=(0.5752, 0.4495, 0.4012), std=(0.2086, 0.1911, 0.1827)),
    method_args={"lamb": 0.01, "alpha": 0.5},
    departures=(),
)
def _dacl(num_classes: int, config: TrainConfig) -> FERModel:
    from baselines.models import DACL

    return DACL(num_classes, input_size=config.input_size, lamb=config.method_args["lamb"],
                alpha=config.method_args["alpha"])


@register_method(
    "arm", title="ARM", in_quick_study=False,
    paper="Shi and Zhu, Learning to Amend Facial Expression Representation via De-albino and Affinity, "
          "arXiv 2103.10189",
    description="Amend representation module (pixel shuffle, de-albino kernel, shared affinity) for the pooling.",
    # the official train_raf-db.py: Adam (its default rate 1e-3), weight decay 1e-4, batch 256, 70 epochs, the
    # rate times 0.9 every epoch, random erasing with probability 0.5 (its scale 0.02-0.1, ours 0.02-0.25)
    # and SCN's basic_aug in its dataset (a flip or Gaussian noise, 25 % each)
    paper_recipe=_paper(optimizer="adam", lr=1e-3, weight_decay=1e-4, schedule="exponential", gamma=0.9, epochs=70,
                        batch_size=256, erasing=0.5, flip=False, basic_aug=True),
    departures=(
        "random erasing covers 2-25 % of the image (the official 2-10 %)",
        "the de-albino kernel and stride scale with the feature map (the official 32 / 8 on the 112-px map of a 224-px"
        " input)",
        "at evaluation the shared affinity is a running mean of the training batches' (the official code takes the "
        "test batch's)",
    ),
)
def _arm(num_classes: int, config: TrainConfig) -> FERModel:
    from baselines.models import ARM

    return ARM(num_classes, input_size=config.input_size)


@register_method(
    "manet", title="MANet", in_quick_study=False,
    paper="Zhao, Liu and Wang, Learning Deep Global Multi-scale and Local Attention Features for Facial "
          "Expression Recognition in the Wild, IEEE TIP 2021",
    description="Local attention branch over four quadrants + multi-scale branch after layer2, fused 0.6 / 0.4.",
    # the official main.py: SGD 0.01, momentum 0.9, weight decay 1e-4, batch 128, the rate divided by 10 every
    # 15 epochs over its default 100 epochs, RandomResizedCrop and flips, no normalisation (ToTensor only: x / 255)
    paper_recipe=_paper(optimizer="sgd", lr=0.01, weight_decay=1e-4, schedule="step", step_size=15, gamma=0.1,
                        epochs=100, batch_size=128, affine=False, erasing=0.0, crop="resized", mean=(0.0, 0.0, 0.0),
                        std=(1.0, 1.0, 1.0)),
    method_args={"beta": 0.6},
    departures=(
        "a random resized crop that would leave the image is clamped to it (torchvision draws again, up to 10 times)",
    ),
)
def _manet(num_classes: int, config: TrainConfig) -> FERModel:
    from baselines.models import MANet

    return MANet(num_classes, beta=config.method_args["beta"])
