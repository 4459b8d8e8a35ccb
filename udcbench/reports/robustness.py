"""UDC-C results: the robustness table (``udcbench table robustness``: methods x panels, CE per panel, mCE and
relative mCE), the robustness leaderboard (ranked by mCE, only where seeds separate), the accuracy-vs-severity
figure and the severity strip (every severity of every panel on one face)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from udcbench.compare import ALPHA, holm, welch_p
from udcbench.reports.tables import dataset_title, fmt, most_common, write_files

#: A robustness group: one model family's sweeps (its seeds) on one test set.
GROUP = ("method", "preset", "init", "dataset", "trained_on", "precision")


def sweeps(results: list[dict[str, Any]], dataset: str | None = None, preset: str | None = None
           ) -> list[dict[str, Any]]:
    """The store's robustness records (latest per model), with their mCE; filtered by test dataset and budget."""
    latest: dict[str, dict[str, Any]] = {}
    for row in sorted(results, key=lambda r: str(r.get("created"))):
        record = row.get("record") or {}
        if row.get("kind") != "robustness" or not record.get("cells"):
            continue
        if (dataset and record.get("dataset") != dataset) or (preset and record.get("preset") != preset):
            continue
        latest[row["run_id"]] = record
    return list(latest.values())


def _key(record: dict[str, Any]) -> tuple:
    return (record.get("method"), record.get("preset"), str(record.get("init")), record.get("dataset"),
            record.get("condition"), record.get("precision"))


def _interval(values: list[float]) -> float | None:
    """Half the width of the 95 % t interval of the mean (two or more values)."""
    if len(values) < 2:
        return None
    from scipy import stats

    return float(stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / np.sqrt(len(values)))


@dataclass
class RobustnessRow:
    method: str
    trained_on: str  # the condition the model trained on (clean, toled, ...)
    preset: str
    init: str
    precision: str
    seeds: int
    clean: float
    ce: dict[str, float]  # per panel, mean over seeds
    mce: float | None
    mce_ci: float | None  # half-width of the 95 % interval over seeds
    relative_mce: float | None
    curves: dict[str, dict[int, float]]  # panel -> severity -> accuracy (mean over seeds)
    mce_seeds: list[float]


