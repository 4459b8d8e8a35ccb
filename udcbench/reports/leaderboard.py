"""Leaderboards from the results store: one row per (method, init, preset, dataset, condition).

Columns (documented in docs/results.md): accuracy mean / std over seeds and their number, mean class
accuracy, macro-F1, the drop from clean to this condition (same method, init, preset, dataset), the
rank among methods in the same (dataset, condition, draw, preset, init) group (1 + the methods better beyond seed
noise: Welch's t over seeds, two or more a side, Holm-corrected over the group's comparisons at a family-wise 5 %;
methods it cannot tell apart, and single runs, share a rank) and the change of that rank
from clean (positive: the method climbs under this condition), and the paper's number where it has one.
Oracles (LRDif's stage 1, which sees the label) are left out. A result within ``NEAR_CHANCE_POINTS`` of
chance (the better of guessing uniformly and always answering the test set's largest class) is marked
``near_chance`` and not ranked: its place among others says nothing.
``--publish`` writes a Hugging Face model-index block per method.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from udcbench.compare import ALPHA, holm, welch_p
from udcbench.engine.metrics import chance_accuracy
from udcbench.errors import UdcbenchError
from udcbench.files import check_name, write_atomic, write_csv
from udcbench.methods import get_method
from udcbench.reports.paper import paper_numbers
from udcbench.reports.tables import dataset_title, usable

COLUMNS = ("method", "title", "init", "preset", "input_size", "dataset", "condition", "draw", "test_split", "seeds",
           "accuracy", "accuracy_std", "mean_class_accuracy", "macro_f1", "chance", "near_chance", "drop_from_clean",
           "rank", "rank_change_from_clean", "paper_accuracy")
#: Column headers as a reader sees them (the terminal, the report); the files keep the column names.
HEADERS = {"accuracy_std": "std", "drop_from_clean": "drop", "rank_change_from_clean": "rank +/-",
           "seeds": "seeds", "preset": "budget"}
#: What the terminal shows (the files hold every column).
TERMINAL_COLUMNS = ("method", "dataset", "condition", "preset", "seeds", "accuracy", "accuracy_std",
                    "drop_from_clean", "rank", "rank_change_from_clean")
RANK_NOTE = (f"rank: 1 + the methods of its group better beyond seed noise (Welch's t over seeds, two or more a "
             f"side, Holm-corrected over the group's comparisons at a family-wise {ALPHA:.0%}); equal ranks are "
             "results the data cannot tell apart, and a single run is never ranked below another")
#: Points above chance under which a result is not ranked.
NEAR_CHANCE_POINTS = 5.0




def _rank(rows: list[dict]) -> None:
    """Each row's rank in its group (dataset, condition, draw, preset, init; near-chance rows left out): 1 + the rows
    better beyond seed noise, every pair with two or more seeds a side tested (Welch) and the group's tests
    Holm-corrected together."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        row["rank"] = None
        if not row["near_chance"]:
            key = (row["dataset"], row["condition"], row["draw"], row["preset"], row["init"])
            groups.setdefault(key, []).append(row)
    for group in groups.values():
        scores = [np.asarray(r.pop("_records"), dtype=float) for r in group]
        pairs = [(i, j) for i in range(len(group)) for j in range(i + 1, len(group))
                 if len(scores[i]) > 1 and len(scores[j]) > 1]
        rejected = holm([welch_p(scores[i], scores[j]) for i, j in pairs])
        separated = {pair for pair, r in zip(pairs, rejected) if r}
        for i, row in enumerate(group):
            row["rank"] = 1 + sum(o["accuracy"] > row["accuracy"] and tuple(sorted((i, j))) in separated
                                  for j, o in enumerate(group))
    for row in rows:
        row.pop("_records", None)


def _mean_or_none(column: pd.Series) -> float | None:
    """The mean of a column's values that are there, None when none is."""
    values = pd.to_numeric(column, errors="coerce").dropna()
    return float(values.mean()) if len(values) else None


def _paper(method: str, dataset: str, condition: str) -> float | None:
    wanted = "clean" if condition == "clean" else "udc" if condition == "toled" else None
    found = [p.accuracy for p in paper_numbers()
             if p.udcbench_method == method and p.dataset == dataset and p.condition == wanted]
    return found[0] if found else None


