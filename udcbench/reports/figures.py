"""The paper's figures from datasets and run records (PNG, matplotlib's Agg backend).

- Figure 3: sample grid, clean beside UDC, a few test faces per class;
- Figures 4/5: t-SNE of a run's penultimate features on a test split, coloured by class;
- Figure 6: accuracy against the number of diffusion steps (LRDif runs, one stage 2 per T);
- confusion matrices of any run.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from udcbench.datasets.base import DatasetAdapter  # noqa: E402
from udcbench.engine.metrics import chance_accuracy  # noqa: E402
from udcbench.errors import UdcbenchError  # noqa: E402
from udcbench.files import write_csv


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return path


# -- Figure 3 ---------------------------------------------------------------------------------------------
def sample_grid(clean: DatasetAdapter, udc: DatasetAdapter, path: Path, per_class: int = 3) -> Path:
    """Rows: classes; columns: ``per_class`` pairs (clean | UDC) of the same test images."""
    split = "test" if "test" in clean.splits() else "valid"
    degraded = {r.id: r for r in udc.records(split)}
    rows = []
    for label, name in enumerate(clean.classes):
        pairs = [(r, degraded[r.id]) for r in clean.records(split) if r.label == label and r.id in degraded]
        if pairs:
            rows.append((name, pairs[:per_class]))
    if not rows:
        raise UdcbenchError(f"{clean.describe()} and {udc.describe()} share no {split} images")
    fig, axes = plt.subplots(len(rows), 2 * per_class, figsize=(2 * per_class * 1.1, len(rows) * 1.2), squeeze=False)
    for i, (name, pairs) in enumerate(rows):
        for j in range(per_class):
            for k, (adapter, kind) in enumerate(((clean, "clean"), (udc, "UDC"))):
                ax = axes[i, 2 * j + k]
                ax.set_xticks([])
                ax.set_yticks([])
                if j < len(pairs):
                    ax.imshow(adapter.load_image(pairs[j][k]))
                if i == 0:
                    ax.set_title(kind, fontsize=8)
        axes[i, 0].set_ylabel(name, fontsize=8)
    fig.suptitle(f"{clean.origin}: clean | {udc.manifest.get('recipe_name', 'UDC')}", fontsize=9)
    return _save(fig, path)


# -- Figures 4/5 ------------------------------------------------------------------------------------------
def tsne_embedding(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-D t-SNE (scikit-learn, PCA initialisation) of an (N, D) feature matrix."""
    from sklearn.manifold import TSNE

    if len(features) < 5:
        raise UdcbenchError(f"t-SNE needs at least 5 images, got {len(features)}")
    perplexity = float(min(30, (len(features) - 1) / 3))
    return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
        features.reshape(len(features), -1).astype(np.float32))


def tsne_plot(points: np.ndarray, labels: np.ndarray, classes: list[str], path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 5))
    cmap = plt.get_cmap("tab10")
    for label, name in enumerate(classes):
        mask = labels == label
        if mask.any():
            ax.scatter(points[mask, 0], points[mask, 1], s=4, color=cmap(label), label=name)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(markerscale=3, fontsize=7, loc="best")
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


# -- Figure 6 ---------------------------------------------------------------------------------------------
def steps_points(results: list[dict[str, Any]], method: str = "lrdif", dataset: str | None = None,
                 condition: str | None = None, preset: str | None = None, arg: str = "steps") -> list[dict[str, Any]]:
    """Accuracy per number of diffusion steps T over finished runs of ``method`` whose only change
    from the preset is ``method_args.steps`` (or none): one point per T, mean/std over seeds."""
    by_steps: dict[int, dict[int, float]] = {}
    chances: list[float] = []
    for r in sorted(results, key=lambda r: r.get("created") or ""):
        record = r.get("record", {})
        changes = set(record.get("config_changes") or {})
        if (r.get("kind") != "train" or r["method"] != method or r.get("accuracy") is None
                or changes - {f"method_args.{arg}"} or (dataset and r["dataset"] != dataset)
                or (condition and r["condition"] != condition) or (preset and r["preset"] != preset)):
            continue
        steps = int((record.get("method_args") or {}).get(arg, 0))
        if steps:
            by_steps.setdefault(steps, {})[r["seed"]] = 100 * r["accuracy"]
            chance = chance_accuracy(record)
            if chance is not None:
                chances.append(chance)
    points = []
    for steps in sorted(by_steps):
        values = list(by_steps[steps].values())
        points.append({"steps": steps, "accuracy": statistics.fmean(values),
                       "std": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values),
                       "chance": statistics.fmean(chances) if chances else None, "seeds": values})
    return points


#: The least span of Figure 6's accuracy axis (points): scaled to the data (a half-point spread over T stays
#: visible), never so narrow that seed noise looks like an effect; each seed is drawn, so the noise shows.
MIN_Y_SPAN = 4.0


