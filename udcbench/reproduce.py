"""``udcbench reproduce``: the whole study in one resumable command.

For each dataset: synthesise its UDC copy when missing, train every method (the baselines and LRDif
with its Table 5 variants; LRDif's stage 1 is shared) on clean and UDC data, retrain LRDif's stage 2
for a few diffusion-step counts (Figure 6), then write Tables 1-5, the figures and the leaderboard.
Finished runs are read back, unfinished ones resumed, so a killed reproduce continues where it stopped.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import cache, partial
from pathlib import Path
from typing import TypeVar

from udcbench.budget import (
    UNCOUNTED_SHARE,
    PlanItem,
    RunWork,
    StudyPlan,
    method_cost,
    run_work,
    split_counts,
    unit_cost,
    work_units,
)
from udcbench.datasets import create_dataset, detect_dataset
from udcbench.datasets.base import DatasetAdapter
from udcbench.engine.runs import STORE, data_tag, finished, run_folder, stage1_plan, train_method
from udcbench.engine.store import load_results
from udcbench.errors import DatasetNotFoundError, UdcbenchError
from udcbench.files import folder_lock, read_json
from udcbench.methods import get_method, method_names, study_methods, swept_method
from udcbench.methods.base import clip_override
from udcbench.pretrain import PRETRAINED, FacePretraining, pretrained_trunk
from udcbench.reports.tables import UDC_TABLE, BuiltTable, build_table, dataset_title, write_table
from udcbench.robustness import REFERENCE_METHOD
from udcbench.workspace import Workspace, condition_folder

T = TypeVar("T")
PAPER_DATASETS = ("rafdb", "ferplus", "kdef")
#: Processes that draw the synthetic faces and synthesise UDC copies (the images do not depend on it).
DATA_WORKERS = min(2, os.cpu_count() or 1)


@dataclass(frozen=True)
class StudyPreset:
    """What one reproduce preset trains: the training preset, the data, Figure 6's step counts and the UDC panel."""

    train_preset: str
    datasets: tuple[str, ...]
    steps: tuple[int, ...]
    description: str
    condition: str = "toled"
    #: Only the methods marked for the quick study (``MethodSpec.in_quick_study``) unless ``--methods`` says.
    quick_methods: bool = False
    #: Whether it writes Table 5 (LRDif's ablation) even when it trains none of the ablation's variants (its empty
    #: cells then say how to fill them); the quick study leaves the ablation to the cpu and paper studies.
    ablation: bool = True
    #: The face pre-training every run starts from (``--weights``), trained once per workspace; None: from scratch.
    pretrain: FacePretraining | None = None
    #: The UDC-C sweep the study ends with (``udcbench robustness`` of its runs); None: none.
    robustness: RobustnessPlan | None = None


@dataclass(frozen=True)
class RobustnessPlan:
    """Which runs a study sweeps over the panels (:data:`udcbench.robustness.DEFAULT_PANELS`), at which severities and
    on how many test images (None: all)."""

    severities: tuple[int, ...] = (1, 2, 3, 4, 5)
    limit: int | None = None
    clean_only: bool = False  # only the runs trained clean (ImageNet-C's question); else every run

    def describe(self) -> str:
        runs = "the runs trained clean" if self.clean_only else "every run"
        images = f"the first {self.limit} test images (class-stratified)" if self.limit else "the whole test split"
        return f"{runs}, severities {', '.join(map(str, self.severities))}, {images}"


STUDY_PRESETS = {
    "smoke": StudyPreset("smoke", ("synthetic",), (1, 4), "a few steps per method: checks the pipeline, no results",
                         robustness=RobustnessPlan((5,), 35, clean_only=True)),
    # The paper's main comparison only (Table 5's variants and Figure 6's sweep are in the cpu and paper studies),
    # every run from one face pre-training; T-OLED, whose scale for the built-in faces costs the control a visible
    # 5-15 points (degradations/presets/toled.yaml; P-OLED left them dark and hazed: every method near chance).
    "quick": StudyPreset("quick", ("synthetic",), (),
                         "the built-in synthetic faces, the quick study's methods at the quick budget (minutes on a "
                         "CPU)", "toled", quick_methods=True, ablation=False, pretrain=FacePretraining(),
                         # UDC-C in what the 20 minutes leave: the clean-trained runs, mild and harsh severities (3 is
                         # the panel the study trains on), 12 test faces per class (the budget's last 0.4 min)
                         robustness=RobustnessPlan((1, 5), 84, clean_only=True)),
    "cpu": StudyPreset("cpu", PAPER_DATASETS, (1, 2, 4, 8), "real data at the cpu budget (2 CPU cores)",
                       robustness=RobustnessPlan()),
    "paper": StudyPreset("paper", PAPER_DATASETS, (1, 2, 4, 8, 16), "real data, the papers' recipes (a GPU)",
                         robustness=RobustnessPlan()),
}


