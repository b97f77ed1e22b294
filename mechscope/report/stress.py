"""The report's "Stress tests" section (issue 9): where each method's recovery breaks.

Read off the stress preset's rows (tasks named `stress-*`, `synth-sae-bench*` and every `*-control`):

- one table, per method: its mean `mmcs` over seeds at the default knob on each variant, and the
  knob values at which the mean falls below 0.9 (or "never below 0.9") — a verdict made only where
  the method converges on the baseline: mean mmcs ≥ 0.95 on `stress-iid` at the same budget and
  knob (`bench/convergence.py`); elsewhere the cell says "not converged at this budget" and shows
  the baseline number;
- per variant, recovery (`mmcs`, `activity_f1`) vs the sparsity knob, mean ± std over seeds;
- on `stress-zipf`, each feature's recovery (its best match's similarity) vs its firing
  probability, from the run dirs' `matches.json` and the task's `feature_probs()`;
- `absorption` per method where the truth has a hierarchy;
- the random-init controls: a control is the same architecture with fresh random weights, scored
  against the original target's truth, so whatever a method "recovers" there is not real. The
  verdict compares a method's `mmcs` and `activity_f1` on the control with the `random` method's on
  the same control in the same space (the floor: an SAE's activation-space mmcs in d = 10 is ~0.7
  for random directions, a parameter-space one ~0.15): within `CONTROL_MARGIN` of it on every
  control is "nothing real here", and the row names the metric(s) that show it.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mechscope.bench.convergence import BAR, BASELINE, Gate, GateKey, baseline_gates, gate_for, is_stress
from mechscope.bench.results import method_label
from mechscope.report import figures
from mechscope.report.data import Cell, aggregate_knobs, is_default_knob, run_dir
from mechscope.report.spd_stress_notes import spd_notes_block

COVERED = 0.9
"""Recovery below this mean mmcs counts as broken (DESIGN.md's coverage threshold)."""
CONTROL_MARGIN = 0.05
"""A control whose mmcs is within this of the random floor shows "nothing real here"."""
CONTROL = "-control"
ZIPF = "stress-zipf"
__all__ = ["is_stress", "stress_section"]


@dataclass
class Point:
    """One (task, method, knob) over seeds."""

    knob: str
    value: float
    """The knob's number ("k=4" → 4); NaN when not swept."""
    mmcs: tuple[float, float] | None
    cell: Cell


@dataclass
class Stress:
    """The stress rows, organised: per (task, method) its default point and its sweep."""

    tasks: list[str]
    methods: list[str]
    default: dict[tuple[str, str], Point]
    sweep: dict[tuple[str, str], list[Point]]
    gates: dict[GateKey, Gate]

    def gate(self, method: str, point: Point) -> Gate:
        """The convergence gate of one point: the method on stress-iid at its budget and knob."""
        samples = point.cell.about.get("samples_seen")
        return gate_for(self.gates, method, int(samples) if samples is not None else None, point.knob)

    def judged(self, task: str, method: str, point: Point) -> bool:
        """Whether a verdict is made at this point: a trained method converged on the baseline
        (calibrations are always judged; the baseline itself is not a verdict)."""
        if method in ("oracle", "random") or point.cell.about.get("family") == "calibration":
            return True
        return task != BASELINE and self.gate(method, point).converged is True

    @property
    def variants(self) -> list[str]:
        return [t for t in self.tasks if not t.endswith(CONTROL)]

    @property
    def controls(self) -> list[tuple[str, str]]:
        """(real task, its control), where the bench has both."""
        return [(t[: -len(CONTROL)], t) for t in self.tasks if t.endswith(CONTROL) and t[: -len(CONTROL)] in self.tasks]


def knob_value(label: str) -> float:
    try:
        return float(label.split("=", 1)[1])
    except (IndexError, ValueError):
        return math.nan


def organise(rows: list[dict[str, Any]]) -> Stress:
    gates = baseline_gates(rows)
    rows = [r for r in rows if is_stress(r["task"])]
    defaults = {(r["task"], method_label(r), r.get("knob") or "") for r in rows if is_default_knob(r)}
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    methods = list(dict.fromkeys(method_label(r) for r in rows))
    default: dict[tuple[str, str], Point] = {}
    sweep: dict[tuple[str, str], list[Point]] = {}
    for (task, method, knob), cell in aggregate_knobs(rows).items():
        if cell.status != "ok":
            continue
        point = Point(knob, knob_value(knob), cell.mean_std("mmcs"), cell)
        if (task, method, knob) in defaults:
            default[(task, method)] = point
        if cell.swept:
            sweep.setdefault((task, method), []).append(point)
    for points in sweep.values():
        points.sort(key=lambda p: p.value)
    methods = [m for m in methods if any(k[1] == m for k in default)]
    return Stress(tasks, methods, default, sweep, gates)


# --- (a) where recovery drops below 0.9 ----------------------------------------------------------------


def _points(stress: Stress, task: str, method: str) -> list[Point]:
    return stress.sweep.get((task, method)) or ([stress.default[(task, method)]]
                                                if (task, method) in stress.default else [])


def below(stress: Stress, task: str, method: str) -> list[str]:
    """The knob labels (or "default" when not swept) at which mean mmcs < 0.9, where judged."""
    return [p.knob or "default" for p in _points(stress, task, method)
            if p.mmcs is not None and p.mmcs[0] < COVERED and stress.judged(task, method, p)]


def unjudged(stress: Stress, task: str, method: str) -> list[Point]:
    """The points of a variant with no verdict: the method is not converged there (gate)."""
    return [p for p in _points(stress, task, method) if task != BASELINE and not stress.judged(task, method, p)]


def statement(stress: Stress, method: str) -> str:
    """One line: where the method's mean mmcs drops below 0.9, over every variant and knob it is
    judged on; and where it is not converged at this budget (no verdict)."""
    parts, skipped = [], []
    for task in stress.variants:
        bad = below(stress, task, method)
        n = len(stress.sweep.get((task, method), [])) or 1
        if bad:
            parts.append(f"{task} ({'all knobs' if len(bad) == n and n > 1 else ', '.join(bad)})")
        skipped += [(task, p) for p in unjudged(stress, task, method)]
    line = "never below 0.9" if not parts else "below 0.9 on " + "; ".join(parts)
    if not skipped:
        return line
    judged_any = any(stress.judged(t, method, p) for t in stress.variants if t != BASELINE
                     for p in _points(stress, t, method))
    if not judged_any:  # no verdict anywhere: say why once
        default = stress.default.get((BASELINE, method))
        gate = stress.gate(method, default) if default is not None else Gate(method, None)
        return f"{gate.note()}: no verdict"
    groups: dict[tuple[str, str], list[str]] = {}  # (knob, why) → variants
    for t, p in skipped:
        groups.setdefault((p.knob, stress.gate(method, p).note()), []).append(t)
    where = "; ".join(f"{f'at {k} ' if k else ''}on {', '.join(ts)}: {why}" for (k, why), ts in groups.items())
    return f"{line}; no verdict {where}"


def breakdown_table(stress: Stress) -> str:
    from mechscope.report.html import method_name  # (html imports this module)

    head = "".join(f"<th>{html.escape(t)}</th>" for t in stress.variants)
    out = ["<table><tr><th>method</th>" + head + "<th style='text-align:left'>where mmcs &lt; 0.9 (judged only "
           f"where converged: stress-iid mmcs ≥ {BAR} at the same budget)</th></tr>"]
    for method in stress.methods:
        tds = []
        for task in stress.variants:
            point = stress.default.get((task, method))
            if point is None or point.mmcs is None:
                tds.append("<td class='na'>—</td>")
                continue
            mean, std = point.mmcs
            judged = stress.judged(task, method, point)
            gate = stress.gate(method, point)
            no_verdict = gate.converged is False if task == BASELINE else not judged
            colour = "#e6e6e6" if no_verdict else "#f6c6c6" if mean < COVERED else "#d4f2d4"
            bad = below(stress, task, method)
            knob = f"<br><span class='std'>at {html.escape(point.knob)}</span>" if point.knob else ""
            where = f"<br><span class='std'>&lt; 0.9 at {html.escape(', '.join(bad))}</span>" if bad else ""
            gated = ""
            if task != BASELINE and not judged:
                base = "no baseline" if gate.baseline is None else f"stress-iid {gate.baseline:.3f}"
                gated = f"<br><span class='std'>not converged at this budget ({html.escape(base)})</span>"
            elif task == BASELINE and gate.converged is False:
                gated = "<br><span class='std'>not converged at this budget</span>"
            budget = point.cell.about.get("samples_seen")
            title = f" title='samples seen {budget}'" if budget else ""
            tds.append(f"<td style='background:{colour}'{title}>{mean:.3f} <span class='std'>± {std:.3f}</span>"
                       f"{knob}{where}{gated}</td>")
        tds.append(f"<td style='text-align:left;white-space:normal'>{html.escape(statement(stress, method))}</td>")
        first = next((p.cell for (_, m), p in stress.default.items() if m == method), None)
        out.append(f"<tr><td class='name'>{method_name(first, method, gated=False)}</td>{''.join(tds)}</tr>")
    out.append("</table>")
    return "\n".join(out)


# --- (b) recovery vs knob -------------------------------------------------------------------------------


def knob_figure(stress: Stress, task: str) -> bytes | None:
    """One panel per knob name; the dotted line is the `random` method's mmcs in the panel's space."""
    by_knob: dict[str, list[figures.Series]] = {}
    spaces: dict[str, str | None] = {}
    for method in stress.methods:
        points = [p for p in stress.sweep.get((task, method), []) if p.mmcs is not None and not math.isnan(p.value)]
        if len(points) < 2:
            continue
        mmcs = [p.mmcs or (math.nan, 0.0) for p in points]
        f1 = [p.cell.mean_std("activity_f1") or (math.nan, 0.0) for p in points]
        name = points[0].knob.split("=", 1)[0]
        spaces.setdefault(name, space_of(points[0].cell))
        by_knob.setdefault(name, []).append(
            (method, [p.value for p in points], [m for m, _ in mmcs], [s for _, s in mmcs], [m for m, _ in f1],
             [s for _, s in f1]))
    if not by_knob:
        return None
    floor = stress.default.get((task, "random"))
    panels = [(name, series, None if floor is None else in_space(floor.cell, "mmcs", spaces[name]))
              for name, series in by_knob.items()]
    return figures.knob_curves(f"{task}: recovery vs sparsity knob (mmcs solid, activity_f1 dashed; mean ± std "
                               "over seeds; dashed grey: 0.9; dotted: random's mmcs)", panels, COVERED)


# --- (c) recovery vs firing probability (stress-zipf) ------------------------------------------------


def feature_recovery(directory: Path) -> dict[int, float] | None:
    """feature index → its best match's similarity in the run's recovery space."""
    try:
        info = json.loads((directory / "matches.json").read_text())
    except (OSError, ValueError):
        return None
    spaces = {m["space"] for m in info["matches"]}
    space = "parameter" if "parameter" in spaces else "activation"
    feature = {m["name"]: m["feature"] for m in info["mechanisms"] if m["space"] == space and m["feature"] is not None}
    best = {f: 0.0 for f in feature.values()}
    for m in info["matches"]:
        if m["space"] == space and m["mechanism"] in feature:
            f = feature[m["mechanism"]]
            best[f] = max(best[f], float(m["similarity"]))
    return best


def feature_probs(directory: Path, task: str) -> np.ndarray | None:
    """The task's `feature_probs()` under the config the run used (config.yaml's task_config)."""
    from mechscope.bench.run import with_task_config
    from mechscope.zoo import TASKS, get_task

    if task not in TASKS:
        return None
    try:
        stored = yaml.safe_load((directory / "config.yaml").read_text())["task_config"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    base = get_task(task)
    task_obj = with_task_config(base, type(base.config).model_validate(stored))
    probs = getattr(task_obj, "feature_probs", None)
    return None if probs is None else np.asarray(probs(), dtype=float).reshape(-1)


def zipf_points(bench: Path, stress: Stress, task: str = ZIPF) -> list[tuple[str, np.ndarray, np.ndarray]]:
    out = []
    for method in stress.methods:
        point = stress.default.get((task, method))
        if point is None:
            continue
        per_seed = [(feature_recovery(d), d) for s in point.cell.seeds
                    if (d := run_dir(bench, task, method, s, point.knob)).exists()]
        found = [(r, d) for r, d in per_seed if r]
        if not found:
            continue
        probs = feature_probs(found[0][1], task)
        if probs is None:
            continue
        feats = sorted(set.intersection(*(set(r) for r, _ in found)))
        feats = [f for f in feats if f < len(probs)]
        sims = np.array([np.mean([r[f] for r, _ in found]) for f in feats])
        out.append((method, probs[feats], sims))
    return out


def rarest_recovered(probs: np.ndarray, sims: np.ndarray) -> str:
    """Going from common to rare features (log-spaced bins): where mean recovery first drops below 0.9."""
    centres, means = figures.binned(probs, sims)
    order = np.argsort(-centres)
    c, m = centres[order], means[order]
    first_bad = next((i for i in range(len(m)) if m[i] < COVERED), None)
    if first_bad is None:
        return f"≥ 0.9 in every bin, down to p ≈ {c[-1]:.3g} (rarest bin mean {m[-1]:.2f})"
    if first_bad == 0:
        return (f"below 0.9 already for the most common features (p ≈ {c[0]:.3g}: {m[0]:.2f}); "
                f"rarest bin (p ≈ {c[-1]:.3g}): {m[-1]:.2f}")
    return (f"≥ 0.9 down to p ≈ {c[first_bad - 1]:.3g}, below from p ≈ {c[first_bad]:.3g} ({m[first_bad]:.2f}); "
            f"rarest bin (p ≈ {c[-1]:.3g}): {m[-1]:.2f}")


def zipf_block(bench: Path, stress: Stress) -> str:
    points = zipf_points(bench, stress)
    if not points:
        return ""
    rows = "".join(f"<tr><td class='name'>{html.escape(m)}</td><td style='text-align:left'>"
                   f"{html.escape(rarest_recovered(p, s))}</td></tr>" for m, p, s in points)
    return (f"<h3>{ZIPF}: recovery per feature vs its firing probability (default knob)</h3>"
            + _img(figures.recovery_vs_probability(points, COVERED), "recovery vs probability")
            + f"<table><tr><th>method</th><th>recovery as features get rarer</th></tr>{rows}</table>")


# --- (d) absorption -------------------------------------------------------------------------------------


def absorption_table(stress: Stress) -> str:
    tasks = [t for t in stress.variants
             if any(p.cell.mean_std("absorption") for (tt, _), p in stress.default.items() if tt == t)]
    if not tasks:
        return ""
    out = ["<h3>Feature absorption (hierarchical truth): how often a child's component takes over its parent's "
           "where both are active; lower is better</h3><table><tr><th>method</th>"
           + "".join(f"<th>{html.escape(t)}<br>default knob</th><th>over knobs</th><th>on data<br>default knob</th>" for t in tasks)
           + "</tr>"]
    for method in stress.methods:
        tds = []
        for task in tasks:
            point = stress.default.get((task, method))
            ms = point.cell.mean_std("absorption") if point else None
            tds.append("<td class='na'>—</td>" if ms is None else
                       f"<td>{ms[0]:.3f} <span class='std'>± {ms[1]:.3f}</span></td>")
            vals = [v[0] for p in stress.sweep.get((task, method), []) if (v := p.cell.mean_std("absorption"))]
            tds.append(f"<td>{min(vals):.3f} – {max(vals):.3f}</td>" if len(vals) > 1 else "<td class='na'>—</td>")
            on_data = point.cell.mean_std("absorption_data") if point else None
            tds.append("<td class='na'>—</td>" if on_data is None else f"<td>{on_data[0]:.3f}</td>")
        out.append(f"<tr><td class='name'>{html.escape(method)}</td>{''.join(tds)}</tr>")
    out.append("</table>")
    return "\n".join(out)


# --- SynthSAEBench: the SAELens-comparable scores ---------------------------------------------------------
SYNTH_METRICS = ("mcc", "uniqueness", "latent_f1", "latent_precision", "latent_recall", "mmcs", "l0", "l0_true")


def synth_table(stress: Stress) -> str:
    """`mcc`, `uniqueness`, per-latent F1 … on the synth-sae-bench variants, as SAELens reports them."""
    tasks = [t for t in stress.variants if t.startswith("synth-sae-bench")]
    out = []
    for task in tasks:
        rows = []
        for method in stress.methods:
            point = stress.default.get((task, method))
            if point is None:
                continue
            tds = "".join("<td class='na'>—</td>" if (ms := point.cell.mean_std(k)) is None else
                          f"<td>{ms[0]:.3f} <span class='std'>± {ms[1]:.3f}</span></td>" for k in SYNTH_METRICS)
            knob = f" <span class='std'>{html.escape(point.knob)}</span>" if point.knob else ""
            rows.append(f"<tr><td class='name'>{html.escape(method)}{knob}</td>{tds}</tr>")
        if rows:
            out.append(f"<h3>{html.escape(task)}: SynthSAEBench scores (SAELens definitions; default knob)</h3><table>"
                       "<tr><th>method</th>" + "".join(f"<th>{k}</th>" for k in SYNTH_METRICS) + "</tr>"
                       + "".join(rows) + "</table>")
    return "\n".join(out)


# --- (e) random-init controls ---------------------------------------------------------------------------
CONTROL_METRICS = ("mmcs", "activity_f1")


def space_of(cell: Cell) -> str | None:
    """The space a method is scored in (its top-level metrics): parameter if it has one."""
    return next((s for s in ("parameter", "activation") if f"spaces.{s}.mmcs" in cell.values), None)


def in_space(cell: Cell, metric: str, space: str | None) -> float | None:
    ms = cell.mean_std(f"spaces.{space}.{metric}") if space else None
    ms = ms or cell.mean_std(metric)
    return None if ms is None else ms[0]


@dataclass
class ControlRow:
    """One method over the (real, control) pairs: per metric, its mean on the real target, on the
    control, and the `random` method's on the control in the same space (the floor)."""

    method: str
    space: str | None
    tasks: list[str]
    values: dict[str, list[tuple[float, float, float]]]

    def gap(self, metric: str) -> float:
        """The largest (control − floor) over the pairs."""
        return max(c - f for _, c, f in self.values[metric])

    def mean(self, metric: str, i: int) -> float:
        return float(np.mean([v[i] for v in self.values[metric]]))

    def nothing_real(self, metric: str) -> bool:
        return bool(self.values.get(metric)) and self.gap(metric) <= CONTROL_MARGIN

    @property
    def verdict(self) -> str:
        if self.method == "oracle":
            return "calibration: handed the original target's truth, so it scores on the control by construction"
        shown = [m for m in CONTROL_METRICS if self.nothing_real(m)]
        missed = [f"{m} (control − floor up to {self.gap(m):+.3f})" for m in CONTROL_METRICS
                  if self.values.get(m) and m not in shown]
        if shown:
            line = f"nothing real here by {' and '.join(shown)}"
            return line + (f"; not by {', '.join(missed)}" if missed else "")
        return "control scores above the random floor on " + ", ".join(missed) + ": recovery credited where nothing is"


def control_rows(stress: Stress) -> list[ControlRow]:
    out = []
    for method in stress.methods:
        row = ControlRow(method, None, [], {m: [] for m in CONTROL_METRICS})
        for real, control in stress.controls:
            r, c, f = (stress.default.get((t, m)) for t, m in ((real, method), (control, method), (control, "random")))
            if r is None or c is None or f is None:
                continue
            space = space_of(c.cell)
            triple = {m: (in_space(r.cell, m, space), in_space(c.cell, m, space), in_space(f.cell, m, space))
                      for m in CONTROL_METRICS}
            if triple["mmcs"][0] is None or any(v is None for v in triple["mmcs"]):
                continue
            row.space = space
            row.tasks.append(control)
            for m, (a, b, fl) in triple.items():
                if a is not None and b is not None and fl is not None:
                    row.values[m].append((a, b, fl))
        if row.tasks:
            out.append(row)
    return out


def control_table(stress: Stress) -> str:
    rows = control_rows(stress)
    if not rows:
        return ""
    heads = "".join(f"<th>{m}<br>real</th><th>{m}<br>control</th><th>{m}<br>random floor</th>" for m in CONTROL_METRICS)
    out = [f"<h3>Random-init controls: each method on the real target vs on its random-weight control vs the "
           f"<code>random</code> method on that control (the floor, in the method's own space), mean over "
           f"{len(rows[0].tasks)} control(s), default knob. \"Nothing real here\": the control is within "
           f"{CONTROL_MARGIN} of the floor on every control. (oracle is handed the original truth: it is the "
           "calibration, and scores on the control too.)</h3>",
           f"<table><tr><th>method</th><th>space</th>{heads}<th style='text-align:left'>verdict</th></tr>"]
    for r in rows:
        tds = "".join(f"<td>{r.mean(m, 0):.3f}</td><td>{r.mean(m, 1):.3f}</td><td>{r.mean(m, 2):.3f}</td>"
                      if r.values.get(m) else "<td class='na' colspan='3'>—</td>" for m in CONTROL_METRICS)
        out.append(f"<tr><td class='name'>{html.escape(r.method)}</td><td>{r.space or ''}</td>{tds}"
                   f"<td style='text-align:left;white-space:normal'>{html.escape(r.verdict)}</td></tr>")
    out.append("</table>")
    detail = ["<details><summary class='note'>per control</summary><table><tr><th>control</th><th>method</th>"
              + "".join(f"<th>{m} real</th><th>{m} control</th><th>{m} floor</th>" for m in CONTROL_METRICS)
              + "</tr>"]
    for r in rows:
        for i, t in enumerate(r.tasks):
            tds = "".join(f"<td>{v[0]:.3f}</td><td>{v[1]:.3f}</td><td>{v[2]:.3f}</td>"
                          if len(r.values[m]) == len(r.tasks) and (v := r.values[m][i]) else "<td colspan='3'></td>"
                          for m in CONTROL_METRICS)
            detail.append(f"<tr><td class='name'>{html.escape(t)}</td><td class='name'>{html.escape(r.method)}</td>"
                          f"{tds}</tr>")
    detail.append("</table></details>")
    return "\n".join(out + detail)


# --- the section ----------------------------------------------------------------------------------------


def _img(png_bytes: bytes, alt: str) -> str:
    return f"<img alt='{html.escape(alt)}' src='{figures.data_uri(png_bytes)}'>"


def stress_section(bench: Path, rows: list[dict[str, Any]]) -> str:
    """The whole section; "" when the bench has no stress rows."""
    stress = organise(rows)
    if not stress.default:
        return ""
    parts = ["<h2 id='stress'>Stress tests</h2>",
             "<p class='note'>Each variant breaks one assumption of sparse dictionary learning; every number "
             "is the mean over seeds. The default knob is the preset's middle setting; red cells: mean mmcs "
             f"&lt; 0.9. Grey cells: no verdict — the method is <b>not converged at this budget</b> (mean mmcs "
             f"&lt; {BAR} on {BASELINE}, the baseline, at the same samples seen), so a low score there says the "
             "budget is too small, not that the variant breaks the method.</p>",
             "<h3>Where each method's recovery drops below 0.9 mmcs</h3>", breakdown_table(stress),
             control_table(stress), absorption_table(stress), zipf_block(bench, stress), synth_table(stress),
             spd_notes_block(stress.variants, {m for _, m in stress.default})]
    curves = [(t, fig) for t in stress.variants if (fig := knob_figure(stress, t)) is not None]
    if curves:
        parts.append("<h3>Recovery vs sparsity knob</h3>")
        parts.extend(_img(fig, f"{t} recovery vs knob") for t, fig in curves)
    return "\n".join(p for p in parts if p)
