"""A tiny CNN (a few thousand parameters) for fast tests of the engine, registered as ``test_cnn``."""

from __future__ import annotations

from torch import nn

from baselines.base import Batch, FERModel, StepOutput, cross_entropy


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
        return StepOutput(loss, logits, {"ce": loss.detach()})