@dataclass(frozen=True)
class StudyRun:
    dataset: str  # the study's dataset name
    condition: str
    record: dict  # the run's results.json


@dataclass
class StudySummary:
    runs: list[StudyRun] = field(default_factory=list)  # one per job (a two-stage job: its second stage)
    files: list[Path] = field(default_factory=list)
    tables: list = field(default_factory=list)
    skipped_datasets: list[str] = field(default_factory=list)
    seconds: float = 0.0  # this invocation's
    first_stages: list[dict] = field(default_factory=list)  # the records of the jobs' shared first stages
    trained_now: int = 0  # runs this invocation trained (or finished), first stages included

    @property
    def run_count(self) -> int:
        """Runs in the study: one per job plus each shared first stage once."""
        return len(self.runs) + len(self.first_stages)

    @property
    def train_minutes(self) -> float:
        """Training minutes of all the study's runs, whichever invocation trained them."""
        return sum(r.get("minutes") or 0.0 for r in [*(run.record for run in self.runs), *self.first_stages])

    def describe(self, preset: str) -> str:
        """The closing line: what the study holds and what this invocation did."""
        shared = len(self.first_stages)
        stages = f" ({shared} of them first stages shared by two-stage jobs)" if shared else ""
        return (f"reproduce --study {preset}: {self.run_count} runs{stages}, {self.trained_now} trained by this "
                f"invocation, {self.run_count - self.trained_now} already finished; the study's runs trained for "
                f"{self.train_minutes:.1f} min in all; this invocation took {self.seconds / 60:.1f} min")


#: The t-SNE figures (Figures 4 and 5) show at most this many test images.
TSNE_MAX_IMAGES = 2000


@dataclass(frozen=True)
class Job:
    """One training run of the study; ``value`` is set for a sweep's extra runs (Figure 6's step counts)."""

    dataset: str
    condition: str
    method: str
    seed: int
    value: int | None = None

    def overrides(self) -> tuple[list[str], str]:
        """The ``--set`` overrides and run-folder tag of this run."""
        return get_method(self.method).sweep_run(self.value) if self.value is not None else ([], "")

    def title(self) -> str:
        sweep = get_method(self.method).sweep
        return self.method + (f" {sweep.tag}={self.value}" if self.value is not None else "")


def ablation_dataset(names: list[str]) -> str:
    """Where Table 5 and Figure 6 are measured: the first paper dataset at hand, else the first dataset."""
    return next(n for n in (*PAPER_DATASETS, *names) if n in names)


def study_jobs(names: list[str], conditions: tuple[str, ...], methods: list[str], seeds: list[int],
               steps: list[int], ablation_data: str) -> list[Job]:
    """Every method on every dataset and condition (an ablation-only method on the ablation data under the UDC
    condition), then the sweeps' runs (Figure 6's step counts) of the methods that have one, there too."""
    jobs = [Job(name, cond, method, seed) for name in names for cond in conditions for method in methods
            for seed in seeds
            if not get_method(method).ablation_only or (name, cond) == (ablation_data, conditions[-1])]
    for spec in (get_method(m) for m in methods):
        values = [v for v in steps if spec.sweep is not None and spec.sweep_run(v)[1]]
        jobs += [Job(ablation_data, conditions[-1], spec.name, seed, v) for v in values for seed in seeds]
    return jobs


def clean_source(name: str, workspace: Workspace, src_root: Path | None) -> Path:
    return (src_root or workspace.data) / name


def _adapter(root: Path) -> DatasetAdapter:
    return create_dataset(detect_dataset(root), root)


def _drawn(folder: Path) -> bool:
    """Whether ``folder`` holds finished synthetic faces (a complete ``udcbench generate`` of any size)."""
    manifest = read_json(folder / "manifest.json")
    return isinstance(manifest, dict) and manifest.get("complete") is not False


