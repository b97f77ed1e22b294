"""`report.html`: one self-contained page (figures inlined as base64 PNG, no JS, no external CSS).

Sections: the leaderboard (tasks × methods, mean ± std over seeds, each cell coloured between the
task's `random` row (floor, red) and its `oracle` row (best, green)); per task, the true
mechanisms next to what each method found (TMS: 2-D geometry; otherwise similarity matrices after
matching), one-hot activity heatmaps permuted to the ground truth, and which mechanisms each method
missed, split or merged; then a recovery-vs-L0 plot across methods. A bench with stress rows gets a
"Stress tests" section after the leaderboard (stress.py). Swept cells enter the leaderboard and the
task sections at their sweep's default knob.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mechscope.files import atomic_text
from mechscope.report import figures
from mechscope.report.circuits import circuits_section
from mechscope.report.data import (
    Artifacts,
    Cell,
    aggregate,
    artifacts,
    column_order,
    diagnose,
    load_artifacts,
    load_rows,
    run_dir,
)
from mechscope.report.dynamics import dynamics_section
from mechscope.report.stress import stress_section

DECOMPOSITION_METRICS = ("mmcs", "mcc", "coverage", "ml2r", "activity_f1", "faithfulness", "pgd_faithfulness", "l0", "n_alive",
                         "dead_frac", "samples_seen", "wall_s")
DYNAMICS_METRICS = ("n_stable", "n_saddle", "n_matched", "stable_precision", "stable_recall", "best_q",
                    "max_rel_error", "wall_s")
PGD_NOTE = ("<p class='note'><b>pgd_faithfulness</b>: the output error when the components a method calls "
            "inactive on an input are set adversarially (a few steps of projected gradient ascent inside their "
            "admissible range); far above <b>faithfulness</b>, the decomposition is exact only under its own masks.</p>")
CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1500px}
h1{font-size:22px} h2{font-size:18px;border-bottom:1px solid #ccc;padding-top:10px} h3{font-size:15px}
table{border-collapse:collapse;font-size:12px;margin:8px 0}
th,td{border:1px solid #ddd;padding:3px 6px;text-align:right;white-space:nowrap}
th{background:#f3f3f3} td.name{text-align:left;font-weight:600} td.na{color:#999;text-align:center}
td.failed{color:#b00;text-align:center} tr.task td{background:#e9eef6;text-align:left;font-weight:700}
.std{color:#666;font-size:10px} .note{color:#555;font-size:12px} img{max-width:100%;margin:4px 0}
"""


ArtifactsOf = Callable[[str, Cell], Artifacts | None]
"""(task, cell) → the stored tensors and matches of the cell's first seed."""


def build_report(bench: str | Path) -> Path:
    """Write `bench/report.html` from `results.parquet` and the run dirs; return its path."""
    bench = Path(bench)
    out = bench / "report.html"
    atomic_text(out, page(bench, load_rows(bench),
                          lambda task, c: artifacts(bench, task, c.method, min(c.seeds), c.knob)))
    return out


def build_run_report(directory: str | Path, metrics: dict[str, Any] | None = None) -> Path:
    """Write `directory/report.html` for one run dir (`mechscope score --out DIR`): the same page a
    bench gets, with this run as its only row, from DIR's metrics.json, tensors and matches."""
    from mechscope.bench.results import make_row

    directory = Path(directory)
    if metrics is None:
        metrics = json.loads((directory / "metrics.json").read_text())
    row = make_row({"seed": 0, "target_seed": 0, **metrics}, str(metrics.get("config_hash", "")))
    out = directory / "report.html"
    atomic_text(out, page(directory, [row], lambda task, c: load_artifacts(directory)))
    return out