def group_rows(records: list[dict[str, Any]]) -> list[RobustnessRow]:
    """One row per model family (method, budget, init, training condition, precision): means over its seeds."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault(_key(record), []).append(record)
    rows = []
    for (method, preset, init, _, trained_on, precision), members in groups.items():
        panels = [p["name"] for p in members[0].get("panels") or []]
        curves: dict[str, dict[int, list[float]]] = {}
        for record in members:
            for cell in record["cells"]:
                if cell["panel"] != "clean":
                    curves.setdefault(cell["panel"], {}).setdefault(cell["severity"], []).append(cell["accuracy"])
        scored = [r["mce"] for r in members if r.get("mce") and r["mce"].get("overall") is not None]
        mces = [m["overall"] for m in scored]
        relative = [m["relative_overall"] for m in scored if m.get("relative_overall") is not None]
        rows.append(RobustnessRow(
            method=method, trained_on=trained_on, preset=preset, init=init, precision=precision, seeds=len(members),
            clean=float(np.mean([r["cells"][0]["accuracy"] for r in members])),
            ce={p: float(np.mean([m["per_panel"][p] for m in scored if p in m["per_panel"]]))
                for p in panels if any(p in m["per_panel"] for m in scored)},
            mce=float(np.mean(mces)) if mces else None, mce_ci=_interval(mces),
            relative_mce=float(np.mean(relative)) if relative and len(relative) == len(scored) else None,
            curves={p: {s: float(np.mean(v)) for s, v in sorted(by.items())} for p, by in curves.items()},
            mce_seeds=mces))
    rows.sort(key=lambda r: (r.mce is None, r.mce or 0, r.method, r.trained_on))
    return rows


@dataclass
class RobustnessTable:
    dataset: str
    preset: str
    panels: list[str]
    rows: list[RobustnessRow]
    notes: list[str]

    @property
    def title(self) -> str:
        return f"UDC-C robustness on {dataset_title(self.dataset)}: corruption error (CE) per panel, mCE"

    @property
    def subtitle(self) -> str:
        return (f"budget {self.preset}; CE = the model's summed top-1 error over the severities swept over the "
                "reference's (the ResNet-18 control trained clean, = 100), mCE its mean over panels, relative mCE "
                "the same over the error added to clean (ImageNet-C's definitions); lower is more robust; +- the "
                "95 % interval over seeds where there are several")

    def commands(self) -> list[str]:
        return []

    def stem(self) -> str:
        return f"table-robustness-{self.dataset}"


def build_robustness_table(results: list[dict[str, Any]], dataset: str | None = None, preset: str | None = None
                           ) -> RobustnessTable:
    from udcbench.errors import UdcbenchError

    records = sweeps(results)
    if not records:
        raise UdcbenchError("no robustness sweeps in the results store: run `udcbench robustness RUN --data "
                            "DATASET` first")
    dataset = dataset or most_common([r["dataset"] for r in records])
    preset = preset or most_common([r["preset"] for r in records if r["dataset"] == dataset])
    chosen = sweeps(results, dataset, preset)
    panels = list(dict.fromkeys(p["name"] for r in chosen for p in r.get("panels") or []))
    notes = []
    shortened = sorted({r["limit"] for r in chosen if r.get("limit")})
    if shortened:
        notes.append(f"some sweeps scored the first {', '.join(map(str, shortened))} test images only (class-"
                     "stratified), as the quick study does")
    if any(not r.get("mce") for r in chosen):
        notes.append("a row without CE had no reference run to score against")
    return RobustnessTable(dataset, preset, panels, group_rows(chosen), notes)


def robustness_tables(results: list[dict[str, Any]], preset: str | None = None) -> list[RobustnessTable]:
    """One robustness table per test dataset the store has sweeps of (at ``preset``, else the most common)."""
    datasets = sorted({r["dataset"] for r in sweeps(results, preset=preset)})
    return [build_robustness_table(results, d, preset) for d in datasets]


def _pm(value: float | None, ci: float | None) -> str:
    return fmt(value) + (f" +- {ci:.2f}" if ci is not None else "")


def robustness_records(table: RobustnessTable) -> list[dict[str, Any]]:
    return [{"method": r.method, "trained_on": r.trained_on, "preset": r.preset, "init": r.init,
             "precision": r.precision, "seeds": r.seeds, "clean_accuracy": fmt(r.clean),
             **{f"ce_{p}": fmt(r.ce.get(p)) for p in table.panels},
             **{f"mean_accuracy_{p}": fmt(np.mean(list(r.curves[p].values())) if p in r.curves else None)
                for p in table.panels},
             "mce": fmt(r.mce), "mce_ci95": fmt(r.mce_ci), "relative_mce": fmt(r.relative_mce)}
            for r in table.rows]


def robustness_markdown(table: RobustnessTable) -> str:
    from udcbench.reports.tables import markdown

    columns = ["Method", "trained on", "seeds", "clean acc.", *[f"{p} CE" for p in table.panels], "mCE",
               "relative mCE"]
    lines = [[r.method, r.trained_on, str(r.seeds), fmt(r.clean), *[fmt(r.ce.get(p)) for p in table.panels],
              _pm(r.mce, r.mce_ci), fmt(r.relative_mce)] for r in table.rows]
    return markdown(table, columns, lines)


def write_robustness_table(table: RobustnessTable, out_dir: Path) -> tuple[Path, Path]:
    return write_files(out_dir, table.stem(), robustness_records(table), robustness_markdown(table))


# -- the leaderboard --------------------------------------------------------------------------------------
LEADERBOARD_COLUMNS = ("rank", "method", "trained_on", "preset", "init", "dataset", "seeds", "mce", "mce_ci95",
                       "relative_mce", "clean_accuracy")
RANK_NOTE = (f"rank: 1 + the models of the same test set and budget with a lower mCE beyond seed noise (Welch's t "
             f"over seeds, two or more a side, Holm-corrected at a family-wise {ALPHA:.0%}); models it cannot tell "
             "apart, and single runs, share a rank")


def robustness_leaderboard(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows ranked by mCE per (test dataset, budget): a rank counts only the models separated from it."""
    out = []
    by_group: dict[tuple, list[dict[str, Any]]] = {}
    for record in sweeps(results):
        by_group.setdefault((record["dataset"], record["preset"]), []).append(record)
    for (dataset, _), records in sorted(by_group.items()):
        rows = [r for r in group_rows(records) if r.mce is not None]
        pairs = [(i, j) for i in range(len(rows)) for j in range(i + 1, len(rows))
                 if len(rows[i].mce_seeds) > 1 and len(rows[j].mce_seeds) > 1]
        rejected = holm([welch_p(np.array(rows[i].mce_seeds), np.array(rows[j].mce_seeds)) for i, j in pairs])
        separated = {pair for pair, r in zip(pairs, rejected) if r}
        for i, row in enumerate(rows):
            rank = 1 + sum(o.mce < row.mce and tuple(sorted((i, j))) in separated for j, o in enumerate(rows))
            out.append({"rank": rank, "method": row.method, "trained_on": row.trained_on, "preset": row.preset,
                        "init": row.init, "dataset": dataset, "seeds": row.seeds, "mce": row.mce,
                        "mce_ci95": row.mce_ci, "relative_mce": row.relative_mce, "clean_accuracy": row.clean})
    out.sort(key=lambda r: (r["dataset"], r["preset"], r["rank"], r["mce"]))
    return out