def _y_range(values: list[float]) -> tuple[float, float]:
    """Limits that hold ``values`` with a point of margin and span at least MIN_Y_SPAN, within 0-100."""
    lo, hi = min(values) - 1, max(values) + 1
    if hi - lo < MIN_Y_SPAN:
        mid = (lo + hi) / 2
        lo, hi = mid - MIN_Y_SPAN / 2, mid + MIN_Y_SPAN / 2
    if lo < 0:
        lo, hi = 0.0, max(hi - lo, MIN_Y_SPAN)
    if hi > 100:
        lo, hi = min(lo, 100 - MIN_Y_SPAN), 100.0
    return lo, hi


def steps_figure(points: list[dict[str, Any]], out: Path, title: str) -> tuple[Path, Path]:
    """``out.csv`` and ``out.png``: accuracy against T (Figure 6)."""
    if not points:
        raise UdcbenchError("no LRDif runs to plot: train stage 2 for a few T first (udcbench figure 6 --train)")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    csv_path = out.with_suffix(".csv")
    columns = ["steps", "accuracy", "std", "n", "chance"]
    write_csv(csv_path, columns, ({c: p.get(c) for c in columns} for p in points))
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    steps = [p["steps"] for p in points]
    ax.plot(steps, [p["accuracy"] for p in points], color="tab:blue", linewidth=1, zorder=1)
    several = [p for p in points if p["n"] > 1]
    single = [p for p in points if p["n"] <= 1]
    if several:
        ax.errorbar([p["steps"] for p in several], [p["accuracy"] for p in several], yerr=[p["std"] for p in several],
                    fmt="o", color="tab:blue", capsize=3, zorder=2,
                    label=f"mean ± std over {'/'.join(sorted({str(p['n']) for p in several}))} seeds")
        for p in several:  # every seed, so the spread is visible
            ax.scatter([p["steps"]] * p["n"], p["seeds"], s=9, color="gray", alpha=0.6, zorder=3)
    if single:
        ax.scatter([p["steps"] for p in single], [p["accuracy"] for p in single], s=30, facecolors="white",
                   edgecolors="tab:blue", zorder=4, label="one seed (no spread)")
    values = [v for p in points for v in (p["accuracy"] - p["std"], p["accuracy"] + p["std"], *p["seeds"])]
    low, high = _y_range(values)  # scaled to the data: a spread of half a point stays visible
    chance = points[0].get("chance")
    if chance is not None and low <= chance <= high:
        ax.axhline(chance, color="firebrick", linestyle="--", linewidth=1, label=f"chance ({chance:.1f} %)")
    elif chance is not None:
        ax.plot([], [], " ", label=f"chance {chance:.1f} % (below the axis)")
    ax.set_ylim(low, high)
    ax.set_xscale("log", base=2)
    ax.set_xticks(steps, [str(s) for s in steps])
    ax.set_xlabel("diffusion steps T")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return csv_path, _save(fig, out.with_suffix(".png"))


# -- confusion matrices -----------------------------------------------------------------------------------
def confusion_figure(record: dict[str, Any], path: Path) -> Path:
    """The confusion matrix of a run's test results at the chosen epoch: each cell's share of its true class and
    its count of images, a colour bar, and the run's preset, seed and epoch in the title."""
    metrics = record.get("test_at_best") or {}
    matrix = np.asarray(metrics.get("confusion") or [], dtype=float)
    if matrix.ndim != 2 or not matrix.size:
        raise UdcbenchError(f"{record.get('run_dir')}: the record holds no confusion matrix")
    classes = list(record.get("classes") or range(len(matrix)))
    normalised = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(0.75 * len(classes) + 2.5, 0.7 * len(classes) + 1.8))
    shown = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    for i in range(len(classes)):
        for j in range(len(classes)):  # the share and the count of images
            ax.text(j, i, f"{normalised[i, j]:.2f}\n{int(matrix[i, j])}", ha="center", va="center", fontsize=6,
                    color="white" if normalised[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{record.get('method')} on {record.get('dataset')} ({record.get('condition')}), "
                 f"{record.get('preset')} preset, seed {record.get('seed')}, epoch {record.get('best_epoch')} of "
                 f"{record.get('epochs')} (chosen on validation): {100 * metrics.get('accuracy', 0):.2f} %",
                 fontsize=7, wrap=True)
    return _save(fig, path)


def run_tsne(run_dir: Path, adapter: DatasetAdapter, path: Path, max_images: int = 2000,
             device: str | None = None) -> Path:
    """Figures 4/5 for any run: t-SNE of its penultimate features on ``adapter``'s test split."""
    from udcbench.engine.evaluation import load_test_split, load_trained, predict
    from udcbench.engine.runtime import runtime

    rt = runtime(device)
    run = load_trained(run_dir, adapter, rt)
    split, records, images = load_test_split(adapter, run.config)
    pick = np.random.default_rng(run.config.seed).permutation(len(records))[:max_images]
    pick.sort()
    labels = np.array([r.label for r in records])[pick]
    features, _ = predict(run.model, images[pick], run.config, rt, labels, features=True, shard=False)
    title = (f"t-SNE: {run.config.method} ({run.config.preset}) features on {adapter.origin} "
             f"({adapter.manifest.get('recipe_name', 'clean')}) {split}, {len(pick)} images")
    return tsne_plot(tsne_embedding(features, run.config.seed), labels, list(adapter.classes), path, title)
