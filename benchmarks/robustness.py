"""UDC-C on FERPlus: every finished FERPlus run of a budget (clean- and UDC-trained) swept over 3 panels x 5
severities of the test split, scored against the clean ResNet-18 control (CE, mCE), in fp32 on this machine.

    python benchmarks/robustness.py --workspace WS [--budget cpu] [--precision fp32]

WS is a workspace whose ``runs/`` holds the runs (``python benchmarks/fer_accuracy.py --workspace WS`` trains them)
and whose ``data/ferplus`` is the clean FERPlus folder. The degraded test sets are synthesised once into WS's cache.
Writes ``benchmarks/results/robustness.csv`` (one row per model and cell, with the model's CE per panel, mCE and
relative mCE; earlier rows of other models kept) and draws ``docs/results/robustness-ferplus.png`` from it, and
``docs/results/severities-ferplus.png`` (every severity of every panel on one built-in face at FERPlus's scale).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from degradations.severity import LEVELS
from udcbench.datasets import create_dataset
from udcbench.engine.data import decode_workers
from udcbench.engine.store import load_results
from udcbench.methods import get_method
from udcbench.robustness import DEFAULT_PANELS, load_panels, saved_sweep, score_model
from udcbench.workspace import load_workspace

from _common import REPO, merge_previous, read_rows, report

KEY = ("method", "trained_on", "seed", "panel", "severity")
FIGURE = REPO / "docs" / "results" / "robustness-ferplus.png"
STRIP = REPO / "docs" / "results" / "severities-ferplus.png"


def finished_runs(results: list[dict], budget: str) -> list[dict]:
    """The latest finished FERPlus run per (method, condition, seed) of ``budget``, oracles and variants (runs with
    ``--set`` changes, e.g. LRDif's bypass head) left out, as the tables leave them."""
    latest: dict[tuple, dict] = {}
    for row in sorted(results, key=lambda r: str(r.get("created"))):
        if (row.get("kind") == "train" and row.get("dataset") == "ferplus" and row.get("preset") == budget
                and not get_method(row["method"]).oracle and not row.get("record", {}).get("config_changes")
                and row.get("run_dir") and Path(row["run_dir"]).is_dir()):
            latest[(row["method"], row["condition"], row["seed"])] = row
    return list(latest.values())


def rows_of(record: dict) -> list[dict]:
    mce = record.get("mce") or {}
    common = {"method": record["method"], "trained_on": record["condition"], "seed": record["seed"],
              "precision": record["precision"], "images": record["images"]}
    by_panel: dict[str, list[float]] = {}
    for cell in record["cells"]:
        by_panel.setdefault(cell["panel"], []).append(cell["accuracy"])
    out = []
    for cell in record["cells"]:
        panel = cell["panel"]
        out.append({**common, "panel": panel, "severity": cell["severity"], "accuracy": round(cell["accuracy"], 3),
                    "mean_class_accuracy": round(cell["mean_class_accuracy"], 3),
                    "relative_drop": round(cell.get("relative_drop", 0.0), 3),
                    "panel_mean_accuracy": round(sum(by_panel[panel]) / len(by_panel[panel]), 2),
                    "ce": _round((mce.get("per_panel") or {}).get(panel)),
                    "relative_ce": _round((mce.get("relative_per_panel") or {}).get(panel)),
                    "mce": _round(mce.get("overall")), "relative_mce": _round(mce.get("relative_overall")),
                    "reference": ";".join(Path(r).name for r in (record.get("reference") or {}).get("runs", [])),
                    "commit": record.get("git_commit") or ""})
    return out


def _round(value):
    return "" if value is None else round(value, 3)


def figure(rows: list[dict], path: Path) -> Path:
    """Accuracy against severity per panel, one line per model, from the CSV's rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in dict.fromkeys(r["panel"] for r in rows) if p != "clean"]
    models = list(dict.fromkeys((r["method"], r["trained_on"], str(r["seed"])) for r in rows))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.8 * len(panels), 3.4), sharey=True, squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for model in models:
            mine = [r for r in rows if (r["method"], r["trained_on"], str(r["seed"])) == model]
            clean = next(float(r["accuracy"]) for r in mine if r["panel"] == "clean")
            curve = sorted((int(r["severity"]), float(r["accuracy"])) for r in mine if r["panel"] == panel)
            ax.plot([0, *(s for s, _ in curve)], [clean, *(a for _, a in curve)], marker="o", markersize=3,
                    label=f"{model[0]} (trained {model[1]}, seed {model[2]})")
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel("severity (0 = clean)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("FER2013Valid accuracy (%)")
    axes[0][-1].legend(fontsize=7, loc="lower left")
    fig.suptitle("UDC-C on FERPlus (cpu budget, fp32)", fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--budget", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "run"))
    parser.add_argument("--figure-only", action="store_true", help="Redraw the figure from the CSV.")
    args = parser.parse_args()
    if not args.figure_only:
        os.chdir(args.workspace)
        workspace = load_workspace()
        adapter = create_dataset("ferplus", workspace.data / "ferplus")
        runs = finished_runs(load_results(workspace.runs / "results.sqlite"), args.budget)
        panels = load_panels(list(DEFAULT_PANELS))
        rows = []
        # the reference first, so that every other model finds its sweep
        for run in sorted(runs, key=lambda r: (r["method"] != "resnet18" or r["condition"] != "clean", r["method"])):
            saved = saved_sweep(Path(run["run_dir"]), adapter, panels, LEVELS, None, args.precision, scored=True)
            if saved is not None:
                rows += rows_of(saved)  # swept already with these panels and severities, on these test images
                continue
            print(f"sweeping {run['run_dir']}", flush=True)
            record = score_model(Path(run["run_dir"]), adapter, workspace.runs, workspace.cache, panels,
                                 workers=decode_workers(), device="cpu", precision=args.precision,
                                 train_reference=False)
            rows += rows_of(record)
        report("robustness", "UDC-C on FERPlus (cpu budget)", merge_previous("robustness", rows, KEY))
    print(f"wrote {figure(read_rows('robustness'), FIGURE).relative_to(REPO)}")
    print(f"wrote {strip(STRIP).relative_to(REPO)}")


def strip(path: Path) -> Path:
    """Every severity of every panel on one face: a built-in face (ours to publish, not a FER2013 image) drawn at
    FERPlus's 48 px in grey, degraded at FERPlus's face scale."""
    import cv2

    from udcbench.reports.robustness import severity_strip

    faces = create_dataset("synthetic", n_train=7, n_test=7, size=48)
    face = faces.load_image(faces.records("test")[3])
    grey = cv2.cvtColor(cv2.cvtColor(face, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    return severity_strip(grey, load_panels(list(DEFAULT_PANELS)), "ferplus", path)


if __name__ == "__main__":
    main()