def _complete(folder: Path) -> bool:
    """Whether ``folder`` holds a finished ``udcbench synth`` output."""
    manifest = read_json(folder / "manifest.json")
    return isinstance(manifest, dict) and manifest.get("complete") is True


def prepare_data(name: str, workspace: Workspace, src_root: Path | None, conditions: tuple[str, ...],
                 log: Callable[[str], None]) -> dict[str, DatasetAdapter]:
    """The clean and degraded adapters of one dataset, synthesising (or drawing) what is missing."""
    from degradations import load_recipe
    from udcbench.synthesis import synthesize

    root = clean_source(name, workspace, src_root)
    if name == "synthetic":
        from udcbench.datasets.generate import generate_synthetic

        if not _drawn(root):  # an earlier 'udcbench generate' is used as it is
            generate_synthetic(root, workers=DATA_WORKERS)
            log(f"drew the built-in synthetic faces into {root}")
    elif not root.is_dir():
        raise DatasetNotFoundError(f"{name}: no folder at {root} (pass --src-root DIR holding {name}/, or "
                                   f"--datasets without it)")
    adapters = {"clean": _adapter(root)}
    for condition in conditions[1:]:
        out = workspace.dataset_dir(condition_folder(name, condition))
        if not _complete(out):
            log(f"synthesising {out} ({condition}) from {root}")
            synthesize(adapters["clean"], out, load_recipe(condition), workers=DATA_WORKERS, resume=out.exists(),
                       cache_dir=workspace.cache)
        adapters[condition] = _adapter(out)
    return adapters


def _resolve(preset: str, datasets: list[str] | None, methods: list[str] | None, seeds: list[int] | None,
             steps: list[int] | None, condition: str | None
             ) -> tuple[StudyPreset, list[str], list[str], list[int], list[int], str]:
    """The study preset and its datasets, methods, seeds, Figure 6 step counts and UDC condition, defaults
    filled in."""
    if preset not in STUDY_PRESETS:
        raise UdcbenchError(f"unknown reproduce preset '{preset}' (known: {', '.join(STUDY_PRESETS)})")
    study = STUDY_PRESETS[preset]
    # every argument checked before any work (drawing faces, synthesis); the CLI's choices check the condition
    from udcbench.datasets import get_adapter_class

    for name in methods or ():
        get_method(name)
    for name in datasets or ():
        get_adapter_class(name)
    if any(s < 0 for s in seeds or ()):
        raise UdcbenchError("--seeds are non-negative integers")
    if any(t < 1 for t in steps or ()):
        raise UdcbenchError("--steps are positive integers")
    condition = condition or study.condition
    from degradations import load_recipe

    defaults = study_methods(study.quick_methods, load_recipe(condition).kind)
    return (study, list(datasets or study.datasets), list(methods or defaults),
            list(seeds if seeds is not None else [0]), list(steps if steps is not None else study.steps), condition)


def _none_found(names: list[str], workspace: Workspace, src_root: Path | None) -> DatasetNotFoundError:
    return DatasetNotFoundError(
        f"none of {', '.join(names)} found under {src_root or workspace.data}; put them there (see "
        f"'udcbench datasets') or pass --src-root DIR, or run 'udcbench reproduce --study quick'")


