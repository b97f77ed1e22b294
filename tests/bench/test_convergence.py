"""The convergence gate (pure): a stress verdict only where the method converged on stress-iid at
that budget; otherwise "not converged at this budget" with the baseline beside it."""

from __future__ import annotations

from typing import Any

from mechscope.bench.convergence import BAR, baseline_gates, converged, gate_for, mark_converged
from mechscope.report.leaderboard import leaderboard
from mechscope.report.stress import breakdown_table, organise, statement


def row(task: str, method: str, mmcs: float, seed: int = 0, samples: int | None = 1_536_000, knob: str = "",
        default: bool | None = None, **more: Any) -> dict[str, Any]:
    return {"task": task, "method": method, "seed": seed, "target_seed": seed, "status": "ok", "mmcs": mmcs,
            "activity_f1": 0.5, "knob": knob, "knob_default": default, "samples_seen": samples,
            "family": "calibration" if method in ("oracle", "random") else "activation", **more}


def test_the_gate_is_the_mean_baseline_against_the_bar() -> None:
    assert converged([0.96, 0.95]) and converged([BAR])
    assert not converged([0.99, 0.90]) and not converged([]) and not converged([float("nan")])


def test_gate_for_matches_budget_and_knob() -> None:
    rows = [row("stress-iid", "sae-relu", 0.90, samples=1_000), row("stress-iid", "sae-relu", 0.97, samples=4_000),
            row("stress-iid", "sae-topk", 0.99, knob="k=2", default=True),
            row("stress-iid", "sae-topk", 0.91, knob="k=4", default=False)]
    gates = baseline_gates(rows)
    assert gate_for(gates, "sae-relu", 1_000).converged is False
    assert gate_for(gates, "sae-relu", 4_000).baseline == 0.97
    assert gate_for(gates, "sae-relu", 8_000).baseline == 0.97  # converged with fewer samples counts
    assert gate_for(gates, "sae-relu", 500).converged is None  # only a bigger budget: no baseline
    assert gate_for(gates, "sae-topk", 1_536_000, "k=4").converged is False  # the same knob on iid
    assert gate_for(gates, "sae-topk", 1_536_000, "k=3").baseline == 0.99  # no k=3 on iid: its default
    assert gate_for(gates, "sae-jumprelu", 1_536_000).baseline is None


def test_mark_converged_fills_stress_rows_of_trained_methods_only() -> None:
    rows = [row("stress-iid", "sae-relu", 0.90), row("stress-iid", "sae-relu", 0.92, seed=1),
            row("stress-dense", "sae-relu", 0.7), row("stress-dense", "sae-topk", 0.8),
            row("stress-iid", "sae-topk", 0.99), row("stress-dense", "random", 0.1),
            row("tms-40-10", "sae-relu", 0.99)]
    flags = {(r["task"], r["method"], r["seed"]): r["converged"] for r in mark_converged(rows)}
    assert flags[("stress-dense", "sae-relu", 0)] is False and flags[("stress-iid", "sae-relu", 1)] is False
    assert flags[("stress-dense", "sae-topk", 0)] is True
    assert flags[("stress-dense", "random", 0)] is None and flags[("tms-40-10", "sae-relu", 0)] is None


def _stress_rows() -> list[dict[str, Any]]:
    return [row("stress-iid", "sae-relu", 0.86), row("stress-dense", "sae-relu", 0.70),
            row("stress-iid", "sae-topk", 0.99), row("stress-dense", "sae-topk", 0.80),
            row("stress-hierarchical", "sae-topk", 0.93), row("stress-dense", "random", 0.13),
            row("stress-iid", "random", 0.13)]


def test_verdicts_are_gated_in_the_stress_table() -> None:
    stress = organise(_stress_rows())
    assert statement(stress, "sae-topk") == "below 0.9 on stress-dense (default)"
    assert statement(stress, "sae-relu") == "not converged at this budget (stress-iid mmcs 0.860 < 0.95): no verdict"
    assert statement(stress, "random") == "below 0.9 on stress-iid (default); stress-dense (default)"  # not gated
    table = breakdown_table(stress)
    relu = next(line for line in table.splitlines() if ">sae-relu<" in line)
    assert "not converged at this budget (stress-iid 0.860)" in relu and "#e6e6e6" in relu
    assert "not converged" not in next(line for line in table.splitlines() if ">sae-topk<" in line)


def test_leaderboard_marks_not_converged_oracle_sized_and_peers() -> None:
    rows = [*_stress_rows(), row("stress-dense", "sae-batchtopk", 0.8, sizing="oracle"),
            row("stress-iid", "sae-batchtopk", 0.99, sizing="oracle"),
            row("stress-iid", "saelens-topk", 0.9, knob="preset=short", peer=True, peer_of="sae-topk"),
            row("stress-iid", "saelens-topk", 0.8, knob="preset=default", peer=True, peer_of="sae-topk"),
            row("stress-zipf", "sae-topk", 0.9, samples=100)]
    text = leaderboard(rows)
    header, dense, _hierarchical, iid, zipf, *legend = text.splitlines()
    assert header.split()[1:] == ["random", "sae-batchtopk", "sae-relu", "sae-topk",
                                  "saelens-topk@preset=default†", "saelens-topk@preset=short†"]
    assert dense.split()[1:4] == ["0.13/0.50", "0.80/0.50*", "0.70/0.50°"]
    assert iid.split()[3] == "0.86/0.50°" and iid.split()[5:] == ["0.80/0.50°", "0.90/0.50°"]
    assert zipf.split()[4] == "0.90/0.50?"  # only a stress-iid baseline at a bigger budget
    assert any("° not converged at this budget" in line and "sae-relu 0.86" in line for line in legend)
    assert any(line.startswith("? no stress-iid baseline") for line in legend)