def page(bench: Path, rows: list[dict[str, Any]], arts_of: ArtifactsOf) -> str:
    """The whole page of these rows; `arts_of` finds each cell's stored tensors."""
    cells = aggregate(rows)
    tasks = list(dict.fromkeys(t for t, _ in cells))
    methods = order(list(dict.fromkeys(m for _, m in cells)), cells)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>mechscope report</title>"
             f"<style>{CSS}</style></head><body>",
             "<h1>mechscope — did each method find the mechanisms that are really there?</h1>",
             f"<p class='note'>{len(rows)} cells · {len(tasks)} tasks · {len(methods)} methods · seeds "
             f"{sorted({int(r['seed']) for r in rows})}. Colour: each metric placed between the task's "
             "<b>random</b> row (floor, red) and its <b>oracle</b> row (best, green).</p>",
             "<h2 id='overview'>Overview: tasks × methods</h2>", overview(cells, tasks, methods),
             "<h2 id='leaderboard'>Leaderboard</h2>", leaderboard(cells, tasks, methods), MARKS_NOTE, PGD_NOTE,
             stress_section(bench, rows), circuits_section(bench)]
    for task in tasks:
        parts.append(task_section(bench, task, [m for m in methods if (task, m) in cells], cells, arts_of))
    parts.append(tradeoff_section(cells))
    parts.append("</body></html>")
    return "\n".join(parts)


def _metrics_for(cells: dict[tuple[str, str], Cell], task: str) -> tuple[str, ...]:
    dyn = any(c.task == task and c.status == "ok" and "n_stable" in c.values for c in cells.values())
    keys = DYNAMICS_METRICS if dyn else DECOMPOSITION_METRICS
    return tuple(k for k in keys if any(c.task == task and k in c.values for c in cells.values())) or keys[:1]


HEADLINE = ("mmcs", "stable_recall", "n_matched")
UNCOLOURED = {"wall_s", "peak_mem_mb", "n_alive", "n_stable", "n_saddle", "samples_seen"}
MARKS_NOTE = ("<p class='note'>† a <b>peer</b>: the same variant trained by another library's own code, shown "
              "right after ours; * <b>oracle-sized</b> (<code>sizing=oracle</code>: width and k read off the ground "
              "truth, which no user has); ° <b>not converged at this budget</b>: on a stress task, the method stays "
              "below mean mmcs 0.95 on stress-iid at the same budget, so no verdict (see Stress tests); "
              "<b>samples_seen</b>: training examples the fit consumed (steps × batch), equal for every method of "
              "a task within a bench preset.</p>")


def method_name(cell: Cell | None, name: str, gated: bool = True) -> str:
    """A method's table label: its name, † and what it mirrors for a peer, * for oracle-sized, ° for
    not converged at this budget (a stress row, `bench/convergence.py`)."""
    out = html.escape(name)
    if cell is not None and cell.peer:
        own = cell.about.get("peer_of")
        out += "†" + (f" <span class='std'>peer of {html.escape(str(own))}</span>" if own else "")
    if cell is not None and cell.oracle_sized:
        out += "* <span class='std'>oracle-sized</span>"
    if gated and cell is not None and cell.about.get("converged") is False:
        out += "° <span class='std'>not converged at this budget</span>"
    return out


def order(methods: list[str], cells: dict[tuple[str, str], Cell]) -> list[str]:
    """Methods in table order, each peer moved right after the variant it mirrors."""
    peer_of = {c.method: str(c.about["peer_of"]) for c in cells.values() if c.peer and c.about.get("peer_of")}
    own = [m for m in methods if m not in peer_of or peer_of[m] not in methods]
    out: list[str] = []
    for m in own:
        out += [m, *(p for p in methods if peer_of.get(p) == m)]
    return out


def overview(cells: dict[tuple[str, str], Cell], tasks: list[str], methods: list[str]) -> str:
    """One headline number per (task, method): mmcs, or for fixed-point tasks the stable-point recall."""
    first = {m: next((c for (_, mm), c in cells.items() if mm == m), None) for m in methods}
    out = ["<table><tr><th>task</th><th>metric</th>" + "".join(f"<th>{method_name(first[m], m, gated=False)}</th>" for m in methods)
           + "</tr>"]
    for task in tasks:
        key = next((k for k in HEADLINE if any(c.task == task and k in c.values for c in cells.values())), "mmcs")
        tds = []
        for method in methods:
            cell = cells.get((task, method))
            ms = cell.mean_std(key) if cell is not None and cell.status == "ok" else None
            if cell is None or ms is None:
                status = "—" if cell is None or cell.status == "ok" else cell.status
                css = "failed" if status == "failed" else "na"
                tds.append(f"<td class='{css}' title='{html.escape((cell.reason if cell else '') or '')}'>{status}</td>")
            else:
                tds.append(f"<td style='background:{_colour(cells, task, key, ms[0])}'>{_fmt(ms[0])}</td>")
        out.append(f"<tr><td class='name'>{html.escape(task)}</td><td>{key}</td>{''.join(tds)}</tr>")
    out.append("</table>")
    return "\n".join(out)


