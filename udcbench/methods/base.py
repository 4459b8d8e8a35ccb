"""The method registry (the timm pattern): ``MethodSpec``, ``@register_method``, ``create_method(name, ...)``,
and the context the engine hands to a method's preparation. Imports no method and not the engine."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from udcbench.config import CPU_RECIPE, PRESETS, QUICK_RECIPE, SMOKE_RECIPE, TrainConfig
from udcbench.datasets.base import DatasetAdapter, Record
from udcbench.errors import UdcbenchError, unknown_name

if TYPE_CHECKING:  # torch loads with the models, not with the registry (``udcbench --help`` lists the methods)
    import torch

    from baselines.base import FERModel


@dataclass
class PrepareContext:
    """What a method's ``prepare`` hook gets from the engine before training starts."""

    adapter: DatasetAdapter
    train_records: list[Record]
    train_images: np.ndarray  # N x S x S x 3 uint8, at the run's input size
    train_widths: list[int]  # the images' original widths (landmarks come in those pixels)
    normalise: Callable[[np.ndarray], torch.Tensor]  # uint8 images -> the model's normalised input
    config: TrainConfig  # with the method's arguments filled in (MethodSpec.args_for)
    device: torch.device
    cache_dir: Path | None
    stage1_run: Path | None  # a second stage's stage-1 run folder (MethodSpec.stage1_arg), else None
    notes: dict  # recorded in the run's results.json


def prepare_landmark_net(net: torch.nn.Module, context: PrepareContext, epochs: int, source: str = "auto") -> None:
    """Pre-train (then freeze) a method's landmark network (:class:`baselines.landmarks.LandmarkNet`) on the
    training images' 68 landmarks (``udcbench landmarks``: the dataset's own or detected, cached), rescaled to
    the run's input size; the landmarks' provenance goes into the run's notes."""
    from baselines import distributed
    from baselines.landmarks import pretrain_landmark_net
    from udcbench.landmarks import compute_landmarks

    cached = context.cache_dir is not None
    if cached and distributed.rank() == 0:  # under DDP rank 0 computes and caches, the others then read its cache
        compute_landmarks(context.adapter, "train", source, context.cache_dir, progress=True)
    distributed.barrier()
    found = compute_landmarks(context.adapter, "train", source, context.cache_dir, progress=not cached)
    index = {id_: i for i, id_ in enumerate(found.ids)}
    size = context.config.input_size
    points = np.stack([found.points[index[r.id]] * (size / width)
                       for r, width in zip(context.train_records, context.train_widths)])
    pretrain_landmark_net(net, context.train_images, points, epochs=epochs, seed=context.config.seed,
                          prepare=context.normalise)
    context.notes["landmarks"] = found.counts()


