"""Modern recurrent cells (selective SSM, DeltaNet stacks): one step map, its Jacobians, and the
fixed-point structure the module docstring derives for open-loop stacks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mechscope.config import with_overrides
from mechscope.dynamics.finder import FinderConfig, find_fixed_points
from mechscope.dynamics.linearize import jacobians
from mechscope.dynamics.wrappers import as_step
from mechscope.zoo import get_task
from mechscope.zoo.recurrent_cells import CellStack, LinearGRU


def stack(cell: str, feedback: bool = True, width: int = 6, n_layers: int = 2, gated: bool = True) -> CellStack:
    torch.manual_seed(0)
    return CellStack(cell, 3, width, 3, n_layers=n_layers, n_state=3, feedback=feedback, gated=gated)  # type: ignore[arg-type]


@pytest.mark.parametrize(("cell", "gated"), [("ssm", True), ("deltanet", True), ("deltanet", False)])
def test_step_map_is_the_model_and_jacobians_are_exact(cell: str, gated: bool) -> None:
    model = stack(cell, gated=gated)
    u = torch.randn(2, 7, 3)
    y, states = model.rollout(u)
    step = as_step(model)  # a float64 copy of the float32 stack
    assert step.state_size == states.shape[-1] and step.readout_slice == model.readout_slice
    h = torch.zeros(2, step.state_size, dtype=torch.float64)
    for t in range(7):
        h = step(h, u[:, t].double())
    assert torch.allclose(h.float(), states[:, -1], atol=1e-5)
    a, b = step.readout_slice
    assert torch.allclose(model.readout(h[:, a:b].float()), y[:, -1], atol=1e-5)
    # the finder's torch.func Jacobian against central differences
    h0 = states[:1, -1].double()
    u0 = torch.zeros(1, 3, dtype=torch.float64)
    jac = jacobians(step, h0, u0)[0]
    e = torch.zeros_like(h0)
    for j in (0, step.state_size // 2, step.state_size - 1):
        e.zero_()
        e[0, j] = 1e-6
        fd = (step(h0 + e, u0) - step(h0 - e, u0))[0] / 2e-6
        assert torch.allclose(jac[:, j], fd, atol=1e-6)


@pytest.mark.parametrize("cell", ["ssm", "deltanet"])
def test_open_loop_contracting_stack_has_one_fixed_point(cell: str) -> None:
    """Affine-in-state layers in series, each contracting (SSM: |Ā| < 1; gated DeltaNet: the decay
    α < 1 on all of S): one stable fixed point per constant input, from any start."""
    model = stack(cell, feedback=False, width=4)
    step = as_step(model)
    gen = torch.Generator().manual_seed(0)
    states = 2 * torch.randn(256, step.state_size, generator=gen, dtype=torch.float64)
    cfg = FinderConfig(n_starts=32, max_iters=100, newton_steps=30)
    fp = find_fixed_points(step, states, torch.zeros(3, dtype=torch.float64), cfg, gen)
    fixed = [k for k, f in zip(fp.kinds, fp.is_fixed.tolist(), strict=True) if f]
    assert fixed == ["stable"]  # (slowly contracting starts may remain as slow points)


def test_open_loop_plain_deltanet_has_a_flat_continuum_of_fixed_points() -> None:
    """Without the decay gate, S(I − β k kᵀ) keeps every direction orthogonal to a constant k: eigenvalue 1, D(D−1) times a layer."""
    width, n_layers = 4, 2
    model = stack("deltanet", feedback=False, width=width, n_layers=n_layers, gated=False)
    step = as_step(model)
    gen = torch.Generator().manual_seed(0)
    states = torch.randn(64, step.state_size, generator=gen, dtype=torch.float64)
    cfg = FinderConfig(n_starts=32, max_iters=100, newton_steps=20)
    fp = find_fixed_points(step, states, torch.zeros(3, dtype=torch.float64), cfg, gen)
    assert int(fp.is_fixed.sum()) > 10  # every start lands on its own point of the continuum
    mod = fp.linearization.eigvals.abs()
    assert bool((mod <= 1 + 1e-9).all())
    assert bool(((mod - 1).abs() < 1e-9).sum(-1).ge(n_layers * width * (width - 1)).all())
    assert set(fp.kinds) == {"marginal"}


def test_linear_gru_is_torch_gru_with_linear_gates() -> None:
    """SPD's view of a GRU (nn.Linear gates, one step per call) computes nn.GRU's map exactly."""
    torch.manual_seed(0)
    gru = torch.nn.GRU(3, 7, batch_first=True)
    step = LinearGRU.from_gru(gru)
    u = torch.randn(4, 9, 3)
    hs, _ = gru(u)
    h = torch.zeros(4, 7)
    for t in range(9):
        h = step(torch.cat([h, u[:, t]], dim=-1))
        assert torch.allclose(h, hs[:, t], atol=1e-6)
    assert {n for n, m in step.named_modules() if isinstance(m, torch.nn.Linear)} == {"ih", "hh"}
    with pytest.raises(ValueError, match="one-layer, unidirectional"):
        LinearGRU.from_gru(torch.nn.GRU(3, 7, num_layers=2))


@pytest.mark.parametrize("cell", ["ssm", "deltanet"])
def test_modern_cells_train_and_cache(cell: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path))
    task = get_task("flipflop")
    task.config = with_overrides(
        task.config, {"cell": cell, "steps": "2", "max_attempts": "1", "hold_steps": "3", "seq_len": "6"}, "task"
    )
    model = task.make_target(0)
    assert isinstance(model, CellStack) and model.cell == cell
    again = task.make_target(0)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True))


@pytest.mark.slow
def test_closed_loop_ssm_stack_holds_each_memory_as_an_attractor() -> None:
    """Issue 16: the trained selective-SSM stack's 3-bit memories are 8 stable points of its joint state."""
    from mechscope.dynamics.command import run_fixed_points

    m = run_fixed_points("flipflop", 0, None, ["cell=ssm", "steps=1500"], None)
    assert m["n_stable"] == m["n_matched"] == 8
    assert m["stable_precision"] == 1.0 and m["stable_recall"] == 1.0