def leaderboard(cells: dict[tuple[str, str], Cell], tasks: list[str], methods: list[str]) -> str:
    out = ["<table>"]
    for task in tasks:
        keys = _metrics_for(cells, task)
        out.append(f"<tr class='task'><td colspan='{len(keys) + 2}'>{html.escape(task)}</td></tr>")
        out.append("<tr><th>method</th><th>seeds</th>" + "".join(f"<th>{k}</th>" for k in keys) + "</tr>")
        na = [m for m in methods if (task, m) in cells and cells[(task, m)].status == "n/a"]
        for method in methods:
            cell = cells.get((task, method))
            if cell is None or cell.status == "n/a":
                continue
            if cell.status != "ok":
                css = "na" if cell.status == "n/a" else "failed"
                tip = html.escape(cell.reason or "")
                out.append(f"<tr><td class='name'>{method_name(cell, method)}</td>"
                           f"<td class='{css}' colspan='{len(keys) + 1}' title='{tip}'>{cell.status}"
                           f"{' — ' + tip if css == 'failed' else ''}</td></tr>")
                continue
            tds = []
            for key in keys:
                ms = cell.mean_std(key)
                if ms is None:
                    tds.append("<td class='na'>—</td>")
                    continue
                colour = _colour(cells, task, key, ms[0])
                std = f" <span class='std'>± {_fmt(ms[1])}</span>" if len(cell.seeds) > 1 else ""
                tds.append(f"<td style='background:{colour}'>{_fmt(ms[0])}{std}</td>")
            out.append(f"<tr><td class='name'>{method_name(cell, method)}</td><td>{len(cell.seeds)}</td>"
                       f"{''.join(tds)}</tr>")
        if na:
            reason = html.escape(cells[(task, na[0])].reason or "")
            out.append(f"<tr><td class='na' colspan='{len(keys) + 2}' style='text-align:left;white-space:normal'"
                       f" title='{reason}'>"
                       f"n/a (the pair makes no sense): {html.escape(', '.join(na))}</td></tr>")
    out.append("</table>")
    return "\n".join(out)


def _colour(cells: dict[tuple[str, str], Cell], task: str, key: str, value: float) -> str:
    """Red (random's value) → green (oracle's value); white when either reference is missing."""
    if key in UNCOLOURED:
        return "#ffffff"
    best = cells.get((task, "oracle"))
    floor = cells.get((task, "random"))
    b = best.mean_std(key) if best else None
    f = floor.mean_std(key) if floor else None
    if b is None or f is None or abs(b[0] - f[0]) < 1e-12 or math.isnan(value):
        return "#ffffff"
    t = min(1.0, max(0.0, (value - f[0]) / (b[0] - f[0])))
    r, g = (255, int(120 + 135 * 2 * t)) if t < 0.5 else (int(255 - 2 * (t - 0.5) * 135), 255)
    return f"rgb({r},{g},140)"


def _fmt(v: float) -> str:
    if v == 0 or (1e-3 <= abs(v) < 1e4):
        return f"{v:.3f}" if abs(v) < 100 else f"{v:.0f}"
    return f"{v:.2e}"


def task_section(bench: Path, task: str, methods: list[str], cells: dict[tuple[str, str], Cell],
                 arts_of: ArtifactsOf) -> str:
    ok = [m for m in methods if cells[(task, m)].status == "ok"]
    out = [f"<h2 id='{html.escape(task)}'>{html.escape(task)}</h2>"]
    arts = {m: a for m in ok if (a := arts_of(task, cells[(task, m)])) is not None}
    if not arts:
        out.append(dynamics_section(bench, task, ok, cells))
        return "\n".join(out)
    out.append(_found_vs_true(arts))
    out.append(_activity(arts))
    out.append(_diagnosis_table(arts))
    return "\n".join(out)


def _img(png_bytes: bytes, alt: str) -> str:
    return f"<img alt='{html.escape(alt)}' src='{figures.data_uri(png_bytes)}'>"


