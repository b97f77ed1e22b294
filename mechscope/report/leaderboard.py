"""The verdict in the terminal: a short task × method table of headline scores.

    print(leaderboard(read_results(out)))      # rows of results.parquet (or metrics.json bodies)

One cell per (task, method): mean mmcs / activity_f1 over the ok seeds at the default knob (a
split sweep's values — a peer at `preset=default` and `preset=short` — are methods of their own,
`method_label`). Peers (another library's trainer: a row's `peer_of` column, or the `peer_of`
mapping given) sit right after the variant they mirror, marked `†`; oracle-sized cells
(`sizing=oracle`) are marked `*`; on stress rows a method that does not reach the convergence bar
on stress-iid at that budget (`bench/convergence.py`) is marked `°` — no verdict there, the
baseline number is in the legend — and `?` where the bench has no such baseline; `n/a` and
`failed` cells say so. Pure: rows in, text out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from mechscope.bench.convergence import BAR, BASELINE, baseline_gates, gate_for, is_stress, mark_converged
from mechscope.bench.results import method_label


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not math.isnan(float(value)) else None


def _is_default(row: Mapping[str, Any]) -> bool:
    return not row.get("knob") or row.get("knob_default") is not False


def _cell(rows: list[Mapping[str, Any]]) -> str:
    ok = [r for r in rows if r.get("status", "ok") == "ok"]
    if not ok:
        return rows[0].get("status", "–") if rows else "–"
    parts = []
    for key in ("mmcs", "activity_f1"):
        values = [v for v in (_num(r.get(key)) for r in ok) if v is not None]
        parts.append(f"{sum(values) / len(values):.2f}" if values else "–")
    oracle = any(r.get("sizing") == "oracle" or "sizing=oracle" in str(r.get("knob", "")) for r in ok)
    gated = [r.get("converged") for r in ok if is_stress(str(r["task"])) and r.get("family") != "calibration"
             and str(r["method"]) not in ("oracle", "random")]
    mark = "°" if False in gated else ("?" if gated and all(g is None for g in gated) else "")
    return "/".join(parts) + ("*" if oracle else "") + mark


def order_methods(methods: Iterable[str], peer_of: Mapping[str, str]) -> list[str]:
    """Own methods sorted, each followed by its peers (sorted); orphan peers last."""
    methods = sorted(set(methods))
    own = [m for m in methods if m not in peer_of]
    out: list[str] = []
    for m in own:
        out += [m, *sorted(p for p in methods if peer_of.get(p) == m)]
    return out + [m for m in methods if m not in out]


def _baselines(rows: list[dict[str, Any]], labels: list[str]) -> str:
    """The legend's baseline numbers of the methods marked `°`."""
    gates = baseline_gates(rows)
    parts = []
    for label in labels:
        budgets = {r.get("samples_seen") for r in rows if method_label(r) == label and r.get("converged") is False}
        for budget in sorted(budgets, key=lambda b: b or 0):
            gate = gate_for(gates, label, budget)
            if gate.baseline is not None:
                at = f" at {budget:,} samples" if budget else ""
                parts.append(f"{label} {gate.baseline:.2f}{at}")
    return ", ".join(parts)


def leaderboard(
    rows: Iterable[Mapping[str, Any]], peer_of: Mapping[str, str] | None = None, width: int = 11
) -> str:
    """A task × method text table of `mmcs/activity_f1` (means over seeds at the default knob)."""
    every = mark_converged([dict(r) for r in rows])
    shown = [r for r in every if _is_default(r)]
    by_label: dict[str, list[dict[str, Any]]] = {}
    for r in shown:
        by_label.setdefault(method_label(r), []).append(r)
    given = dict(peer_of or {})
    peers = {label: str(own) for label, rs in by_label.items()
             if (own := rs[0].get("peer_of") or given.get(str(rs[0]["method"])) or given.get(label))}
    tasks = sorted({str(r["task"]) for r in shown})
    methods = order_methods(by_label, peers)
    if not tasks or not methods:
        return "(no results)"
    label = {m: m + ("†" if m in peers else "") for m in methods}
    first = max(len("task"), *(len(t) for t in tasks))
    cols = [max(width, len(label[m])) for m in methods]
    lines = [
        "  ".join([f"{'task':<{first}}", *(f"{label[m]:>{w}}" for m, w in zip(methods, cols, strict=True))])
    ]
    grid = {task: [_cell([r for r in by_label[m] if r["task"] == task]) for m in methods] for task in tasks}
    for task, cells in grid.items():
        lines.append(
            "  ".join([f"{task:<{first}}", *(f"{c:>{w}}" for c, w in zip(cells, cols, strict=True))])
        )
    lines.append(
        "cells: mmcs/activity_f1, mean over seeds; † peer (another library's trainer); * oracle-sized"
    )
    marks = {c[-1] for cells in grid.values() for c in cells if c}
    if "°" in marks:
        unconverged = [m for m in methods if any(r.get("converged") is False for r in by_label[m])]
        lines.append(f"° not converged at this budget (mean mmcs < {BAR} on {BASELINE}; no stress verdict): "
                     + (_baselines(every, unconverged) or ", ".join(unconverged)))
    if "?" in marks:
        lines.append(f"? no {BASELINE} baseline at this budget in the bench: no stress verdict")
    return "\n".join(lines)
