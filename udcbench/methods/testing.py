"""``test_cnn``: the tiny CNN of :mod:`baselines.tiny`, registered for fast tests of the engine."""

from __future__ import annotations

from typing import TYPE_CHECKING

from udcbench.config import SMOKE_RECIPE, TrainConfig
from udcbench.methods.base import register_method

if TYPE_CHECKING:
    from baselines.base import FERModel


@register_method(
    "test_cnn", title="Tiny CNN (tests)", paper="-", backbone="tiny CNN",
    description="A tiny CNN for fast engine tests.", paper_recipe=SMOKE_RECIPE, shared_budget=False,
    backbone_weights=False,
)
def _test_cnn(num_classes: int, config: TrainConfig) -> FERModel:
    from baselines.tiny import TinyCNN

    return TinyCNN(num_classes)
