"""``udcbench report``: one self-contained HTML page for a workspace (``results/report/index.html``).

Every table of the study beside the paper's numbers, with its notes; per cell the runs behind it and their
provenance (config, results record, seed, data draw, init, versions, commit); the leaderboard; each run's
training loss per step (its ``steps.jsonl``) and validation accuracy per epoch (its ``metrics.jsonl``) as
inline SVG; and every figure
under ``results/figures`` (samples per panel, confusion matrices, t-SNE, Figure 6) embedded as data. The page
loads nothing from the network: it opens from a disk, a zip or a mail attachment alike. Links to run files are
relative to the page, so they work where the workspace travels with it.
"""

from __future__ import annotations

import base64
import html
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from udcbench import __version__
from udcbench.files import read_json, write_atomic
from udcbench.reports.tables import BuiltTable, body, header

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px} h2{font-size:19px;margin:32px 0 8px;border-bottom:1px solid #d8dce3}
h3{font-size:15px;margin:18px 0 6px}
.sub{color:#5b6475;font-size:13px}
table{border-collapse:collapse;background:#fff;font-size:13px;margin:8px 0}
th,td{border:1px solid #d8dce3;padding:4px 8px;text-align:right;vertical-align:top}
th:first-child,td:first-child{text-align:left} th{background:#eef1f5}
td details summary{cursor:pointer;color:#1f5fbf}
td details{text-align:left;font-size:12px;max-width:360px}
.notes{font-size:12px;color:#5b6475;margin:4px 0 12px 18px}
figure{display:inline-block;margin:8px 12px 8px 0;background:#fff;padding:6px;border:1px solid #d8dce3}
figure img{max-width:100%;height:auto;display:block} figcaption{font-size:12px;color:#5b6475}
.curves{display:flex;flex-wrap:wrap;gap:10px}
.curve{background:#fff;border:1px solid #d8dce3;padding:6px;font-size:11px}
nav a{margin-right:12px}
.missing{color:#8a93a3} .wide{overflow-x:auto;max-width:100%}
.grid{display:flex;flex-wrap:wrap;gap:8px} .grid.small figure{width:300px;margin:0} svg text{fill:#1d2330}
@media (max-width:640px){main{padding:10px} .grid.small figure{width:46%}}
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _link(path: Path, page: Path, label: str) -> str:
    """A link to a local file, relative to the page (works wherever the workspace goes with it)."""
    try:
        target = os.path.relpath(Path(path).resolve(), page.parent.resolve())
    except ValueError:  # another drive (Windows)
        target = Path(path).resolve().as_uri()
    return f'<a href="{_e(Path(target).as_posix())}">{_e(label)}</a>'


def _image(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{_e(Path(path).name)}" src="data:image/png;base64,{data}">'


def _provenance(run_dir: str, records: dict[str, dict], page: Path) -> str:
    record = records.get(run_dir) or {}
    folder = Path(run_dir)
    versions = record.get("versions") or {}
    items = [
        f"seed {_e(record.get('seed'))}, {_e(record.get('preset'))} preset, {_e(record.get('input_size'))} px",
        f"data {_e(record.get('dataset'))} ({_e(record.get('condition'))}), draw "
        f"<code>{_e(str(record.get('dataset_manifest_sha256') or '-')[:12])}</code>",
        f"init <code>{_e(record.get('init'))}</code>",
        f"best epoch {_e(record.get('best_epoch'))} of {_e(record.get('epochs'))} (chosen on validation)",
        f"udcbench {_e(versions.get('udcbench'))}, torch {_e(versions.get('torch'))}, commit "
        f"<code>{_e(str(record.get('git_commit') or '-')[:10])}</code>, {_e(record.get('device'))}",
        " · ".join(_link(folder / name, page, name) for name in ("config.json", "results.json", "metrics.jsonl",
                                                                 "steps.jsonl")
                   if (folder / name).is_file()),
    ]
    return f"<li><code>{_e(folder.name)}</code><br>" + "<br>".join(items) + "</li>"


def _table(table: BuiltTable, records: dict[str, dict], page: Path) -> str:
    columns = header(table)
    lines = body(table)
    out = [f"<h3>{_e(table.title)}</h3>", f'<div class="sub">{_e(table.subtitle)}</div>', "<table><tr>"]
    out += [f"<th>{_e(c)}</th>" for c in columns] + ["</tr>"]
    for row, line in zip(table.rows, lines):
        cells, k = [], 3
        cells += [f"<td>{_e(v)}</td>" for v in line[:3]]
        for dataset in table.datasets:
            cell = row.cells[dataset]
            text = _e(line[k])
            if cell.runs:
                runs = "".join(_provenance(r, records, page) for r in cell.runs)
                text = f"<details><summary>{text}</summary><ul>{runs}</ul></details>"
            elif cell.command:  # an empty cell says so, and how to fill it
                text = f'<details><summary class="missing">not run</summary><code>{_e(cell.command)}</code></details>'
            elif not text:
                text = '<span class="missing">-</span>'
            cells.append(f"<td>{text}</td>")
            k += 1
            if table.has_paper(dataset):
                cells += [f"<td>{_e(v)}</td>" for v in line[k:k + 2]]
                k += 2
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    if table.notes:
        out.append('<ul class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in table.notes) + "</ul>")
    return "\n".join(out)


def _leaderboard(rows: list[dict[str, Any]]) -> str:
    from udcbench.reports.leaderboard import HEADERS, RANK_NOTE, TERMINAL_COLUMNS, cell

    out = ['<div class="wide"><table><tr>' + "".join(f"<th>{_e(HEADERS.get(c, c))}</th>" for c in TERMINAL_COLUMNS)
           + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{_e(cell(r[c]))}</td>" for c in TERMINAL_COLUMNS) + "</tr>" for r in rows]
    return "\n".join(out + ["</table></div>", f'<div class="notes">{_e(RANK_NOTE)}</div>'])


def _sparkline(values: list[float], width: int = 150, height: int = 40, colour: str = "#1f5fbf") -> str:
    if len(values) < 2:
        return ""
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    points = " ".join(f"{i * (width - 4) / (len(values) - 1) + 2:.1f},{height - 2 - (v - lo) / span * (height - 4):.1f}"
                      for i, v in enumerate(values))
    return (f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">'
            f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{points}"/></svg>')


def _points(path: Path) -> int:
    """The rows of a figure's CSV (Figure 6's step counts): a one-point sweep draws no curve."""
    return max(0, len(path.read_text().splitlines()) - 1) if path.is_file() else 0


def _lines(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def _curves(run_dirs: list[str]) -> str:
    """Per run: the training loss of every step (its steps.jsonl) and the validation accuracy per epoch (its
    metrics.jsonl)."""
    out = []
    for run_dir in run_dirs:
        val = [100 * e["val_accuracy"] for e in _lines(Path(run_dir) / "metrics.jsonl") if "val_accuracy" in e]
        loss = [e["loss"] for e in _lines(Path(run_dir) / "steps.jsonl") if "loss" in e]
        if len(loss) < 2 and len(val) < 2:
            continue
        lines = [f"<b>{_e(Path(run_dir).parent.name)}/{_e(Path(run_dir).name)}</b>"]
        if len(loss) >= 2:
            lines += [f"training loss per step, {len(loss)} steps: {loss[0]:.3f} → {loss[-1]:.3f} (axis {min(loss):.3f}"
                      f"-{max(loss):.3f})", _sparkline(loss, colour="#b04a2f")]
        if len(val) >= 2:
            lines += [f"validation accuracy per epoch {val[0]:.1f} → {val[-1]:.1f} % (axis {min(val):.1f}-"
                      f"{max(val):.1f} %, epochs 1-{len(val)})", _sparkline(val)]
        out.append('<div class="curve">' + "<br>".join(lines) + "</div>")
    return '<div class="curves">' + "".join(out) + "</div>" if out else "<p>(no run has more than one step)</p>"


def _robustness(tables: list) -> str:
    """The UDC-C tables (:mod:`udcbench.reports.robustness`): per model its clean accuracy, CE per panel and mCE."""
    from udcbench.reports.robustness import robustness_records

    out = []
    for table in tables:
        rows = robustness_records(table)
        columns = [c for c in rows[0] if c not in ("preset", "init", "precision")] if rows else []
        out += [f"<h3>{_e(table.title)}</h3>", f'<div class="sub">{_e(table.subtitle)}</div>',
                '<div class="wide"><table><tr>' + "".join(f"<th>{_e(c.replace('_', ' '))}</th>" for c in columns)
                + "</tr>", *("<tr>" + "".join(f"<td>{_e(r[c])}</td>" for c in columns) + "</tr>" for r in rows),
                "</table></div>"]
        if table.notes:
            out.append('<ul class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in table.notes) + "</ul>")
    return "\n".join(out)


def _dumbbell(rows: list[tuple[str, float, float]], condition: str) -> str:
    """One line per method from its clean accuracy (blue) to its ``condition`` one (orange), on an accuracy axis."""
    values = [v for _, a, b in rows for v in (a, b)]
    lo, hi = max(0.0, min(values) - 3), min(100.0, max(values) + 3)
    width, left, top, step = 560, 170, 24, 22

    def x(v: float) -> float:
        return left + (v - lo) / (hi - lo or 1) * (width - left - 20)

    height = top + step * len(rows) + 26
    svg = [f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
           f'aria-label="clean and {_e(condition)} accuracy per method">']
    for k in range(6):  # the accuracy axis
        v = lo + k * (hi - lo) / 5
        svg.append(f'<line x1="{x(v):.1f}" y1="{top - 8}" x2="{x(v):.1f}" y2="{height - 22}" stroke="#e3e6eb"/>'
                   f'<text x="{x(v):.1f}" y="{height - 8}" font-size="11" text-anchor="middle">{v:.0f}</text>')
    for i, (name, a, b) in enumerate(rows):
        y = top + step * i + 6
        svg.append(f'<text x="{left - 8}" y="{y + 4}" font-size="12" text-anchor="end">{_e(name)}</text>'
                   f'<line x1="{x(a):.1f}" y1="{y}" x2="{x(b):.1f}" y2="{y}" stroke="#9aa3b2" stroke-width="2"/>'
                   f'<circle cx="{x(a):.1f}" cy="{y}" r="5" fill="#1f5fbf"><title>clean {a:.2f} %</title></circle>'
                   f'<circle cx="{x(b):.1f}" cy="{y}" r="5" fill="#d0632c"><title>{_e(condition)} {b:.2f} %'
                   "</title></circle>")
    return "".join(svg) + "</svg>"


def _summary(leaderboard: list[dict[str, Any]]) -> str:
    """The study's message first: per dataset and panel, each method's clean and panel accuracy (mean over seeds) as
    a dumbbell chart in inline SVG, methods sorted by their panel accuracy, and the largest and smallest drop."""
    from udcbench.reports.tables import dataset_title

    out = []
    by_data: dict[tuple[str, str, str], list[tuple[str, float, float]]] = {}
    clean = {(r["method"], r["init"], r["preset"], r["dataset"]): r["accuracy"] for r in leaderboard
             if r["condition"] == "clean"}
    for r in leaderboard:
        base = clean.get((r["method"], r["init"], r["preset"], r["dataset"]))
        if r["condition"] != "clean" and base is not None:
            name = r["title"] + ("" if r["init"] == "scratch" else f" ({Path(r['init']).parent.name or r['init']})")
            by_data.setdefault((r["dataset"], r["condition"], r["preset"]), []).append((name, base, r["accuracy"]))
    for (dataset, condition, preset), rows in sorted(by_data.items()):
        rows.sort(key=lambda row: -row[2])
        svg = _dumbbell(rows, condition)
        drops = sorted(rows, key=lambda row: row[1] - row[2])
        said = (f"smallest drop: {drops[0][0]} ({drops[0][1] - drops[0][2]:.2f} points); largest: {drops[-1][0]} "
                f"({drops[-1][1] - drops[-1][2]:.2f})") if len(rows) > 1 else ""
        out += [f"<h3>{_e(dataset_title(dataset))}: clean "
                f'<span style="color:#1f5fbf">●</span> and {_e(condition)} <span style="color:#d0632c">●</span> '
                f"accuracy (%), {_e(preset)} budget, mean over seeds</h3>", svg, f'<div class="notes">{_e(said)}</div>']
    return "\n".join(out) or "<p>(no method has both a clean and a panel result yet)</p>"


def _figures(files: list[Path], small: bool = False) -> str:
    """Figures side by side; ``small``: as small multiples (a grid of thumbnails that open at full size)."""
    cls = ' class="small"' if small else ""
    return f'<div class="grid"{cls}>' + "".join(
        f"<figure>{_image(f)}<figcaption>{_e(f.stem if small else f.name)}</figcaption></figure>" for f in files
    ) + "</div>"


def write_report(results: list[dict[str, Any]], tables: list[BuiltTable], leaderboard: list[dict[str, Any]],
                 figures_dir: Path, out: Path, title: str = "udcbench study", robustness: list | None = None) -> Path:
    """Write the page to ``out`` (``.../index.html``) and return its path; ``robustness``: the UDC-C tables
    (:func:`udcbench.reports.robustness.robustness_tables`), shown with their figures in a section of their own."""
    out = Path(out)
    # the run folder's record, with the store's workspace-relative names (init, run_dir) over the absolute ones
    stored = {r["run_dir"]: r.get("record") or {} for r in results if r.get("run_dir")}
    records = {run: {**record, **(read_json(Path(run) / "results.json") or {}),
                     **{k: record[k] for k in ("init", "run_dir") if k in record}} for run, record in stored.items()}
    shown_runs = sorted({run for t in tables for row in t.rows for c in row.cells.values() for run in c.runs})
    figures = sorted(Path(figures_dir).rglob("*.png")) if Path(figures_dir).is_dir() else []
    groups = [("Samples (Figure 3): clean | panel", [f for f in figures if f.name.startswith("fig3")]),
              ("Figure 6: accuracy against the diffusion steps",
               [f for f in figures if f.name.startswith("fig6") and _points(f.with_suffix(".csv")) > 1]),
              ("t-SNE of the features (Figures 4 and 5)", [f for f in figures if f.name.startswith("tsne")]),
              ("Confusion matrices", [f for f in figures if f.parent.name == "confusion"])]
    udcc = [f for f in figures if f.name.startswith(("robustness-", "severities-"))]
    parts = [
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{STYLE}</style></head><body><main>",
        f"<h1>{_e(title)}</h1>",
        f'<div class="sub">udcbench {_e(__version__)}, written {datetime.now():%Y-%m-%d %H:%M}; '
        f"{len(records)} runs in the store. Accuracies in percent on the test split at the epoch chosen on "
        "validation; open a cell for the runs behind it.</div>",
        '<nav><a href="#summary">Summary</a><a href="#tables">Tables</a><a href="#leaderboard">Leaderboard</a>'
        + ('<a href="#robustness">Robustness</a>' if robustness else "")
        + '<a href="#curves">Training</a><a href="#figures">Figures</a></nav>',
        '<h2 id="summary">Summary</h2>', _summary(leaderboard),
        '<h2 id="tables">Tables</h2>',
        *(_table(t, records, out) for t in tables),
        '<h2 id="leaderboard">Leaderboard</h2>', _leaderboard(leaderboard),
    ]
    if robustness:
        parts += ['<h2 id="robustness">Robustness (UDC-C)</h2>',
                  '<div class="sub">Each model on the clean test split degraded by every panel at severities 1 (mild) '
                  "to 5 (harsh); 3 is the panel as shipped (docs/robustness.md).</div>", _robustness(robustness),
                  _figures(udcc)]
    parts += [
        '<h2 id="curves">Training curves</h2>', _curves(shown_runs),
        '<h2 id="figures">Figures</h2>',
    ]
    for caption, files in groups:
        if files:
            parts += [f"<h3>{_e(caption)}</h3>", _figures(files, small=caption == "Confusion matrices")]
    parts.append("</main></body></html>")
    return write_atomic(out, "\n".join(parts) + "\n")