def plan_study(preset: str, workspace: Workspace, datasets: list[str] | None = None, src_root: Path | None = None,
               methods: list[str] | None = None, seeds: list[int] | None = None, condition: str | None = None,
               steps: list[int] | None = None) -> StudyPlan:
    """What :func:`reproduce` would do from an empty workspace, and its cost (:mod:`udcbench.budget`).

    The synthetic faces are counted at their default size when they are not drawn yet; a real dataset
    that is not at hand is left out, as ``reproduce`` skips it.
    """
    from udcbench.config import apply_overrides
    from udcbench.datasets.generate import DEFAULT_COUNTS
    from udcbench.engine.data import plan_splits

    study, names, methods, seeds, steps, condition = _resolve(preset, datasets, methods, seeds, steps, condition)
    conditions = ("clean", condition)
    plan = StudyPlan(preset)
    adapters: dict[str, DatasetAdapter | None] = {}
    for name in names:
        root = clean_source(name, workspace, src_root)
        if name == "synthetic" and not _drawn(root):
            adapters[name], images = None, sum(DEFAULT_COUNTS.values())
            plan.items.append(PlanItem("draw faces", name, "clean", images * unit_cost("draw_face"),
                                       f"{images} images"))
        elif root.is_dir():
            adapters[name] = _adapter(root)
            images = sum(len(adapters[name].records(split)) for split in adapters[name].splits())
        else:
            continue
        for cond in conditions[1:]:
            plan.items.append(PlanItem(f"synthesise {cond}", name, cond, images * unit_cost("synthesise"),
                                       f"{images} images"))
    if not adapters:
        raise _none_found(names, workspace, src_root)
    if study.pretrain is not None and not (workspace.runs / PRETRAINED / study.pretrain.folder_name()).is_dir():
        recipe = study.pretrain
        units = recipe.images * unit_cost("draw_face") + recipe.steps() * recipe.batch_size * unit_cost(
            "resnet18", recipe.input_size)
        plan.items.append(PlanItem("face pre-training", "synthetic", "pretrain", units,
                                   f"{recipe.epochs} epochs of {recipe.images} faces, {recipe.input_size} px"))

    @cache
    def counts(name: str, val_fraction: float, seed: int) -> dict[str, int]:
        adapter = adapters[name]
        if adapter is None:  # the default synthetic faces, balanced over 7 classes, not drawn yet
            per_class = DEFAULT_COUNTS["train"] // 7
            val = 7 * round(val_fraction * per_class)
            return split_counts(DEFAULT_COUNTS["train"] - val, val, DEFAULT_COUNTS["test"])
        split = plan_splits(adapter, val_fraction, seed)
        return split_counts(len(split.train), len(split.val), len(split.test))

    stage1_items: dict[tuple[str, str, str, int], int] = {}  # a stage 1's plan position, by data, method and seed
    decoded: set[tuple] = set()  # the images a run of this process decoded already (engine.data.load_images)
    for job in study_jobs(list(adapters), conditions, methods, seeds, steps, ablation_dataset(list(adapters))):
        spec = get_method(job.method)
        overrides = job.overrides()[0]
        to_train = [job.method]  # preceded by its stage 1 the first time on this data and seed, as train_method does
        first = (job.dataset, job.condition, spec.stage1, job.seed) if spec.stage1 else None
        if first is not None and first not in stage1_items:
            to_train.insert(0, spec.stage1)
        for name in to_train:
            config = apply_overrides(get_method(name).config(study.train_preset), overrides)
            config.seed = job.seed
            images = (job.dataset, job.condition, config.input_size, config.seed, config.val_fraction)
            split = counts(job.dataset, config.val_fraction, config.seed)
            work, detail = run_work(config, split, decode=images not in decoded)
            decoded.add(images)
            what = f"train {job.title() if name == job.method else name}"
            after = stage1_items.get(first) if name == job.method and first is not None else None
            plan.items.append(PlanItem(what, job.dataset, job.condition, work_units(work), detail, work, after))
            if name != job.method:
                stage1_items[first] = len(plan.items) - 1
        if spec.tsne and job.condition == condition and job.value is None:
            config = get_method(job.method).config(study.train_preset)
            n = counts(job.dataset, config.val_fraction, job.seed)["test"]
            points = min(n, TSNE_MAX_IMAGES)
            units = points * (method_cost(job.method, config.input_size, "infer")[0] + unit_cost("tsne_point"))
            plan.items.append(PlanItem(f"t-SNE {job.method}", job.dataset, job.condition, units, f"{points} images",
                                       inference=[RunWork(job.method, config.input_size, config.batch_size, 0,
                                                          points, 0.0)]))
    if study.robustness is not None:
        plan.items += robustness_items(study, list(adapters), methods, condition, counts)
    plan.items.append(PlanItem("start-up, figures, tables", "-", "-", UNCOUNTED_SHARE * plan.units,
                               f"{UNCOUNTED_SHARE:.0%} of the above (reproduce_time.py)"))
    return plan


