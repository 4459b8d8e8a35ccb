"""POSTER++ as a registered method: the paper's recipe on IR-50, the shared budget on ResNet-18's layer1-3, and
the landmark network's pre-training (shared with LRDif)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from udcbench.config import TrainConfig
from udcbench.methods.base import PrepareContext, prepare_landmark_net, register_method

if TYPE_CHECKING:
    from baselines.base import FERModel

POSTER_ARGS = {"trunk": "ir50", "depth": 2, "landmark_epochs": 3, "landmark_source": "auto"}


def _prepare(model: FERModel, context: PrepareContext) -> None:
    args = context.config.method_args
    prepare_landmark_net(model.landmarks, context, epochs=int(args["landmark_epochs"]), source=args["landmark_source"])
    context.notes["trunk"] = args["trunk"]


@register_method(
    "posterpp", title="POSTER++", in_quick_study=False, backbone="IR-50 / ResNet-18 + landmark net + ViT",
    paper="Mao et al., POSTER V2: A Simpler and Stronger Facial Expression Recognition Network, arXiv 2301.12149",
    description="Landmark-to-image window cross-attention at three scales, 768-d tokens, two transformer blocks.",
    # the official main.py: SAM (rho 0.05) around Adam at 3.5e-5 (no weight decay reaches it), the rate times
    # 0.98 every epoch, batch 144, 200 epochs, 224 px, flips and random erasing (its scale 0.02-0.1, ours 0.02-0.25)
    paper_recipe={"input_size": 224, "amp": True, "affine": False, "optimizer": "adam", "lr": 3.5e-5,
                  "weight_decay": 0.0, "schedule": "exponential", "gamma": 0.98, "epochs": 200, "batch_size": 144,
                  "erasing": 0.5, "sam_rho": 0.05},
    method_args=POSTER_ARGS,
    # IR-50's first three stages run at a fixed 112 px: POSTER++ on them costs 7.57 GMACs per image at any input
    # size, 51x ResNet-18's 0.148 at 64 px (0.298 on ResNet-18's layer1-3, which have IR-50's widths). The shared
    # budgets take ResNet-18's layers, and the run records which (``trunk``)
    cpu_method_args={"trunk": "resnet18"},
    quick_method_args={"landmark_epochs": 1},
    departures=(
        "the landmark network is udcbench's LandmarkNet trained on the dataset's landmarks (the official code: a pre-"
        "trained MobileFaceNet)",
        "the window cross-attention's window is the whole map (the official 28 / 14 / 7 windows on the 28 / 14 / 7 "
        "maps of a 224-px input: the same there)",
        "random erasing covers 2-25 % of the image (the official 2-10 %)",
    ),
    prepare=_prepare,
)
def _posterpp(num_classes: int, config: TrainConfig) -> FERModel:
    from baselines.poster import PosterPP

    a = config.method_args
    return PosterPP(num_classes, input_size=config.input_size, trunk=a["trunk"], depth=int(a["depth"]))