def _found_vs_true(arts: dict[str, Artifacts]) -> str:
    first = next(iter(arts.values()))
    true = first.tensor("true_directions.activation.")
    if true is not None and true[1].shape[1] == 2:
        panels = []
        for m, a in arts.items():
            d = a.tensor("directions.activation.")
            alive = _alive(a, None if d is None else d[1].shape[0])
            panels.append((m, None if d is None else d[1], alive))
        return ("<h3>True feature geometry vs what each method found (seed 0)</h3>"
                + _img(figures.geometry_2d(true[1], panels), "feature geometry"))
    sims: list[tuple[str, np.ndarray]] = []
    for m, a in arts.items():
        sim = a.tensor(f"similarity.{_space(a)}.")
        if sim is None:
            continue
        site, mat = sim
        order = column_order(a, _space(a), site, mat.shape[1])[: max(2 * mat.shape[0], 10)]
        sims.append((f"{m} ({site})", np.abs(mat[:, order])))
    if not sims:
        return ""
    return ("<h3>Similarity of true mechanisms (rows) to components (columns), matched pairs on the "
            "diagonal</h3>" + _img(figures.matrix_panels(sims, "component (permuted)", "true mechanism", 1.0),
                                   "similarity matrices"))


def _activity(arts: dict[str, Artifacts]) -> str:
    panels = []
    for m, a in arts.items():
        act = a.tensor("onehot_activity.")
        if act is None:
            continue
        site, mat = act
        order = column_order(a, _space(a), site, mat.shape[1])[: max(2 * mat.shape[0], 10)]
        mat = mat[:, order]
        panels.append((m, mat / max(1e-9, float(np.abs(mat).max()))))
    if not panels:
        return ""
    return ("<h3>Activity / causal importance on one-feature inputs (rows: features; columns: components "
            "permuted to the ground truth; scaled to max 1)</h3>"
            + _img(figures.matrix_panels(panels, "component (permuted)", "one-hot input", 1.0, "magma"), "activity"))


def _diagnosis_table(arts: dict[str, Artifacts]) -> str:
    rows = []
    for m, a in arts.items():
        d = diagnose(a)
        if d is None:
            continue
        merged = "; ".join("+".join(g) for g in d.merged)
        rows.append(f"<tr><td class='name'>{html.escape(m)}</td><td>{len(d.missed)}</td>"
                    f"<td style='text-align:left'>{html.escape(', '.join(d.missed))}</td><td>{len(d.split)}</td>"
                    f"<td style='text-align:left'>{html.escape(', '.join(d.split))}</td><td>{len(d.merged)}</td>"
                    f"<td style='text-align:left'>{html.escape(merged)}</td></tr>")
    if not rows:
        return ""
    return ("<h3>Missed, split, merged (seed 0)</h3><table><tr><th>method</th><th>missed</th><th></th>"
            "<th>split</th><th></th><th>merged</th><th></th></tr>" + "".join(rows) + "</table>")


def _dynamics_figures(bench: Path, task: str, methods: list[str], cells: dict[tuple[str, str], Cell]) -> str:
    out: list[str] = []
    for m in methods:
        c = cells[(task, m)]
        figs = sorted((run_dir(bench, task, m, min(c.seeds), c.knob) / "figures").glob("*.png"))[:3]
        out.extend(_img(p.read_bytes(), p.stem) for p in figs)
    return ("<h3>Fixed points (seed 0)</h3>" + "".join(out)) if out else ""


def _space(a: Artifacts) -> str:
    return "parameter" if any(m["space"] == "parameter" for m in a.info["matches"]) else "activation"


def _alive(a: Artifacts, n: int | None) -> np.ndarray | None:
    act = a.tensor("onehot_activity.")
    if act is None or n is None or act[1].shape[1] != n:
        return None
    alive = np.asarray((act[1] > float(a.info.get("fire_threshold", 0.0))).any(0))
    return alive


def tradeoff_section(cells: dict[tuple[str, str], Cell]) -> str:
    points = []
    for c in cells.values():
        mmcs, l0, l0_true = c.mean_std("mmcs"), c.mean_std("l0"), c.mean_std("l0_true")
        if c.status == "ok" and mmcs and l0 and l0_true and l0_true[0] > 0 and l0[0] > 0:
            points.append((c.task, c.method, l0[0] / l0_true[0], mmcs[0]))
    if not points:
        return ""
    return "<h2 id='tradeoff'>Recovery vs L0</h2>" + _img(figures.tradeoff(points), "recovery vs L0")
