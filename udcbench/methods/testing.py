"""A tiny CNN registered as ``test_cnn``, for fast tests of the engine."""

from __future__ import annotations

from torch import nn

from baselines.base import Batch, FERModel, StepOutput, cross_entropy
from udcbench.config import SMOKE_RECIPE, TrainConfig
from udcbench.methods.base import register_method


class TinyCNN(FERModel):
    """A few-thousand-parameter CNN for engine tests."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten())
        self.fc = nn.Linear(16, num_classes)

    def embed(self, x):
        return self.body(x)

    def forward(self, x):
        return self.fc(self.embed(x))

    def training_step(self, batch: Batch, epoch: int) -> StepOutput:
        logits = self(batch.images)
        loss = cross_entropy(logits, batch)
        return StepOutput(loss, logits, {"ce": loss.item()})


@register_method(
    "test_cnn", title="Tiny CNN (tests)", paper="-", backbone="tiny CNN",
    description="A tiny CNN for fast engine tests.", paper_recipe=SMOKE_RECIPE, shared_budget=False,
    backbone_weights=False,
)
def _test_cnn(num_classes: int, config: TrainConfig) -> FERModel:
    return TinyCNN(num_classes)
