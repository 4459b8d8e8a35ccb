"""What a study costs, in a unit that does not depend on the machine.

The unit is one **ResNet-18 image-step**: one image through a training step of torchvision's ResNet-18
at 48 x 48 px, batch 64, fp32. A machine's speed in that unit is the images/s it trains such a
ResNet-18 at (``benchmarks/reproduce_time.py`` measures it); a study of U units takes about U / speed
seconds there. Every cost is a ratio to that step, measured by ``benchmarks/method_speed.py
--cost-table`` into ``udcbench/data/method_cost.csv``:

- per method and input size, a training step and an inference per image (``train``, ``infer``);
- per image, drawing a synthetic face, synthesising its UDC copy, decoding and resizing it for a run;
- per run, the fixed set-up (model, MAC count, checkpoints, records); per point, a t-SNE figure.

The quick study has to fit :data:`QUICK_BUDGET_MINUTES` on a 2-core machine that trains that ResNet-18
at :data:`REFERENCE_SPEED` images/s in fp32 (a common laptop or cloud VM without native bf16).

The budget was 15 minutes while the quick study's numbers meant nothing (13 of its 15 results at chance); it is
20 since every method of the paper's main comparison has to learn in it: a face pre-training shared by all runs
(:mod:`udcbench.pretrain`, 2.5 min at the reference speed) and EAC's second epoch (1.9 min per condition) are
what it took, and the cheaper levers (40 px inputs, a shorter pre-training, EAC in one epoch at its own batch)
fell short (``benchmarks/quick_levers.py``; docs/results.md, "The quick study").
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, field
from functools import cache
from importlib import resources

from udcbench.errors import UdcbenchError

UNIT = "ResNet-18 image-steps (torchvision, 48 px, batch 64, fp32)"
#: images/s of that ResNet-18 on the reference machine: 2 threads of an AVX2 CPU without native bf16.
REFERENCE_SPEED = 75.0
QUICK_BUDGET_MINUTES = 20.0
COST_TABLE = "method_cost.csv"
#: What the plan's items leave out (start-up, figures and tables, each run's bookkeeping), as a share of
#: them: ``benchmarks/reproduce_time.py`` measured the quick study at 1.03-1.14 x its items in three runs since
#: images are decoded once per workspace (1.10-1.27 x before, with 25 runs instead of 15); the largest is taken.
UNCOUNTED_SHARE = 0.15


def budget_units(minutes: float = QUICK_BUDGET_MINUTES, speed: float = REFERENCE_SPEED) -> float:
    """How many units ``minutes`` buy on a machine of ``speed`` images/s."""
    return minutes * 60 * speed


@cache
def cost_table() -> dict[tuple[str, int], dict[str, float]]:
    """``(key, input_size) -> {"train": units/image, "infer": units/image}``; overheads have input size 0."""
    text = resources.files("udcbench").joinpath("data", COST_TABLE).read_text()
    table = {}
    for row in csv.DictReader(text.splitlines()):
        table[(row["key"], int(row["input_size"] or 0))] = {"train": float(row["train"]),
                                                            "infer": float(row["infer"] or 0)}
    return table


def unit_cost(key: str, input_size: int = 0, kind: str = "train") -> float:
    """Units per image of ``key`` (a method, or an overhead with ``input_size`` 0)."""
    try:
        return cost_table()[(key, input_size)][kind]
    except KeyError:
        raise UdcbenchError(f"no measured cost for {key} at {input_size} px in udcbench/data/{COST_TABLE}: run "
                            f"'python benchmarks/method_speed.py --cost-table' (sizes: --sizes {input_size})") from None


def method_cost(method: str, input_size: int, kind: str = "train") -> tuple[float, int]:
    """Units per image of ``method`` at ``input_size``, and the size it was measured at: where the table has no
    measurement at that size (the smoke preset's 32 px), the nearest measured size's cost scaled by the pixel
    count (a CNN's work grows with it), which the plan then says."""
    sizes = sorted(size for key, size in cost_table() if key == method and size > 0)
    if input_size in sizes or not sizes:
        return unit_cost(method, input_size, kind), input_size
    nearest = min(sizes, key=lambda size: abs(size - input_size))
    return unit_cost(method, nearest, kind) * (input_size / nearest) ** 2, nearest


@dataclass
class RunWork:
    """What one ``train`` of a plan does, beyond its cost in units: what a GPU's cost table prices."""

    method: str
    input_size: int
    batch_size: int
    trained: int  # images through a training step, over all epochs
    evaluated: int  # images through inference (validation and test after every epoch)
    other_units: float  # the rest (decoding, each epoch's set-up, the method's preparation), in units
    detail: str = ""  # e.g. "15x19 steps of 128, 64 px"


@dataclass
class PlanItem:
    """One piece of work of a study and its cost."""

    what: str  # e.g. "train resnet18", "synthesise toled"
    dataset: str
    condition: str
    units: float
    detail: str = ""
    work: RunWork | None = None  # a training run's work
    after: int | None = None  # the position of the plan item this one needs finished (a stage 2's stage 1)
    #: The inference within other work (a UDC-C sweep, t-SNE), per method: ``trained`` 0, the rest of ``units``
    #: is work on the CPU.
    inference: list[RunWork] = field(default_factory=list)


@dataclass
class StudyPlan:
    preset: str
    items: list[PlanItem] = field(default_factory=list)

    @property
    def units(self) -> float:
        return sum(item.units for item in self.items)

    def minutes(self, speed: float = REFERENCE_SPEED) -> float:
        """The study's time on a machine that trains the unit's ResNet-18 at ``speed`` images/s."""
        return self.units / speed / 60

    def to_json(self) -> dict:
        return {"preset": self.preset, "unit": UNIT, "units": self.units,
                "reference_speed": REFERENCE_SPEED, "reference_minutes": self.minutes(),
                "budget_minutes": QUICK_BUDGET_MINUTES if self.preset == "quick" else None,
                "items": [asdict(item) for item in self.items]}


def split_counts(n_train: int, n_val: int, n_test: int) -> dict[str, int]:
    return {"train": n_train, "val": n_val, "test": n_test}


def run_work(config, counts: dict[str, int], decode: bool = True) -> tuple[RunWork, str]:
    """The work of one ``train`` of ``config`` on splits of ``counts`` (train, val, test) and what it counts: the
    training steps, the evaluation of val and test after every epoch, decoding the images (unless ``decode`` is
    false: an earlier run of the same process decoded them), the method's preparation and the run's fixed set-up."""
    from udcbench.methods import get_method

    size, method = config.input_size, config.method
    steps = max(1, counts["train"] // config.batch_size)
    if config.max_steps:
        steps = min(steps, config.max_steps)
    other = (decode * sum(counts.values()) * unit_cost("load_image") + config.epochs * unit_cost("epoch_setup")
             + unit_cost("run_setup"))
    spec = get_method(method)
    if spec.prepare is not None and spec.stage1 is None:
        other += counts["train"] * unit_cost(f"{method}:prepare")
    work = RunWork(method, size, config.batch_size, config.epochs * steps * config.batch_size,
                   config.epochs * (counts["val"] + counts["test"]), other, f"{config.epochs}x{steps} steps of "
                   f"{config.batch_size}, {size} px")
    measured = method_cost(method, size)[1]
    estimated = f" (cost estimated from {measured} px by pixel count)" if measured != size else ""
    return work, f"{work.detail}{estimated}"


def run_units(config, counts: dict[str, int], decode: bool = True) -> tuple[float, str]:
    """Units of one ``train`` of ``config`` on splits of ``counts`` (:func:`run_work`), and what they count."""
    work, detail = run_work(config, counts, decode)
    return work_units(work), detail


def work_units(work: RunWork) -> float:
    """A run's work in units: its training steps and evaluations at the cost table's rates, and the rest."""
    train, infer = method_cost(work.method, work.input_size)[0], method_cost(work.method, work.input_size, "infer")[0]
    return work.trained * train + work.evaluated * infer + work.other_units
