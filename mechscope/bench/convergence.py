"""The convergence gate: a stress verdict "method M breaks on variant V" is made only where M
recovers the easy case — mean `mmcs` ≥ `BAR` on `stress-iid` (independent features, the
baseline) at the same budget. Below the bar a low score on V says "this budget is too small for
M", not "V breaks M", and the report shows "not converged at this budget" with the baseline.

    gates = baseline_gates(rows)                         # rows of results.parquet
    g = gate_for(gates, "sae-relu", samples_seen=1_536_000, knob="l1_noise_frac=0.5")
    g.converged, g.baseline                               # False, 0.90

The gate is per reported method (`method_label`) and budget (`samples_seen`), at the variant's
knob where stress-iid ran that knob value too, else at the iid default knob. A baseline measured
with fewer samples than the variant's counts (more data does not un-converge a method); one with
more does not. Calibrations (`oracle`, `random`) are not gated: they do not train. Pure: rows in,
gates out; `mark_converged` writes the `converged` column of the stress rows (DESIGN.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mechscope.bench.results import method_label

BASELINE = "stress-iid"
BAR = 0.95
"""Mean mmcs on the baseline a method must reach before its stress verdicts count."""
CONTROL = "-control"
CALIBRATIONS = ("oracle", "random")


def is_stress(task: str) -> bool:
    """A stress-preset row whose verdict is gated: the variants, synth-sae-bench, every control."""
    return task.startswith(("stress-", "synth-sae-bench")) or task.endswith(CONTROL)


def converged(baseline_mmcs: Sequence[float]) -> bool:
    """The gate itself: the mean baseline mmcs over seeds reaches `BAR` (False with no seeds)."""
    values = [v for v in baseline_mmcs if not math.isnan(v)]
    return bool(values) and sum(values) / len(values) >= BAR


@dataclass(frozen=True)
class Gate:
    """One method's baseline at one budget and knob."""

    method: str
    baseline: float | None
    """Mean stress-iid mmcs over seeds; None where the bench has no such baseline."""
    samples_seen: int | None = None
    knob: str = ""
    seeds: int = 0

    @property
    def converged(self) -> bool | None:
        """True / False by the bar; None when there is no baseline to judge by."""
        return None if self.baseline is None else self.baseline >= BAR

    def note(self) -> str:
        """The line the report prints instead of a verdict ("" when converged)."""
        if self.baseline is None:
            return f"no {BASELINE} baseline at this budget"
        if self.converged:
            return ""
        return f"not converged at this budget (stress-iid mmcs {self.baseline:.3f} < {BAR})"


GateKey = tuple[str, str, int | None]
"""(method label, knob, samples_seen)."""


def _ok_mmcs(row: Mapping[str, Any]) -> float | None:
    value = row.get("mmcs")
    if row.get("status", "ok") != "ok" or not isinstance(value, int | float) or math.isnan(float(value)):
        return None
    return float(value)


def _is_calibration(row: Mapping[str, Any]) -> bool:
    return row.get("family") == "calibration" or str(row.get("method")) in CALIBRATIONS


def baseline_gates(rows: Iterable[Mapping[str, Any]]) -> dict[GateKey, Gate]:
    """Every (method, knob, budget) point measured on stress-iid, with its default-knob twin under
    knob "" (so a variant whose knob iid never ran falls back to the iid default)."""
    values: dict[GateKey, list[float]] = {}
    for row in rows:
        mmcs = _ok_mmcs(row)
        if row["task"] != BASELINE or mmcs is None or _is_calibration(row):
            continue
        label, knob, budget = method_label(row), str(row.get("knob") or ""), row.get("samples_seen")
        values.setdefault((label, knob, budget), []).append(mmcs)
        if knob and row.get("knob_default"):
            values.setdefault((label, "", budget), []).append(mmcs)
    return {key: Gate(key[0], sum(v) / len(v), key[2], key[1], len(v)) for key, v in values.items()}


def gate_for(gates: Mapping[GateKey, Gate], method: str, samples_seen: int | None = None, knob: str = "") -> Gate:
    """The gate of a variant's point: stress-iid at the same knob (else the default knob), at the
    same budget or the largest smaller one; a Gate with no baseline when there is none."""
    for k in dict.fromkeys((knob, "")):
        points = [g for (m, kk, _), g in gates.items() if m == method and kk == k]
        same = [g for g in points if g.samples_seen == samples_seen]
        if same:
            return same[0]
        if samples_seen is not None:
            smaller = [g for g in points if g.samples_seen is not None and g.samples_seen <= samples_seen]
            if smaller:
                return max(smaller, key=lambda g: g.samples_seen or 0)
    return Gate(method, None, samples_seen, knob)


def mark_converged(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows with `converged` set on every ok stress row of a trained method (None elsewhere)."""
    gates = baseline_gates(rows)
    out = []
    for row in rows:
        flag = None
        if is_stress(str(row["task"])) and _ok_mmcs(row) is not None and not _is_calibration(row):
            flag = gate_for(gates, method_label(row), row.get("samples_seen"), str(row.get("knob") or "")).converged
        out.append({**row, "converged": flag})
    return out
