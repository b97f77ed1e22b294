"""The finder on maps with known answers: exact fixed points, saddles, slow points, errors."""

import pytest
import torch
from torch import Tensor

from mechscope.dynamics.finder import (
    FinderConfig,
    deduplicate,
    find_fixed_points,
    speed,
)
from mechscope.dynamics.linearize import classify, jacobians, linearize
from mechscope.dynamics.wrappers import StepFunction

F64 = torch.float64


def bistable() -> StepFunction:
    """h' = h + 0.3 (h − h³) per coordinate in 2-D: stable at (±1, ±1), saddles at (0, ±1),
    (±1, 0), a source at 0 — every point exact."""

    def fn(h: Tensor, u: Tensor) -> Tensor:
        return h + 0.3 * (h - h**3) + u

    return StepFunction(fn, 2, 2, 2, (0, 2))


def grid_states() -> Tensor:
    x = torch.linspace(-1.5, 1.5, 13, dtype=F64)
    return torch.cartesian_prod(x, x)  # (169, 2)


def test_finds_all_nine_points_of_a_bistable_map() -> None:
    step = bistable()
    cfg = FinderConfig(n_starts=256, max_iters=300)
    fp = find_fixed_points(step, grid_states(), torch.zeros(2), cfg, torch.Generator().manual_seed(0))
    assert bool(fp.is_fixed.all())
    assert fp.points.shape[0] == 9
    kinds = {tuple(p.round().tolist()): k for p, k in zip(fp.points, fp.kinds, strict=True)}
    assert sorted(kinds.values()).count("stable") == 4
    assert kinds[(0.0, 0.0)] == "unstable"
    assert kinds[(1.0, 0.0)] == "saddle" and kinds[(0.0, -1.0)] == "saddle"
    assert kinds[(1.0, 1.0)] == "stable"
    # Newton takes every point to machine precision
    assert float(fp.q.max()) < 1e-28
    assert float((fp.points.abs() - fp.points.abs().round()).abs().max()) < 1e-12


def test_same_seed_same_points() -> None:
    step, cfg = bistable(), FinderConfig(n_starts=64, max_iters=100)
    a = find_fixed_points(step, grid_states(), torch.zeros(2), cfg, torch.Generator().manual_seed(3))
    b = find_fixed_points(step, grid_states(), torch.zeros(2), cfg, torch.Generator().manual_seed(3))
    assert torch.equal(a.points, b.points)


def test_nothing_found_reports_best_q() -> None:
    """h' = h + 1 has no fixed point: nothing is kept and the best q (0.5 per dim) is reported."""
    step = StepFunction(lambda h, u: h + 1.0, 2, 1, 2, (0, 2))
    cfg = FinderConfig(n_starts=16, max_iters=50, newton_steps=3)
    fp = find_fixed_points(step, grid_states(), torch.zeros(1), cfg, torch.Generator().manual_seed(0))
    assert fp.points.shape[0] == 0
    assert fp.best_q == pytest.approx(1.0)


def test_wrong_state_or_input_size_is_a_clear_error() -> None:
    step = bistable()
    with pytest.raises(ValueError, match="state has size 2"):
        find_fixed_points(step, torch.zeros(5, 3, dtype=F64), torch.zeros(2), FinderConfig(), torch.Generator())
    with pytest.raises(ValueError, match="inputs of size 2"):
        find_fixed_points(step, grid_states(), torch.zeros(3), FinderConfig(), torch.Generator())


def test_slow_points_are_kept_apart_from_fixed_points() -> None:
    """h' = h + 0.1 (h² + 1e-3)·e: no fixed point, a slow region near h = 0 with q = ½(1e-4)²."""

    def fn(h: Tensor, u: Tensor) -> Tensor:
        return h + 0.1 * (h**2 + 1e-3)

    step = StepFunction(fn, 1, 1, 1, (0, 1))
    states = torch.linspace(-0.5, 0.5, 50, dtype=F64)[:, None]
    cfg = FinderConfig(n_starts=32, max_iters=400, q_slow=1e-6, dedup_tol=0.05)
    fp = find_fixed_points(step, states, torch.zeros(1), cfg, torch.Generator().manual_seed(0))
    assert fp.points.shape[0] >= 1
    assert not bool(fp.is_fixed.any())
    assert float(fp.points.abs().max()) < 0.05
    assert speed(step, fp.points, torch.zeros(fp.points.shape[0], 1)).max() < 1e-6


def test_deduplicate_keeps_lowest_q_per_cluster() -> None:
    pts = torch.tensor([[0.0], [1e-5], [1.0], [1.0 + 1e-5]], dtype=F64)
    q = torch.tensor([1e-3, 1e-9, 1e-9, 1e-3], dtype=F64)
    assert sorted(deduplicate(pts, q, 1e-3).tolist()) == [1, 2]


def test_linearize_classifies_by_the_unit_circle() -> None:
    rot = torch.tensor([[0.0, -1.2], [1.2, 0.0]], dtype=F64)  # eigenvalues ±1.2i: a rotating source
    jac = torch.stack(
        [
            torch.diag(torch.tensor([0.5, 0.9], dtype=F64)),
            torch.diag(torch.tensor([1.5, 0.9], dtype=F64)),
            rot,
            torch.diag(torch.tensor([0.9995, 0.5], dtype=F64)),
            torch.diag(torch.tensor([0.9985, 0.5], dtype=F64)),
        ]
    )
    lin = linearize(jac)
    assert lin.kinds == ["stable", "saddle", "unstable", "marginal", "stable"]
    assert lin.rotation.tolist() == [False, False, True, False, False]
    assert lin.n_marginal_dims.tolist() == [0, 0, 0, 1, 0]
    assert lin.n_line_dims.tolist() == [0, 0, 0, 1, 0] and int(lin.n_ring_dims.sum()) == 0
    ring = linearize(torch.tensor([[[0.0, -1.0], [1.0, 0.0]]], dtype=F64))  # λ = ±i, on the circle
    assert ring.kinds == ["marginal"] and ring.n_ring_dims.tolist() == [2]
    assert classify(0, 3, 3) == "stable" and classify(1, 2, 3) == "saddle"


def test_jacobians_match_autograd() -> None:
    w = torch.randn(4, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    step = StepFunction(lambda h, u: torch.tanh(h @ w.T + u), 4, 4, 4, (0, 4))
    h = torch.randn(3, 4, generator=torch.Generator().manual_seed(1), dtype=F64)
    u = torch.zeros(3, 4, dtype=F64)
    jac = jacobians(step, h, u)
    for b in range(3):
        ref = torch.autograd.functional.jacobian(lambda x, b=b: torch.tanh(w @ x), h[b])
        assert torch.allclose(jac[b], ref)