def _oracle(method: str) -> bool:
    try:
        return get_method(method).oracle
    except UdcbenchError:
        return False


#: What makes a leaderboard row: a method's runs at one init, preset, dataset, condition and draw of the data.
KEY = ["method", "init", "preset", "dataset", "condition", "draw"]


def _runs_frame(results: list[dict[str, Any]]) -> pd.DataFrame:
    """The usable runs (no oracle) as a frame, accuracies in percent, the latest run per seed of each row."""
    records = [{
        "method": r["method"], "init": str(r["init"]), "preset": r["preset"], "dataset": r["dataset"],
        "condition": r["condition"], "seed": r["seed"], "created": r.get("created") or "",
        "draw": str((r.get("record") or {}).get("dataset_manifest_sha256") or "")[:12],
        "input_size": str(r["input_size"]), "test_split": str(r["test_split"]),
        "accuracy": 100 * r["accuracy"],
        "mean_class_accuracy": None if r["mean_class_accuracy"] is None else 100 * r["mean_class_accuracy"],
        "macro_f1": None if r["macro_f1"] is None else 100 * r["macro_f1"],
        "chance": chance_accuracy(r.get("record") or {}),
    } for r in results if usable(r) and not _oracle(r["method"])]
    frame = pd.DataFrame(records, columns=[*KEY, "seed", "created", "input_size", "test_split", "accuracy",
                                           "mean_class_accuracy", "macro_f1", "chance"])
    return frame.sort_values("created", kind="stable").drop_duplicates([*KEY, "seed"], keep="last")


def build_leaderboard(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows sorted by dataset, condition, preset, init and rank. Accuracies in percent."""
    rows = []
    for key, runs in _runs_frame(results).groupby(KEY, sort=False):
        method, init, preset, dataset, condition, draw = key
        try:
            title = get_method(method).title
        except UdcbenchError:  # a method this version no longer registers
            title = method
        rows.append({
            "method": method, "title": title, "init": init, "preset": preset,
            "input_size": "/".join(sorted(set(runs["input_size"]))), "dataset": dataset, "condition": condition,
            "draw": draw, "test_split": "/".join(sorted(set(runs["test_split"]))), "seeds": len(runs),
            "accuracy": float(runs["accuracy"].mean()),
            "accuracy_std": float(runs["accuracy"].std()) if len(runs) > 1 else None,  # sample std (ddof 1)
            **{c: _mean_or_none(runs[c]) for c in ("mean_class_accuracy", "macro_f1", "chance")},
            "paper_accuracy": _paper(method, dataset, condition),
            "_records": list(runs["accuracy"]),
        })
    for row in rows:
        row["near_chance"] = row["chance"] is not None and row["accuracy"] < row["chance"] + NEAR_CHANCE_POINTS
    _rank(rows)
    clean = {(r["method"], r["init"], r["preset"], r["dataset"]): r for r in rows if r["condition"] == "clean"}
    for row in rows:
        base = clean.get((row["method"], row["init"], row["preset"], row["dataset"]))
        udc = row["condition"] != "clean" and base is not None
        row["drop_from_clean"] = base["accuracy"] - row["accuracy"] if udc else None
        both = udc and base["rank"] is not None and row["rank"] is not None
        row["rank_change_from_clean"] = base["rank"] - row["rank"] if both else None
    rows.sort(key=lambda r: (r["dataset"], r["condition"] != "clean", r["condition"], r["preset"], r["init"],
                             r["rank"] is None, r["rank"] or 0, -r["accuracy"], r["method"]))
    return [{c: row[c] for c in COLUMNS} for row in rows]


def cell(value: Any) -> str:
    """A leaderboard value as the CSV, the markdown and the terminal show it."""
    if value is None or value is False:
        return ""
    if value is True:
        return "yes"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def write_leaderboard(rows: list[dict[str, Any]], out_dir: Path, stem: str = "leaderboard",
                      columns: tuple[str, ...] = COLUMNS, note: str = RANK_NOTE) -> tuple[Path, Path]:
    """``out_dir/STEM.csv`` and ``STEM.md`` (``columns``, then ``note`` under the markdown table)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out_dir / f"{stem}.csv", out_dir / f"{stem}.md"
    write_csv(csv_path, list(columns), ({k: cell(v) for k, v in row.items()} for row in rows))
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(row[c]) for c in columns) + " |" for row in rows]
    lines += ["", note]
    write_atomic(md_path, "\n".join(lines) + "\n")
    return csv_path, md_path