def robustness_items(study: StudyPreset, names: list[str], methods: list[str], condition: str, counts
                     ) -> list[PlanItem]:
    """The plan's UDC-C sweep: per dataset, each degraded test set synthesised once and every swept run evaluated on
    the clean test set and each panel x severity."""
    from udcbench.robustness import DEFAULT_PANELS

    sweep = study.robustness
    items = []
    for name in names:
        config = get_method(REFERENCE_METHOD).config(study.train_preset)
        n = counts(name, config.val_fraction, 0)["test"]
        images = min(n, sweep.limit) if sweep.limit else n
        cells = len(DEFAULT_PANELS) * len(sweep.severities)
        conditions = ["clean"] if sweep.clean_only else ["clean", condition]
        swept = [get_method(m).config(study.train_preset) for m in methods if not get_method(m).oracle]
        scored = [RunWork(c.method, c.input_size, c.batch_size, 0, len(conditions) * (cells + 1) * images, 0.0)
                  for c in swept]
        units = images * cells * unit_cost("synthesise") + sum(work_units(w) for w in scored)
        items.append(PlanItem("UDC-C sweep", name, "+".join(conditions), units,
                              f"{len(swept) * len(conditions)} runs x {cells + 1} cells x {images} images",
                              inference=scored))
    return items


def reproduce(preset: str, workspace: Workspace, datasets: list[str] | None = None, src_root: Path | None = None,
              methods: list[str] | None = None, seeds: list[int] | None = None, condition: str | None = None,
              steps: list[int] | None = None, device: str | None = None, clip: Path | None = None,
              log: Callable[[str], None] = print, slots: list | None = None) -> StudySummary:
    """Run the study (see the module docstring); returns what was trained and written. ``clip``: the local
    open_clip checkpoint of the methods with CLIP encoders (LRDif's paper model); ``slots``: train the runs side by
    side, one per slot (:func:`udcbench.scheduler.parse_slots`), instead of one after the other."""
    study, names, methods, seeds, steps, condition = _resolve(preset, datasets, methods, seeds, steps, condition)
    clip_overrides = _clip_overrides(methods, study.train_preset, clip)  # refused here, before anything trains
    distributed = _distributed(device)
    if slots and distributed.active():
        raise UdcbenchError("--gpus/--slots run the study's runs side by side, each on one device; under torchrun "
                            "every run is split over the processes instead: use one or the other")
    # one study at a time per workspace: a second one started beside it is told to wait (rank 0 holds the lock)
    lock = folder_lock(workspace.runs, "study in") if distributed.rank() == 0 else nullcontext()
    with lock:
        return _reproduce(study, workspace, names, methods, seeds, steps, condition, clip_overrides, distributed,
                          datasets is not None, src_root, device, log, slots)


def _reproduce(study: StudyPreset, workspace: Workspace, names: list[str], methods: list[str], seeds: list[int],
               steps: list[int], condition: str, clip_overrides: dict[str, list[str]], distributed, explicit: bool,
               src_root: Path | None, device: str | None, log: Callable[[str], None], slots: list | None = None
               ) -> StudySummary:
    start = time.perf_counter()
    summary = StudySummary()
    conditions = ("clean", condition)
    adapters: dict[str, dict[str, DatasetAdapter]] = {}
    for name in names:
        if name != "synthetic" and not clean_source(name, workspace, src_root).is_dir():  # every rank alike
            if explicit:
                prepare_data(name, workspace, src_root, conditions, log)  # says where it looked
            log(f"skipping {name}: not found at {clean_source(name, workspace, src_root)}")
            summary.skipped_datasets.append(name)
            continue
        # rank 0 draws and synthesises; the other ranks then find the folders complete
        adapters[name] = _rank0_first(distributed, partial(prepare_data, name, workspace, src_root, conditions, log))
    if not adapters:
        raise _none_found(names, workspace, src_root)
    weights = None
    if study.pretrain is not None:
        folder = workspace.runs / PRETRAINED / study.pretrain.folder_name()
        weights = _rank0_first(distributed, partial(pretrained_trunk, folder, study.pretrain, device, log))
    ablation_data = ablation_dataset(list(adapters))
    jobs = study_jobs(list(adapters), conditions, methods, seeds, steps, ablation_data)
    first_stages: dict[Path, bool] = {}  # folder -> trained by this invocation
    if slots:
        _run_in_slots(jobs, adapters, study, workspace, weights, clip_overrides, slots, summary, first_stages, log)
    for k, job in enumerate([] if slots else jobs, 1):
        overrides, tag = job.overrides()
        overrides = [*(overrides or []), *clip_overrides.get(job.method, [])] or None
        adapter = adapters[job.dataset][job.condition]
        stage1 = get_method(job.method).stage1
        first = stage1_plan(job.method, adapter, workspace.runs, study.train_preset, job.seed, overrides, weights,
                            tag)[0] if stage1 else None
        also = ""
        if first is not None and first not in first_stages:
            first_stages[first] = finished(first) is None
            also = f", its first stage {stage1} before it" if first_stages[first] else ""
        fresh = finished(run_folder(workspace.runs, data_tag(adapter), job.method, study.train_preset, job.seed,
                                    tag)) is None
        log(f"[{k}/{len(jobs)}] {job.title()} on {dataset_title(job.dataset, job.condition)} ({study.train_preset}, "
            f"seed {job.seed}{also}){'' if fresh else ': finished earlier'}")
        record = train_method(job.method, adapter, workspace.runs, weights=weights,
                              preset=study.train_preset, seed=job.seed, overrides=overrides, tag=tag,
                              skip_finished=True, device=device, cache_dir=workspace.cache, log=log)
        summary.runs.append(StudyRun(job.dataset, job.condition, record))
        summary.trained_now += fresh
    summary.first_stages = [finished(folder) or {} for folder in first_stages]
    summary.trained_now += sum(first_stages.values())
    if distributed.rank() == 0 and study.robustness is not None:  # the UDC-C sweep of the study's runs: once
        sweep_runs(study, workspace, adapters, summary, device, log)
    if distributed.rank() == 0:  # tables, figures and the leaderboard: once
        summary.files += write_outputs(workspace, adapters, study.train_preset, condition, ablation_data, summary,
                                       device, log, study.ablation)
    summary.seconds = time.perf_counter() - start
    return summary


