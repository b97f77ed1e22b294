"""Per-bit ablation specificity (issue 16): the pure scoring functions, and SPD on a trained GRU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mechscope.dynamics.spd_memories import bit_sets, memory_points, per_bit_specificity


def changes(rows: list[list[list[int]]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.bool)


def test_a_set_that_changes_only_its_bit_is_a_witness() -> None:
    # 3 sets × 4 memories × 2 bits
    c = changes([
        [[1, 0], [1, 0], [0, 0], [0, 0]],  # changes bit 0 in two memories, nothing else: witness for bit 0
        [[0, 1], [1, 0], [0, 0], [0, 0]],  # changes both bits: no witness
        [[0, 0], [0, 0], [0, 0], [0, 0]],  # changes nothing
    ])
    s = per_bit_specificity(c)
    assert s["specific"] == [True, False] and s["specificity"] == 0.5
    assert s["witness"] == [0, None] and s["coverage"] == [0.5, 0.0]


def test_the_widest_witness_gives_the_coverage() -> None:
    c = changes([
        [[1, 0], [0, 0]],
        [[1, 0], [1, 0]],  # wider
        [[0, 1], [0, 1]],
    ])
    s = per_bit_specificity(c)
    assert s["witness"] == [1, 2] and s["coverage"] == [1.0, 1.0] and s["specificity"] == 1.0


def test_no_change_anywhere_scores_zero() -> None:
    s = per_bit_specificity(torch.zeros(5, 8, 3, dtype=torch.bool))
    assert s["specificity"] == 0.0 and s["mean_coverage"] == 0.0 and s["specific"] == [False] * 3
    with pytest.raises(ValueError, match="expected \\[sets, memories, bits\\]"):
        per_bit_specificity(torch.zeros(5, 3, dtype=torch.bool))


def test_bit_sets_keep_components_that_touch_one_bit() -> None:
    c = changes([
        [[1, 0, 0]],
        [[1, 1, 0]],
        [[0, 0, 1]],
        [[1, 0, 0]],
    ])
    assert bit_sets(c) == [[0, 3], [], [2]]


def test_memory_points_take_the_first_stable_point_of_each_memory() -> None:
    mem = torch.tensor([[-1.0], [1.0]], dtype=torch.float64)
    pts = torch.tensor([[0.9], [-1.1], [1.2], [-0.95]], dtype=torch.float64)
    stable = torch.tensor([True, False, True, True])
    got, which = memory_points(pts, stable, mem, lambda h: h)
    assert got.flatten().tolist() == [-0.95, 0.9] and which.flatten().tolist() == [-1.0, 1.0]


@pytest.mark.slow
def test_spd_on_the_flipflop_gru_finds_bit_specific_components(tmp_path: Path) -> None:
    """Issue 16: SPD on the 3-bit GRU's step map is faithful at every memory (nothing changes
    unablated) and, on seed 0, two of the three bits have a subcomponent whose ablation changes
    that bit and no other (RESULTS.md's table); the report draws the importance map."""
    from types import SimpleNamespace

    from mechscope.dynamics.command import run_fixed_points
    from mechscope.report.data import run_dir
    from mechscope.report.dynamics import dynamics_section

    d = run_dir(tmp_path, "flipflop-3bit", "fixed-points", 0)
    m = run_fixed_points("flipflop-3bit", 0, None, ["spd=true"], d)
    assert m["n_matched"] == 8 and m["spd_memories_scored"] == 8
    assert m["spd_unablated_changes"] == 0
    assert m["spd_per_bit_specificity"] >= 2 / 3
    cells = {("flipflop-3bit", "fixed-points"): SimpleNamespace(seeds=[0], knob="")}
    assert "SPD importance at fixed points" in dynamics_section(tmp_path, "flipflop-3bit", ["fixed-points"], cells)