def model_card(rows: list[dict[str, Any]], mce: dict[tuple, tuple[float, int]] | None = None) -> str:
    """A Hugging Face model card (``huggingface_hub``'s card classes, so that its own parser reads it back) of one
    method's results at one preset, init and draw of the data: accuracy (mean over seeds) and mean class accuracy
    per dataset and condition, each condition its own dataset type; and the UDC-C mCE where ``mce``
    (:func:`udcbench.reports.robustness.mce_by_model`) has the model's sweeps."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    first = rows[0]
    results = []
    for row in rows:
        seeds = f"mean of {row['seeds']} seeds" if row["seeds"] > 1 else "1 seed"
        common = dict(task_type="image-classification", task_name="Facial expression recognition",
                      dataset_type=f"udcbench/{row['dataset']}-{row['condition']}",
                      dataset_name=dataset_title(row["dataset"], row["condition"]), dataset_split=row["test_split"],
                      dataset_revision=row["draw"] or None,
                      dataset_args={"preset": row["preset"], "init": row["init"], "input_size": row["input_size"]})
        results.append(EvalResult(**common, metric_type="accuracy", metric_value=round(row["accuracy"], 2),
                                  metric_name=f"Accuracy (%, {seeds})"))
        if row["mean_class_accuracy"] is not None:
            results.append(EvalResult(**common, metric_type="mean_class_accuracy",
                                      metric_value=round(row["mean_class_accuracy"], 2),
                                      metric_name=f"Mean class accuracy (%, {seeds})"))
        swept = (mce or {}).get((row["method"], row["preset"], Path(str(row["init"])).name, row["condition"]))
        if swept is not None:
            results.append(EvalResult(**{**common, "dataset_type": f"udcbench/{row['dataset']}-udc-c",
                                         "dataset_name": f"UDC-C {dataset_title(row['dataset'])} (3 panels x 5 "
                                                         "severities)"},
                                      metric_type="mce", metric_value=round(swept[0], 2),
                                      metric_name=f"mCE (%, 100 = the clean ResNet-18 control, lower is better, "
                                                  f"{swept[1]} seed(s))"))
    data = ModelCardData(model_name=f"udcbench-{first['method']}", license="apache-2.0", library_name="pytorch",
                         pipeline_tag="image-classification",
                         tags=["facial-expression-recognition", "under-display-camera", "udcbench"],
                         eval_results=results)
    lines = [f"| {dataset_title(r['dataset'], r['condition'])} | {r['test_split']} | {r['seeds']} | "
             f"{cell(r['accuracy'])} | {cell(r['accuracy_std'])} |" for r in rows]
    body = "\n".join([
        f"# {first['title']} ({first['method']}), udcbench {first['preset']} preset",
        "",
        f"Initialised from `{first['init']}`; input {first['input_size']} px. Accuracies in percent on each "
        "dataset's test split, mean (and sample std) over seeds, from the run records in `runs/results.sqlite`.",
        "",
        "| data | split | seeds | accuracy | std |",
        "|---|---|---|---|---|",
        *lines,
    ])
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}\n"))


def _card_stem(row: dict[str, Any]) -> str:
    init = "scratch" if row["init"] == "scratch" else re.sub(r"[^A-Za-z0-9._+-]", "-", Path(row["init"]).parent.name
                                                                  or Path(row["init"]).stem)
    parts = [row["method"], row["preset"], init, row["dataset"], row["condition"], row["draw"] or "nodraw"]
    return check_name("-".join(parts), "model card name")


def publish(rows: list[dict[str, Any]], out_dir: Path, mce: dict[tuple, tuple[float, int]] | None = None
            ) -> list[Path]:
    """``out_dir/<method>-<preset>-<init>-<dataset>-<condition>-<draw>.md``: one model card per method, preset,
    init and draw of the data (with its mCE where swept); results near chance are left out (they say nothing about
    the method)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for row in rows:
        if row["near_chance"]:
            continue
        check_name(row["method"], "method in the results store")
        path = out_dir / f"{_card_stem(row)}.md"
        write_atomic(path, model_card([row], mce))
        paths.append(path)
    return paths