def _run_in_slots(jobs: list[Job], adapters: dict[str, dict[str, DatasetAdapter]], study: StudyPreset,
                  workspace: Workspace, weights: Path | None, clip_overrides: dict[str, list[str]], slots: list,
                  summary: StudySummary, first_stages: dict[Path, bool], log: Callable[[str], None]) -> None:
    """The study's runs side by side, one per slot (:mod:`udcbench.scheduler`): each shared first stage as a run of
    its own before the second stages that read it; the summary as the serial loop makes it."""
    from udcbench.scheduler import Task, run_tasks

    tasks: dict[Path, Task] = {}
    folders = []
    for job in jobs:
        overrides, tag = job.overrides()
        overrides = [*(overrides or []), *clip_overrides.get(job.method, [])] or None
        adapter = adapters[job.dataset][job.condition]
        data = (adapter.name, None if adapter.root is None else str(adapter.root), dict(adapter.options))
        spec = get_method(job.method)
        after: tuple[Path, ...] = ()
        if spec.stage1:
            first, kept = stage1_plan(job.method, adapter, workspace.runs, study.train_preset, job.seed, overrides,
                                      weights, tag)
            untagged = run_folder(workspace.runs, data_tag(adapter), spec.stage1, study.train_preset, job.seed)
            if first not in tasks:
                first_stages[first] = finished(first) is None
                tasks[first] = Task(first, spec.stage1, data, {
                    "out": workspace.runs, "preset": study.train_preset, "seed": job.seed, "overrides": kept or None,
                    "weights": weights, "tag": "" if first == untagged else tag})
            after = (first,)
        folder = run_folder(workspace.runs, data_tag(adapter), job.method, study.train_preset, job.seed, tag)
        folders.append((job, folder))
        summary.trained_now += finished(folder) is None
        tasks[folder] = Task(folder, job.method, data, {"out": workspace.runs, "preset": study.train_preset,
                                                        "seed": job.seed, "overrides": overrides, "weights": weights,
                                                        "tag": tag}, after)
    log(f"{len(tasks)} runs on {len(slots)} slots ({', '.join(s.name for s in slots)}); logs in "
        f"{workspace.runs / 'logs'}")
    run_tasks(list(tasks.values()), slots, workspace.runs / "logs", workspace.cache, log)
    summary.runs += [StudyRun(job.dataset, job.condition, finished(folder) or {}) for job, folder in folders]


