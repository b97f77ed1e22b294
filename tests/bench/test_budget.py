"""Budgets in samples seen: each preset gives every method of a task the same samples, recorded."""

from __future__ import annotations

from pathlib import Path

import pytest

from mechscope.bench.budget import Budget, budget_sets, samples_seen
from mechscope.bench.grid import plan_bench, run_bench
from mechscope.bench.presets import PRESETS, Preset
from mechscope.bench.results import RESULTS, read_results
from mechscope.decompose import METHODS, get_method
from mechscope.decompose.registry import is_peer


def _samples(cell: object) -> int | None:
    config = cell.cell.method_config  # type: ignore[attr-defined]
    return samples_seen(config) if getattr(config, "batch_size", None) is not None else None


def test_budget_sets_steps_from_each_methods_batch() -> None:
    budget = Budget("*", "*", 10_240)
    assert budget_sets(budget, get_method("sae-topk").Cfg()) == ("method.batch_size=1024", "method.steps=10")
    assert budget_sets(budget, get_method("sae-topk").Cfg(batch_size=256)) == ("method.steps=40",)
    assert budget_sets(budget, get_method("oracle").Cfg()) == ()  # no steps: nothing to budget
    assert budget_sets(Budget("*", "*", 1), get_method("sae-topk").Cfg(batch_size=256)) == ("method.steps=1",)
    assert samples_seen(get_method("sae-topk").Cfg(steps=7, batch_size=3)) == 21
    assert samples_seen(get_method("oracle").Cfg()) is None
    with pytest.raises(ValueError, match="samples"):
        Budget("*", "*", 0)


@pytest.mark.parametrize("name", ["quick", "stress", "peers", "full"])
def test_every_preset_gives_each_method_of_a_task_the_same_samples(name: str, tmp_path: Path) -> None:
    plan = plan_bench(tmp_path, name, seeds=1)
    by_task: dict[str, set[int]] = {}
    for c in plan.cells:
        if c.cell.na_reason is None and (n := _samples(c)) is not None:
            by_task.setdefault(c.key[0], set()).add(n)
    assert by_task, name
    for task, budgets in by_task.items():
        assert len(budgets) == 1, (name, task, budgets)  # every batch divides the preset's samples


def test_user_set_wins_and_the_column_records_what_ran(tmp_path: Path) -> None:
    preset = Preset("budgeted", "test", ("stress-iid",), seeds=1, budgets=(Budget("*", "*", 30 * 256, 256),))
    plan = plan_bench(tmp_path, preset, methods=["sae-topk", "sae-relu", "oracle"], sets=["method.steps=20"])
    steps = {c.key[1]: getattr(c.cell.method_config, "steps", None) for c in plan.cells}
    assert steps == {"sae-topk": 20, "sae-relu": 20, "oracle": None}
    plan = plan_bench(tmp_path, preset, methods=["sae-topk", "oracle"])
    run_bench(plan, workers=1, show=False)
    rows = {r["method"]: r for r in read_results(tmp_path / RESULTS)}
    assert rows["sae-topk"]["samples_seen"] == 30 * 256 and rows["oracle"]["samples_seen"] is None
    assert rows["sae-topk"]["family"] == "activation" and rows["sae-topk"]["peer"] is False
    assert rows["sae-topk"]["sizing"] == "blind"
    assert rows["sae-topk"]["converged"] is (rows["sae-topk"]["mmcs"] >= 0.95)  # stress-iid: its own baseline
    assert rows["oracle"]["converged"] is None


def test_peers_preset_runs_each_peer_at_both_presets_beside_ours(tmp_path: Path) -> None:
    peers = [m for m in PRESETS["peers"].methods if m in METHODS and is_peer(m)]
    if not peers:
        pytest.skip("no peer library installed")
    plan = plan_bench(tmp_path, "peers", seeds=1, tasks=["tms-40-10"])
    cells = {(c.key[1], c.key[3]): c for c in plan.cells}
    for peer in peers:
        for preset in ("default", "short"):
            cell = cells[(peer, f"preset={preset}")]
            assert cell.knob.default is None and cell.cell.method_config.preset == preset
            assert _samples(cell) == _samples(cells[("sae-topk", "")]) == 1_536_000
        row = cells[(peer, "preset=short")].row({"task": "tms-40-10", "method": peer, "seed": 0, "target_seed": 0})
        assert row["peer"] is True and row["peer_of"] and row["peer_of"].startswith("sae-")
