"""The method registry (the timm pattern): ``@register_method`` and ``create_method(name, ...)``.

Each method has a spec: its paper, its official training recipe (the ``paper`` preset), what it
changes in the shared ``cpu`` budget, and its loss constants. ``test_*`` variants are tiny models
for fast tests of the engine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from torch import nn

from baselines.base import Batch, FERModel, StepOutput
from baselines.models import DAN, EAC, RUL, SCN, SCN_RELABEL_START, ResNet18FER, _ce
from udcbench.engine.config import PRESETS, TrainConfig
from udcbench.errors import UdcbenchError, unknown_name

#: The shared CPU budget: every method trains on it with its own losses, so they compare fairly.
CPU_RECIPE: dict[str, Any] = dict(
    input_size=64, optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="onecycle", epochs=15,
    batch_size=128, flip=True, affine=True, erasing=0.25, amp=True,
)
#: The quick budget (``reproduce --preset quick`` on the built-in synthetic faces, sized in
#: :mod:`udcbench.budget`): 48 px, one epoch of Adam (SGD from scratch leaves chance level only after
#: many more steps), no augmentation (it slows the first steps down and nothing overfits in one epoch).
QUICK_RECIPE: dict[str, Any] = {**CPU_RECIPE, "input_size": 48, "epochs": 1, "batch_size": 64,
                                "optimizer": "adam", "lr": 2e-3, "weight_decay": 1e-4, "flip": False,
                                "affine": False, "erasing": 0.0}
SMOKE_RECIPE: dict[str, Any] = dict(
    input_size=32, optimizer="sgd", lr=0.01, schedule="constant", epochs=1, batch_size=8, eval_batch_size=32,
    max_steps=2, amp=False, erasing=0.25,
)


@dataclass(frozen=True)
class MethodSpec:
    name: str
    title: str
    paper: str
    build: Callable[[int, TrainConfig], FERModel]
    paper_recipe: dict[str, Any]
    cpu_recipe: dict[str, Any] = field(default_factory=dict)
    method_args: dict[str, Any] = field(default_factory=dict)
    backbone: str = "ResNet-18"
    description: str = ""
    #: Called before training with (model, PrepareContext): pre-training steps, loading an earlier stage.
    prepare: Callable[[FERModel, Any], None] | None = None
    #: For a second-stage method: the registered method whose run it starts from.
    stage1: str | None = None
    #: method_args that the cpu, quick and smoke budgets change (e.g. a smaller model).
    cpu_method_args: dict[str, Any] = field(default_factory=dict)
    #: An oracle sees the label at test time (LRDif's stage 1): reported in Table 5, never ranked.
    oracle: bool = False
    #: What the quick budget changes in the cpu recipe (default: QUICK_RECIPE for ResNet-18 methods).
    quick_recipe: dict[str, Any] = field(default_factory=dict)

    def config(self, preset: str = "cpu") -> TrainConfig:
        if preset not in PRESETS:
            raise unknown_name("preset", preset, PRESETS)
        resnet = self.backbone == "ResNet-18"
        cpu = {**CPU_RECIPE, **self.cpu_recipe} if resnet else self.cpu_recipe
        quick = {**cpu, **(QUICK_RECIPE if resnet else {}), **self.quick_recipe}
        recipe = {"smoke": SMOKE_RECIPE, "quick": quick, "cpu": cpu, "paper": self.paper_recipe}[preset]
        args = {**self.method_args, **(self.cpu_method_args if preset != "paper" else {})}
        return TrainConfig(method=self.name, preset=preset, method_args=args, **recipe)

    def args_for(self, config: TrainConfig) -> dict[str, Any]:
        """``config.method_args`` checked against the method's, with the ones it leaves out (a hand-made or
        older config) at their defaults."""
        unknown = set(config.method_args) - set(self.method_args)
        if unknown:
            raise UdcbenchError(f"{self.name}: unknown method_args {sorted(unknown)} "
                                f"(known: {sorted(self.method_args)})")
        return {**self.method_args, **config.method_args}


_REGISTRY: dict[str, MethodSpec] = {}


def register_method(name: str, **spec: Any) -> Callable:
    """Decorator on a ``build(num_classes, config) -> FERModel`` function."""

    def decorate(build: Callable[[int, TrainConfig], FERModel]) -> Callable:
        _REGISTRY[name] = MethodSpec(name=name, build=build, **spec)
        return build

    return decorate


def method_names(include_test: bool = False) -> list[str]:
    return [n for n in _REGISTRY if include_test or not n.startswith("test_")]


BASELINES = ("resnet18", "scn", "rul", "eac", "dan")


def get_method(name: str) -> MethodSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise unknown_name("method", name, method_names()) from None


def create_method(name: str, num_classes: int, config: TrainConfig | None = None) -> FERModel:
    spec = get_method(name)
    config = config or spec.config("cpu")
    return spec.build(num_classes, replace(config, method_args=spec.args_for(config)))


def _paper(**kw: Any) -> dict[str, Any]:
    return {"input_size": 224, "amp": True, "affine": False, **kw}


@register_method(
    "resnet18", title="ResNet-18", paper="He et al., CVPR 2016 (plain cross-entropy control)",
    description="The control: ResNet-18 with cross-entropy (label smoothing 0.1 on the cpu budget).",
    paper_recipe=_paper(optimizer="sgd", lr=0.01, weight_decay=1e-4, schedule="exponential", gamma=0.9, epochs=40,
                        batch_size=64, erasing=0.5),
    cpu_recipe=dict(label_smoothing=0.1),
)
def _resnet18(num_classes: int, config: TrainConfig) -> FERModel:
    return ResNet18FER(num_classes, label_smoothing=config.label_smoothing)


@register_method(
    "scn", title="SCN", paper="Wang et al., Suppressing Uncertainties for Large-Scale FER, CVPR 2020",
    description="Self-Cure Network: importance-weighted logits, rank regularisation, relabelling.",
    paper_recipe=_paper(optimizer="adam", lr=0.01, weight_decay=1e-4, schedule="exponential", gamma=0.9, epochs=70,
                        batch_size=64, erasing=0.5),
    method_args={"beta": 0.7, "rank_margin": None, "relabel_margin": 0.2, "relabel_start": SCN_RELABEL_START},
    # From scratch the model is still weak at 10/70 of the schedule and relabels a third of FERPlus
    # (README, "SCN from scratch"), so the short budgets relabel in their last fifth only.
    cpu_method_args={"relabel_start": 0.8},
)
def _scn(num_classes: int, config: TrainConfig) -> FERModel:
    args = config.method_args
    margin = args["rank_margin"]
    if margin is None:  # the authors' margins: 0.07 at batch 64, 0.15 otherwise
        margin = 0.07 if config.batch_size == 64 else 0.15
    return SCN(num_classes, beta=args["beta"], rank_margin=margin, relabel_margin=args["relabel_margin"],
               relabel_start=args["relabel_start"])


@register_method(
    "rul", title="RUL", paper="Zhang et al., Relative Uncertainty Learning for FER, NeurIPS 2021",
    description="Mean and log-variance branches, uncertainty-weighted pairwise fusion, add-up loss.",
    paper_recipe=_paper(optimizer="adam", lr=2e-4, weight_decay=1e-4, schedule="exponential", gamma=0.9, epochs=60,
                        batch_size=64, erasing=0.5),
    method_args={"out_dim": 64, "drop_rate": 0.4},
)
def _rul(num_classes: int, config: TrainConfig) -> FERModel:
    return RUL(num_classes, input_size=config.input_size, out_dim=config.method_args["out_dim"],
               drop_rate=config.method_args["drop_rate"])


@register_method(
    "eac", title="EAC", paper="Zhang et al., Learn From All: Erasing Attention Consistency, ECCV 2022",
    description="CAM consistency between an erased image and its horizontal flip (weight 5).",
    paper_recipe=_paper(optimizer="adam", lr=1e-4, weight_decay=1e-4, schedule="exponential", gamma=0.9, epochs=60,
                        batch_size=32, erasing=0.5),
    # From scratch at the shared budget's peak lr (0.1) a spike of the consistency term collapsed the trunk on
    # UDC-FERPlus (features at the term's trivial minimum, the prior class predicted from epoch 4 on); the
    # official recipe steps far more gently (Adam 1e-4). Clipping the gradient norm (about 3 in steady
    # training) trims such spikes only.
    cpu_recipe=dict(erasing=0.5, grad_clip=5.0),
    method_args={"consistency_weight": 5.0},
)
def _eac(num_classes: int, config: TrainConfig) -> FERModel:
    return EAC(num_classes, consistency_weight=config.method_args["consistency_weight"])


@register_method(
    "dan", title="DAN", paper="Wen et al., Distract Your Attention: Multi-head Cross Attention Network, 2023",
    description="Four cross-attention heads, attention fusion, affinity and partition losses.",
    paper_recipe=_paper(optimizer="sgd", lr=0.1, weight_decay=1e-4, schedule="step", step_size=10, gamma=0.1,
                        epochs=40, batch_size=256, affine=True, erasing=0.5),
    method_args={"num_heads": 4},
)
def _dan(num_classes: int, config: TrainConfig) -> FERModel:
    return DAN(num_classes, num_heads=config.method_args["num_heads"])


# -- LRDif ------------------------------------------------------------------------------------------------
LRDIF_PAPER = {"input_size": 112, "optimizer": "adam", "lr": 3.5e-4, "weight_decay": 1e-4, "schedule": "constant",
               "epochs": 100, "batch_size": 64, "amp": True, "affine": False, "erasing": 0.0}
#: bf16 autocast is off on the cpu budget: it slows the UDCformer's depth-wise convolutions down on CPU.
LRDIF_CPU = {"input_size": 48, "optimizer": "adam", "lr": 3.5e-4, "weight_decay": 1e-4, "schedule": "cosine",
             "epochs": 6, "batch_size": 64, "amp": False, "affine": True, "erasing": 0.0}
LRDIF_ARGS = {"steps": 4, "z_dim": 256, "parameterization": "x0", "kl_temperature": 1.0, "encoder": "scratch",
              "clip_model": "ViT-B-32", "clip_weights": None, "landmark_epochs": 3, "landmark_source": "auto",
              "from_run": None, "dims": [48, 96, 192], "blocks": [1, 2, 2], "token_dim": 256, "depth": 2}
#: Stage 2 gets twice stage 1's epochs: the oracle converges within one, stage 2 was still climbing at 6 on
#: UDC-FERPlus (50.5 -> 65.2 %), and 6 + 12 epochs (about 50 s each there) still fit the 30-minute budget.
LRDIF_CPU_STAGE2_EPOCHS = 12
#: The cpu budget's smaller UDCformer (same modules, narrower and shallower).
LRDIF_CPU_ARGS = {"dims": [24, 48, 96], "blocks": [1, 1, 1], "token_dim": 128, "depth": 1, "z_dim": 128}
#: The quick budget: the cpu model on 32 px inputs, 20 steps per stage.
LRDIF_QUICK = {"input_size": 32, "epochs": 1, "max_steps": 20, "lr": 1e-3}


def _lrdif_builder(variant: str) -> Callable[[int, TrainConfig], FERModel]:
    def build(num_classes: int, config: TrainConfig) -> FERModel:
        from lrdif.model import LRDif

        a = config.method_args
        encoder = a["encoder"] if a["encoder"] != "auto" else ("clip" if a["clip_weights"] else "scratch")
        try:
            return LRDif(num_classes, variant=variant, steps=int(a["steps"]), z_dim=int(a["z_dim"]),
                         parameterization=a["parameterization"], kl_temperature=float(a["kl_temperature"]),
                         encoder=encoder, clip_model=a["clip_model"], clip_weights=a["clip_weights"],
                         mean=config.mean, std=config.std, dims=a["dims"], blocks=a["blocks"],
                         token_dim=int(a["token_dim"]), depth=int(a["depth"]))
        except FileNotFoundError as exc:
            raise UdcbenchError(str(exc)) from None

    return build


def _lrdif_prepare(model: FERModel, context: Any) -> None:
    """Stage 1: pre-train (then freeze) the landmark network on the dataset's landmarks.
    Stage 2: start from the stage-1 run (``method_args.from_run``) and freeze FPEN_S1 and its encoders."""
    import numpy as np
    import torch

    from udcbench.engine.data import normalise
    from udcbench.landmarks import compute_landmarks

    config = context.config
    args = get_method(config.method).args_for(config)
    if model.variant.stage == 2:
        source = args["from_run"]
        if not source:
            raise UdcbenchError("LRDif stage 2 needs its stage-1 run: --from RUN (or let udcbench train run both)")
        path = Path(source) / "best.pt"
        if not path.is_file():
            raise UdcbenchError(f"no stage-1 checkpoint at {path}")
        model.load_stage1(torch.load(path, map_location="cpu", weights_only=False)["model"])
        model.train()  # freezes FPEN_S1, the encoders and the landmark network
        context.notes["stage1_run"] = str(Path(source).resolve())
        return
    found = compute_landmarks(context.adapter, "train", args["landmark_source"], context.cache_dir, progress=True)
    index = {id_: i for i, id_ in enumerate(found.ids)}
    points = np.stack([found.points[index[r.id]] * (config.input_size / size)
                       for r, size in zip(context.plan.train, context.train_sizes)])
    model.pretrain_landmarks(normalise(context.train_images, config), points, epochs=int(args["landmark_epochs"]),
                             seed=config.seed)
    context.notes["landmarks"] = found.counts()


for _variant, _title in (("s1", "LRDif stage 1 (oracle: label in)"), ("s2-v3", "LRDif (the paper's model)"),
                         ("s2-v1", "LRDif S2-V1 (no DM, L_ce)"), ("s2-v2", "LRDif S2-V2 (DM, L_ce)"),
                         ("s2-v4", "LRDif S2-V4 (DM, L_total, no inserted noise)")):
    register_method(
        "lrdif" if _variant == "s2-v3" else f"lrdif-{_variant}", title=_title, backbone="diffusion + transformer",
        paper="Wang, Zhang, Sankaranarayana, LRDif: Diffusion Models for UDC Emotion Recognition, arXiv 2402.00250",
        description=f"LRDif variant {_variant} (Table 5).", paper_recipe=LRDIF_PAPER,
        cpu_recipe=LRDIF_CPU if _variant == "s1" else {**LRDIF_CPU, "epochs": LRDIF_CPU_STAGE2_EPOCHS},
        method_args=dict(LRDIF_ARGS), cpu_method_args=dict(LRDIF_CPU_ARGS),
        quick_recipe=LRDIF_QUICK,
        prepare=_lrdif_prepare,
        stage1=None if _variant == "s1" else "lrdif-s1", oracle=_variant == "s1",
    )(_lrdif_builder(_variant))


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
        loss = _ce(logits, batch)
        return StepOutput(loss, logits, {"ce": loss.item()})


@register_method(
    "test_cnn", title="Tiny CNN (tests)", paper="-", backbone="tiny CNN",
    description="A tiny CNN for fast engine tests.", paper_recipe=SMOKE_RECIPE,
)
def _test_cnn(num_classes: int, config: TrainConfig) -> FERModel:
    return TinyCNN(num_classes)