def sweep_runs(study: StudyPreset, workspace: Workspace, adapters: dict[str, dict[str, DatasetAdapter]],
               summary: StudySummary, device: str | None, log: Callable[[str], None]) -> None:
    """``udcbench robustness`` of the study's runs on each dataset's clean test split, the clean control first (the
    reference of the others' CE); a run whose saved sweep already covers the plan is not swept again."""
    from udcbench.robustness import DEFAULT_PANELS, load_panels, saved_sweep, score_model

    plan = study.robustness
    panels = load_panels(list(DEFAULT_PANELS))
    log(f"UDC-C: {plan.describe()}")
    for run in sorted(summary.runs, key=lambda r: (r.record["method"] != REFERENCE_METHOD or r.condition != "clean",
                                                   r.record["method"])):
        record = run.record
        if (get_method(record["method"]).oracle or record.get("config_changes")
                or (plan.clean_only and run.condition != "clean")):
            continue
        clean = adapters[run.dataset]["clean"]
        if saved_sweep(Path(record["run_dir"]), clean, panels, plan.severities, plan.limit, scored=True):
            continue
        log(f"UDC-C sweep of {record['method']} ({run.condition}) on {dataset_title(run.dataset)}")
        score_model(Path(record["run_dir"]), clean, workspace.runs, workspace.cache, panels, plan.severities,
                    workers=DATA_WORKERS, device=device, train_reference=False, limit=plan.limit, log=log)


def _clip_overrides(methods: list[str], preset: str, clip: Path | None) -> dict[str, list[str]]:
    """Per method, the override that hands it ``clip`` (methods with CLIP encoders only); every method's
    configuration checked (``MethodSpec.check``: CLIP encoders without their file are refused before the study
    starts)."""
    from udcbench.config import apply_overrides

    out = {name: clip_override(get_method(name), clip, strict=False) for name in methods}
    for name, pairs in out.items():
        if get_method(name).check is not None:
            get_method(name).check(apply_overrides(get_method(name).config(preset), pairs))
    return out


def _rank0_first(distributed, work: Callable[[], T]) -> T:
    """``work()`` on rank 0, then on the other ranks (which then find its files complete); alone: just once."""
    if distributed.rank() != 0:
        distributed.barrier()
    result = work()
    if distributed.rank() == 0:
        distributed.barrier()
    return result


def _distributed(device: str | None):
    """The collectives module, the process group started first under ``torchrun`` (imports torch only then)."""
    if "TORCHELASTIC_RUN_ID" in os.environ or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from udcbench.engine.runtime import runtime

        runtime(device)
    from baselines import distributed

    return distributed


def study_tables(results: list[dict], names: list[str], condition: str, preset: str | None, data_root: Path,
                 ablation: bool = True, sources: dict | None = None) -> list[BuiltTable]:
    """A study's tables over the datasets ``names``: Table 1 (clean), each dataset's UDC table (2-4, or 2 for a
    dataset the paper lacks) and, with ``ablation``, Table 5 on the ablation dataset."""
    specs = [(1, None if set(names) == set(PAPER_DATASETS) else names)]
    specs += [(UDC_TABLE.get(n, 2), None if n in UDC_TABLE else [n]) for n in names]
    if ablation:
        data = ablation_dataset(names)
        specs.append((5, None if data == "rafdb" else [data]))
    return [build_table(number, results, datasets=datasets, condition=condition, preset=preset, data_root=data_root,
                        sources=sources or {}) for number, datasets in specs]


def write_report_page(workspace: Workspace, results: list[dict] | None = None, tables: list[BuiltTable] | None = None,
                      condition: str | None = None, preset: str | None = None) -> Path:
    """The study's HTML page, ``results/report/index.html`` (:mod:`udcbench.reports.html`): the given tables, or those
    of the datasets and condition the store holds."""
    from udcbench.reports.html import write_report
    from udcbench.reports.leaderboard import build_leaderboard

    results = load_results(workspace.runs / STORE) if results is None else results
    if tables is None:
        names = sorted({r["dataset"] for r in results})
        if not names:
            raise UdcbenchError(f"no runs in {workspace.runs / STORE}: train some first (udcbench reproduce)")
        conditions = [r["condition"] for r in results if r["condition"] != "clean"]
        condition = condition or (max(set(conditions), key=conditions.count) if conditions else "toled")
        ablation = any(get_method(r["method"]).ablation_only for r in results if r["method"] in method_names())
        tables = study_tables(results, names, condition, preset, workspace.data, ablation)
    from udcbench.reports.robustness import robustness_tables

    return write_report(results, tables, build_leaderboard(results), workspace.results / "figures",
                        workspace.results / "report" / "index.html", robustness=robustness_tables(results, preset))