@dataclass(frozen=True)
class Sweep:
    """A study figure that retrains a method at other values of one method argument (LRDif's Figure 6: the
    number of diffusion steps T); the default value's run is the method's ordinary run."""

    arg: str  # the method argument, e.g. "steps"
    tag: str  # run-folder tag prefix: <method>-<preset>-s<seed>-<tag><value>
    figure: str  # the figure's number, as `udcbench figure NUMBER` names it


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: how to build it, its paper, and its training recipe per preset.

    The ``paper`` preset is ``paper_recipe`` (the official recipe). On the shared budget
    (``shared_budget``, the methods compared in one table) ``cpu`` is :data:`~udcbench.config.CPU_RECIPE`
    updated with ``cpu_recipe``, and ``quick`` is that updated with :data:`~udcbench.config.QUICK_RECIPE`
    and ``quick_recipe``; for a method with a budget of its own ``cpu_recipe`` is its whole ``cpu`` recipe
    and ``quick`` is that updated with ``quick_recipe``. ``smoke`` is :data:`~udcbench.config.SMOKE_RECIPE`.
    ``method_args`` are the loss constants and model options (the defaults of ``--set method_args.NAME=``);
    ``cpu_method_args`` is what every budget but ``paper`` changes in them, ``quick_method_args`` what ``quick``
    changes besides.
    """

    name: str
    title: str
    paper: str
    build: Callable[[int, TrainConfig], FERModel]
    paper_recipe: dict[str, Any]
    shared_budget: bool = True
    cpu_recipe: dict[str, Any] = field(default_factory=dict)
    quick_recipe: dict[str, Any] = field(default_factory=dict)
    method_args: dict[str, Any] = field(default_factory=dict)
    cpu_method_args: dict[str, Any] = field(default_factory=dict)
    quick_method_args: dict[str, Any] = field(default_factory=dict)
    backbone: str = "ResNet-18"
    #: Whether ``--weights`` loads a pretrained backbone (``FERModel.load_backbone_weights``; by default a
    #: torchvision-named ResNet-18 into the model's ``trunk``).
    backbone_weights: bool = True
    description: str = ""
    #: Called before training with (model, PrepareContext): pre-training steps, loading an earlier stage.
    prepare: Callable[[FERModel, PrepareContext], None] | None = None
    #: For a second-stage method: the registered method whose run it starts from, and the method argument that
    #: receives that run's folder.
    stage1: str | None = None
    stage1_arg: str = "from_run"
    #: For a second-stage method: the method arguments only it reads (LRDif's diffusion steps); overriding them
    #: keeps the stage 1 its variants share, where an override of anything else trains a stage 1 of its own.
    stage2_args: tuple[str, ...] = ()
    #: An oracle sees the label at test time (LRDif's stage 1): reported in Table 5, never ranked.
    oracle: bool = False
    #: An ablation row only (LRDif's Table 5 variants): the study trains it where its table is measured (the
    #: ablation dataset under the UDC condition), not on every dataset and condition.
    ablation_only: bool = False
    #: The study retrains the method at other values of one argument for a figure.
    sweep: Sweep | None = None
    #: The study draws a t-SNE of the method's features on its UDC run (Figures 4 and 5).
    tsne: bool = False
    #: Whether ``reproduce --study quick`` trains it by default (its budget holds the methods it was
    #: sized for; ``--methods NAME`` adds any other).
    in_quick_study: bool = True
    #: The degradation kinds (``udc``, ``lowlight``) of the studies that train it by default (LLDif: low light).
    study_kinds: tuple[str, ...] = ("udc", "lowlight")
    #: Where the ``paper`` preset is known to differ from the authors' code, one line each (``udcbench methods
    #: --details``); ``()``: checked against the authors' code, none found; None: not checked. The trunk's start
    #: (the authors' MS-Celeb or ImageNet weights, here ``--weights FILE`` or none) is the run's recorded init.
    departures: tuple[str, ...] | None = None
    #: Method arguments that name a local weights file (LRDif's ``clip_weights``): like ``--weights``, where the
    #: file lies is not a change of recipe (the run records the file and its sha256).
    file_args: tuple[str, ...] = ()
    #: Refuses, with a one-line error, a configuration the method cannot train (LRDif's CLIP encoders without
    #: their file), before any data loads.
    check: Callable[[TrainConfig], None] | None = None

    def config(self, preset: str = "cpu") -> TrainConfig:
        if preset not in PRESETS:
            raise unknown_name("preset", preset, PRESETS)
        cpu = {**(CPU_RECIPE if self.shared_budget else {}), **self.cpu_recipe}
        quick = {**cpu, **(QUICK_RECIPE if self.shared_budget else {}), **self.quick_recipe}
        recipe = {"smoke": SMOKE_RECIPE, "quick": quick, "cpu": cpu, "paper": self.paper_recipe}[preset]
        args = {**self.method_args, **(self.cpu_method_args if preset != "paper" else {}),
                **(self.quick_method_args if preset == "quick" else {})}
        return TrainConfig(method=self.name, preset=preset, method_args=args, **recipe)

    def sweep_run(self, value: int) -> tuple[list[str], str]:
        """The ``--set`` overrides and run-folder tag of the run at ``value`` of the sweep's argument; none for
        the default value, whose run is the ordinary one."""
        if self.sweep is None:
            raise UdcbenchError(f"{self.name} has no sweep")
        if value == self.method_args[self.sweep.arg]:
            return [], ""
        return [f"method_args.{self.sweep.arg}={value}"], f"{self.sweep.tag}{value}"

    def args_for(self, config: TrainConfig) -> dict[str, Any]:
        """``config.method_args`` checked against the method's, with the ones it leaves out (a hand-made or
        older config) at their defaults."""
        unknown = set(config.method_args) - set(self.method_args)
        if unknown:
            raise UdcbenchError(f"{self.name}: unknown method_args {sorted(unknown)} "
                                f"(known: {sorted(self.method_args)})")
        return {**self.method_args, **config.method_args}


def clip_override(spec: MethodSpec, clip: Path | None, strict: bool = True) -> list[str]:
    """``--clip FILE`` as the override of a method's CLIP weights (``[]`` without a file). A method without CLIP
    encoders is refused (``strict``) or left as it is (a study's other methods)."""
    if clip is None:
        return []
    if not Path(clip).is_file():
        raise UdcbenchError(f"--clip: no file at {clip} (a local open_clip checkpoint; nothing is downloaded)")
    if "clip_weights" not in spec.file_args:
        if strict:
            raise UdcbenchError(f"--clip is for the methods with CLIP encoders (lrdif, lldif), not {spec.name}")
        return []
    return [f"method_args.clip_weights={Path(clip).resolve()}"]


_REGISTRY: dict[str, MethodSpec] = {}


def register_method(name: str, **spec: Any) -> Callable:
    """Decorator on a ``build(num_classes, config) -> FERModel`` function."""

    def decorate(build: Callable[[int, TrainConfig], FERModel]) -> Callable:
        _REGISTRY[name] = MethodSpec(name=name, build=build, **spec)
        return build

    return decorate


def method_names(include_test: bool = False) -> list[str]:
    return [n for n in _REGISTRY if include_test or not n.startswith("test_")]


def get_method(name: str) -> MethodSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise unknown_name("method", name, method_names()) from None


def is_first_stage(name: str) -> bool:
    """Whether another registered method starts from runs of ``name``."""
    return any(spec.stage1 == name for spec in _REGISTRY.values())


def study_methods(quick: bool = False, kind: str = "udc") -> list[str]:
    """What ``udcbench reproduce`` trains: every registered method but the tests' and the first stages (each
    trained by the methods that start from it) whose ``study_kinds`` hold the study's degradation ``kind``;
    with ``quick``, those of them in the quick study."""
    return [name for name in method_names() if not is_first_stage(name) and kind in _REGISTRY[name].study_kinds
            and (not quick or _REGISTRY[name].in_quick_study)]


def swept_method(figure: str) -> MethodSpec:
    """The method whose sweep draws figure ``figure``."""
    for name in method_names():
        spec = get_method(name)
        if spec.sweep is not None and spec.sweep.figure == figure:
            return spec
    raise UdcbenchError(f"no registered method draws Figure {figure}")


def create_method(name: str, num_classes: int, config: TrainConfig | None = None) -> FERModel:
    spec = get_method(name)
    config = config or spec.config("cpu")
    return spec.build(num_classes, replace(config, method_args=spec.args_for(config)))