def mce_by_model(results: list[dict[str, Any]]) -> dict[tuple, tuple[float, int]]:
    """(method, preset, init file name, trained condition) -> (mean mCE, seeds): what a model card carries."""
    out = {}
    for row in group_rows(sweeps(results)):
        if row.mce is not None:
            out[(row.method, row.preset, Path(str(row.init)).name, row.trained_on)] = (row.mce, row.seeds)
    return out


# -- figures ----------------------------------------------------------------------------------------------
def severity_curves(table: RobustnessTable, path: Path) -> Path:
    """Accuracy against severity (0 = clean), one panel per subplot, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from udcbench.reports.figures import _save

    panels = table.panels or ["-"]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.2), sharey=True, squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for row in table.rows:
            curve = row.curves.get(panel) or {}
            levels = [0, *curve]
            ax.plot(levels, [row.clean, *curve.values()], marker="o", markersize=3, linewidth=1.4,
                    label=f"{row.method} ({row.trained_on})")
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel("severity (0 = clean)")
        ax.set_xticks(range(0, 6))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (%)")
    axes[0][-1].legend(fontsize=7, loc="lower left")
    fig.suptitle(f"UDC-C on {dataset_title(table.dataset)} ({table.preset} budget)", fontsize=10)
    return _save(fig, path)


def severity_strip(image: np.ndarray, recipes: list, dataset: str, path: Path, seed: int = 0) -> Path:
    """One face (uint8 RGB) clean and at severities 1-5 of each panel: one row per panel."""
    import cv2
    import torch

    from degradations import build_degradation
    from degradations.functional import to_uint8
    from degradations.severity import LEVELS, severity_recipe
    from udcbench.synthesis import image_seed

    tile = 160
    rows = []
    for recipe in recipes:
        row = [cv2.resize(image, (tile, tile), interpolation=cv2.INTER_NEAREST)]
        for level in LEVELS:
            at = severity_recipe(recipe, level)
            x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
            generator = torch.Generator().manual_seed(image_seed(recipe, seed, "strip"))  # one draw for all levels
            with torch.no_grad():
                y = to_uint8(build_degradation(at)(x, psf_scale=at.psf_scale(dataset, image.shape[1]),
                                                   generator=generator))
            row.append(cv2.resize(y[0].permute(1, 2, 0).numpy(), (tile, tile), interpolation=cv2.INTER_NEAREST))
        label = np.full((tile, 90, 3), 255, np.uint8)
        cv2.putText(label, recipe.name, (4, tile // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        rows.append(np.concatenate([label, *row], axis=1))
    header = np.full((24, rows[0].shape[1], 3), 255, np.uint8)
    for k, text in enumerate(["clean", *(f"severity {lv}" for lv in LEVELS)]):
        cv2.putText(header, text, (90 + k * tile + 4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    grid = np.concatenate([header, *rows], axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    return path