def robustness_outputs(results: list[dict], adapters: dict[str, dict[str, DatasetAdapter]], preset: str,
                       tables_dir: Path, figures_dir: Path) -> list[Path]:
    """Per dataset with UDC-C sweeps: the robustness table, the accuracy-vs-severity curves and the severity strip
    (its first test face under every panel at every severity)."""
    from udcbench.reports import robustness as udcc
    from udcbench.robustness import DEFAULT_PANELS, load_panels, test_records

    files: list[Path] = []
    for name, by_condition in adapters.items():
        clean = by_condition["clean"]
        if not udcc.sweeps(results, clean.origin, preset):
            continue
        table = udcc.build_robustness_table(results, clean.origin, preset)
        files += udcc.write_robustness_table(table, tables_dir)
        files.append(udcc.severity_curves(table, figures_dir / f"robustness-{name}.png"))
        face = clean.load_image(test_records(clean)[1][0])
        files.append(udcc.severity_strip(face, load_panels(list(DEFAULT_PANELS)), clean.origin,
                                         figures_dir / f"severities-{name}.png"))
    return files


def write_outputs(workspace: Workspace, adapters: dict[str, dict[str, DatasetAdapter]], preset: str,
                  condition: str, ablation_data: str, summary: StudySummary, device: str | None,
                  log: Callable[[str], None], ablation: bool = True) -> list[Path]:
    """Tables 1-5 (Table 5 where ``ablation`` or its variants trained), Figures 3-6, confusion matrices and the
    leaderboard from the results store."""
    from udcbench.reports import figures
    from udcbench.reports.leaderboard import build_leaderboard, write_leaderboard

    results = load_results(workspace.runs / STORE)
    tables_dir, figures_dir = workspace.results / "tables", workspace.results / "figures"
    names = list(adapters)
    files: list[Path] = []
    with_ablation = ablation or any(get_method(run.record["method"]).ablation_only for run in summary.runs)
    if not with_ablation:
        variants = " ".join(f"--methods {m}" for m in method_names() if get_method(m).ablation_only)
        log(f"Table 5 (the ablation) and Figure 6 (the sweep) are measured by the cpu and paper studies (udcbench "
            f"reproduce --study cpu), or by this one with {variants} --steps 1,4")
    # clean data read from outside the workspace (--src-root) is named as such in the fill commands
    sources = {n: a["clean"].root for n, a in adapters.items()
               if a["clean"].root is not None and a["clean"].root.resolve() != workspace.dataset_dir(n).resolve()}
    for table in study_tables(results, names, condition, preset, workspace.data, with_ablation, sources):
        summary.tables.append(table)
        files += write_table(table, tables_dir)
    from degradations import load_recipe

    if load_recipe(condition).kind == "lowlight":  # the low-light table beside the paper's
        from udcbench.reports.lowlight import build_lowlight_table, write_lowlight_table

        files += write_lowlight_table(build_lowlight_table(results, datasets=names, condition=condition,
                                                           preset=preset, data_root=workspace.data), tables_dir)
    log("drawing the figures")
    for name, by_condition in adapters.items():
        if condition in by_condition:
            files.append(figures.sample_grid(by_condition["clean"], by_condition[condition],
                                             figures_dir / f"fig3-samples-{name}.png"))
    swept = swept_method("6")
    points = figures.steps_points(results, method=swept.name, dataset=ablation_data, condition=condition,
                                  preset=preset)
    if points:
        files += figures.steps_figure(points, figures_dir / f"fig6-steps-{ablation_data}",
                                      f"{swept.title.split(' (')[0]} on {dataset_title(ablation_data, condition)} "
                                      f"({preset})")
    for run in summary.runs:
        record = run.record
        if record.get("config_changes"):
            continue
        stem = f"{Path(record['run_dir']).parent.name}-{record['method']}-s{record['seed']}"
        files.append(figures.confusion_figure(record, figures_dir / "confusion" / f"{stem}.png"))
        if get_method(record["method"]).tsne and run.condition == condition:
            files.append(figures.run_tsne(Path(record["run_dir"]), adapters[run.dataset][run.condition],
                                          figures_dir / f"tsne-{stem}.png", TSNE_MAX_IMAGES, device))
    files += write_leaderboard(build_leaderboard(results), workspace.results)
    files += robustness_outputs(results, adapters, preset, tables_dir, figures_dir)
    files.append(write_report_page(workspace, results, summary.tables))  # last: it shows all of the above
    log(f"report: {files[-1]}")
    return files
