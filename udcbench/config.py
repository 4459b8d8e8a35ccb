"""Training configuration: the ``TrainConfig`` dataclass, the four presets (smoke, quick, cpu, paper), the
shared recipes that the methods' presets start from, and ``--set`` overrides.

Imported by the engine and the methods, importing neither.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from udcbench.errors import UdcbenchError

#: smoke: a few steps (tests); quick: the built-in synthetic faces in seconds per method (``reproduce --study
#: quick``); cpu: real data on 2 CPU cores in about 20-30 minutes per method; paper: the method's official recipe.
PRESETS = ("smoke", "quick", "cpu", "paper")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("onecycle", "exponential", "step", "cosine", "constant")
CROPS = ("none", "five", "resized")
#: Batch norm over the ranks of a multi-GPU run: auto turns it on when a rank's share of the batch is under
#: :data:`SYNC_BN_BELOW` images (its statistics would be those of a much smaller batch than one GPU's), on, off.
SYNC_BN = ("auto", "on", "off")
SYNC_BN_BELOW = 16
#: The most loader worker processes a run may ask for: each holds a process and a share of the batch queue, and
#: more than 8 per core only thrash (a run that asked for 1e9 forked until memory ran out).
MAX_WORKERS_PER_CORE = 8
#: The largest input side a run may ask for (the paper's recipes use 224; a checkpoint declaring 60000 would have a
#: photo resized to 10 GB).
MAX_INPUT_SIZE = 1024
#: Fields a ``--set`` may not change: each has its own option (a run's folder and records are named by them).
OWN_OPTIONS = {"method": "the METHOD argument", "preset": "--budget", "seed": "--seed", "weights": "--weights"}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: The shared CPU budget: every method trains on it with its own losses, so they compare fairly.
CPU_RECIPE: dict[str, Any] = dict(
    input_size=64, optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="onecycle", epochs=15,
    batch_size=128, flip=True, affine=True, erasing=0.25, amp=True,
)
#: The quick budget (``reproduce --study quick`` on the built-in synthetic faces, sized in
#: :mod:`udcbench.budget`): 48 px, one epoch of Adam (SGD from scratch leaves chance level only after
#: many more steps), no augmentation (it slows the first steps down and nothing overfits in one epoch). Its
#: learning rate is the one of 1e-3, 2e-3 and 4e-3 with the highest mean validation accuracy over the study's
#: methods and seeds 0 and 1 (``python benchmarks/quick_levers.py``, ``benchmarks/results/quick_choice.csv``).
QUICK_RECIPE: dict[str, Any] = {**CPU_RECIPE, "input_size": 48, "epochs": 1, "batch_size": 64,
                                "optimizer": "adam", "lr": 1e-3, "weight_decay": 1e-4, "flip": False,
                                "affine": False, "erasing": 0.0}
SMOKE_RECIPE: dict[str, Any] = dict(
    input_size=32, optimizer="sgd", lr=0.01, schedule="constant", epochs=1, batch_size=8, eval_batch_size=32,
    max_steps=2, amp=False, erasing=0.25,
)


#: Settings of how a run executes, not of what it trains: runs that differ only in them are the same recipe (they
#: share tables and a stage 1; the record keeps them).
RUN_SETTINGS = ("num_workers", "eval_batch_size", "compile")


@dataclass
class TrainConfig:
    """Everything that defines a training run (recorded in the run folder as config.json)."""

    method: str = "resnet18"
    preset: str = "cpu"
    input_size: int = 64
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    optimizer: str = "sgd"  # sgd, adam, adamw
    lr: float = 0.1
    head_lr_scale: float = 1.0  # the classifier (fc) at lr x this (RUL's official recipe: 10)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "onecycle"  # onecycle, exponential, step, cosine, constant
    gamma: float = 0.9  # exponential / step decay
    step_size: int = 10  # step schedule, in epochs
    epochs: int = 15
    batch_size: int = 128
    eval_batch_size: int = 256
    label_smoothing: float = 0.0
    grad_clip: float = 0.0  # clip the global gradient norm to this before each step; 0 = off
    sam_rho: float = 0.0  # SAM's radius (two passes per step, POSTER++'s official recipe); 0 = off
    flip: bool = True
    affine: bool = True  # small scale / shift / rotation jitter
    erasing: float = 0.25  # probability of random erasing (scale 0.02-0.25)
    noise: float = 0.0  # probability of additive Gaussian noise (EAC's add_g: std noise_std in 8-bit units)
    noise_std: float = 30**0.5  # the official codes' ``var=30``
    basic_aug: bool = False  # SCN's basic_aug (RUL, ARM): with p 0.5, a flip or the noise (25 % each), never both
    crop: str = "none"  # none; five: DACL's one of five crops of crop_share (eval: the centre one);
    #                     resized: torchvision's RandomResizedCrop (MA-Net; eval: the whole image)
    crop_share: float = 224 / 256  # the five-crop's side as a share of the image (DACL: 224 of 256)
    amp: bool = True  # fp16 (with a grad scaler) on CUDA, bf16 on a CPU with native bf16, else fp32
    seed: int = 0
    val_fraction: float = 0.1  # held out from train when the dataset has no separate validation split
    max_steps: int = 0  # per epoch, 0 = all (smoke preset)
    num_workers: int = -1  # loader processes; -1: automatic (none on a CPU run, up to 4 per GPU)
    compile: bool = False  # torch.compile the training step (recorded; results as without)
    sync_bn: str = "auto"  # SyncBatchNorm over the ranks of a multi-GPU run (SYNC_BN); recorded with the world size
    weights: str | None = None  # MS-Celeb-1M ResNet-18 checkpoint; None = from scratch
    method_args: dict[str, Any] = field(default_factory=dict)  # loss constants and model options

    def validate(self) -> None:
        """Refuse settings no run can train with, in one line."""
        import math
        import os

        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise UdcbenchError(f"{f.name} must be a finite number, got {value}")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if (not isinstance(value, (tuple, list)) or len(value) != 3
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                               for v in value)):
                raise UdcbenchError(f"{name} is three finite numbers (one per channel), got {value!r}")
        if not all(v > 0 for v in self.std):
            raise UdcbenchError(f"std must be positive in every channel, got {tuple(self.std)}")
        most = MAX_WORKERS_PER_CORE * (os.cpu_count() or 1)
        if self.num_workers > most:
            raise UdcbenchError(f"num_workers {self.num_workers} is above this machine's bound of {most} "
                                f"({MAX_WORKERS_PER_CORE} per core): -1 chooses for you")
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "eval_batch_size": self.eval_batch_size,
                    "input_size": self.input_size, "lr": self.lr, "head_lr_scale": self.head_lr_scale}
        for name, value in positive.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise UdcbenchError(f"{name} must be positive, got {value!r}")
        whole = (("seed", self.seed, 0, 2**32 - 1), ("input_size", self.input_size, 1, MAX_INPUT_SIZE),
                 ("epochs", self.epochs, 1, 100_000), ("batch_size", self.batch_size, 1, 1 << 16),
                 ("eval_batch_size", self.eval_batch_size, 1, 1 << 16))
        for name, value, low, high in whole:
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise UdcbenchError(f"{name} is a whole number in [{low}, {high}], got {value!r}")
        for name, value in (("val_fraction", self.val_fraction), ("label_smoothing", self.label_smoothing)):
            if not 0 <= value < 1:
                raise UdcbenchError(f"{name} must be in [0, 1), got {value}")
        for name, value in (("erasing", self.erasing), ("noise", self.noise)):
            if not 0 <= value <= 1:
                raise UdcbenchError(f"{name} is a probability, got {value}")
        if not 0 <= self.noise_std <= 255:
            raise UdcbenchError(f"noise_std is in 8-bit units, 0-255, got {self.noise_std}")
        if not 0 < self.crop_share <= 1:
            raise UdcbenchError(f"crop_share is in (0, 1], got {self.crop_share}")
        for name, value in (("max_steps", self.max_steps), ("grad_clip", self.grad_clip), ("sam_rho", self.sam_rho)):
            if value < 0:
                raise UdcbenchError(f"{name} must be 0 or more, got {value}")
        if self.num_workers < -1:
            raise UdcbenchError(f"num_workers must be -1 (automatic) or more, got {self.num_workers}")
        for name, value, known in (("optimizer", self.optimizer, OPTIMIZERS), ("schedule", self.schedule, SCHEDULES),
                                   ("preset", self.preset, PRESETS), ("crop", self.crop, CROPS),
                                   ("sync_bn", self.sync_bn, SYNC_BN)):
            if value not in known:
                raise UdcbenchError(f"unknown {name} '{value}' (known: {', '.join(known)})")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainConfig:
        """A saved configuration (a run's config.json, a checkpoint's ``config``), checked as ``--set`` values are
        before anything is built: an unknown key, a wrong type or a value out of range is one line."""
        if not isinstance(data, dict):
            raise UdcbenchError(f"a saved configuration is a mapping, got {type(data).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise UdcbenchError(f"a saved configuration has unknown key(s) {unknown}: not written by this udcbench")
        data = dict(data)
        for key in ("mean", "std"):
            if isinstance(data.get(key), list):
                data[key] = tuple(data[key])
        config = cls(**data)
        config.validate()
        return config


def env_number(name: str, default: float, low: float, high: float, unit: str) -> float:
    """The number in environment variable ``name`` (``default`` when unset or empty), refused in one line outside
    [``low``, ``high``] or when it is no number."""
    import os

    raw = os.environ.get(name) or str(default)
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not low <= value <= high:
        raise UdcbenchError(f"{name} is a number of {unit} from {low:g} to {high:g}, got '{raw}'")
    return value


def _typed(key: str, current: Any, value: Any, raw: str) -> Any:
    """``value`` in ``current``'s type (bool or number), or a one-line error."""
    if isinstance(current, bool) and not isinstance(value, bool):
        raise UdcbenchError(f"--set {key}: expected true or false, got '{raw}'")
    if isinstance(current, (int, float)) and not isinstance(current, bool):
        try:
            return type(current)(value)
        except (TypeError, ValueError):
            raise UdcbenchError(f"--set {key}: expected a number, got '{raw}'") from None
    return value


def apply_overrides(config: TrainConfig, pairs: list[str] | None) -> TrainConfig:
    """``["lr=0.01", "epochs=3", "method_args.beta=0.6"]`` applied with the fields' own types (a method
    argument's type is that of its default, where it has one)."""
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise UdcbenchError(f"--set '{pair}' is not KEY=VALUE")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        if key.startswith("method_args."):
            name = key.split(".", 1)[1]
            config.method_args[name] = _typed(key, config.method_args.get(name), value, raw)
            continue
        if key not in fields:
            raise UdcbenchError(f"--set: unknown field '{key}' (fields: {', '.join(sorted(fields))})")
        if key in OWN_OPTIONS:
            raise UdcbenchError(f"--set {key}: use {OWN_OPTIONS[key]} instead")
        setattr(config, key, _typed(key, getattr(config, key), value, raw))
    return config
