"""The verdict in the terminal: a short task × method table of headline scores.

    print(leaderboard(read_results(out)))      # rows of results.parquet (or metrics.json bodies)

One cell per (task, method): mean mmcs / activity_f1 over the ok seeds at the default knob.
Peers (another library's trainer, `MethodSpec.peer`) sit right after the variant they mirror
(`peer_of`), marked `†`; oracle-sized cells (`sizing=oracle`, a row key `sizing` or a method
name suffix `@sizing=oracle`) are marked `*`; `n/a` and `failed` cells say so. Pure: rows in,
text out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not math.isnan(float(value)) else None


def _cell(rows: list[Mapping[str, Any]]) -> str:
    ok = [r for r in rows if r.get("status", "ok") == "ok"]
    if not ok:
        return rows[0].get("status", "–") if rows else "–"
    parts = []
    for key in ("mmcs", "activity_f1"):
        values = [v for v in (_num(r.get(key)) for r in ok) if v is not None]
        parts.append(f"{sum(values) / len(values):.2f}" if values else "–")
    oracle = any(r.get("sizing") == "oracle" or "sizing=oracle" in str(r.get("knob", "")) for r in ok)
    return "/".join(parts) + ("*" if oracle else "")


def order_methods(methods: Iterable[str], peer_of: Mapping[str, str]) -> list[str]:
    """Own methods sorted, each followed by its peers (sorted); orphan peers last."""
    methods = sorted(set(methods))
    own = [m for m in methods if m not in peer_of]
    out: list[str] = []
    for m in own:
        out += [m, *sorted(p for p in methods if peer_of.get(p) == m)]
    return out + [m for m in methods if m not in out]


def leaderboard(
    rows: Iterable[Mapping[str, Any]], peer_of: Mapping[str, str] | None = None, width: int = 11
) -> str:
    """A task × method text table of `mmcs/activity_f1` (means over seeds at the default knob)."""
    peer_of = dict(peer_of or {})
    rows = [r for r in rows if r.get("knob_default") in (None, True)]
    tasks = sorted({str(r["task"]) for r in rows})
    methods = order_methods((str(r["method"]) for r in rows), peer_of)
    if not tasks or not methods:
        return "(no results)"
    label = {m: m + ("†" if m in peer_of else "") for m in methods}
    first = max(len("task"), *(len(t) for t in tasks))
    cols = [max(width, len(label[m])) for m in methods]
    lines = [
        "  ".join([f"{'task':<{first}}", *(f"{label[m]:>{w}}" for m, w in zip(methods, cols, strict=True))])
    ]
    for task in tasks:
        cells = [_cell([r for r in rows if r["task"] == task and r["method"] == m]) for m in methods]
        lines.append(
            "  ".join([f"{task:<{first}}", *(f"{c:>{w}}" for c, w in zip(cells, cols, strict=True))])
        )
    lines.append(
        "cells: mmcs/activity_f1, mean over seeds; † peer (another library's trainer); * oracle-sized"
    )
    return "\n".join(lines)
