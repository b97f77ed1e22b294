"""Constructed dynamics targets: their closed forms are right, and the finder recovers them."""

import torch

from mechscope.dynamics.command import run_fixed_points
from mechscope.zoo import get_task
from mechscope.zoo.linear_dynamics import LinearRNN, SelectiveSSM, SelectiveSSMConfig, SelectiveSSMTask

FAST = ["n_starts=64", "max_iters=100"]


def test_linear_rnn_is_stable_with_complex_eigenvalues() -> None:
    model = get_task("linear-rnn").make_target(0)
    assert isinstance(model, LinearRNN)
    eig = torch.linalg.eigvals(model.A)
    assert float(eig.abs().max()) < 1
    assert int((eig.imag.abs() > 1e-6).sum()) == 10  # five complex pairs
    assert torch.allclose(eig.abs().sort().values, model.true_eigvals.abs().sort().values)
    u = torch.randn(3, dtype=torch.float64)
    h = model.fixed_point(u)
    assert torch.allclose(model.step(h[None], u[None])[0], h, atol=1e-12)


def test_selective_ssm_closed_form_is_a_fixed_point_and_moves_with_the_input() -> None:
    for disc in ("zoh", "euler"):
        task = SelectiveSSMTask(SelectiveSSMConfig(discretization=disc))
        model = task.make_target(0)
        assert isinstance(model, SelectiveSSM)
        points = []
        for u in task.analysis_inputs()[1:]:
            h = model.fixed_point(u)
            assert torch.allclose(model.step(h[None], u[None])[0], h, atol=1e-12)
            assert float(model.eigvals(u).abs().max()) < 1
            points.append(h)
        assert float((points[0] - points[1]).norm()) > 1e-3


def test_zoh_point_ignores_the_step_size_but_euler_does_not() -> None:
    """The METHODS.md trap: with ZOH, h* = −B(u) x(u) / a whatever Δ is; Euler's depends on Δ."""
    u = torch.tensor([0.3, -0.7, 1.1], dtype=torch.float64)
    moved = {}
    for disc in ("zoh", "euler"):
        model = SelectiveSSMTask(SelectiveSSMConfig(discretization=disc)).make_target(0)
        assert isinstance(model, SelectiveSSM)
        before = model.fixed_point(u)
        model.b_dt.data += 1.0
        moved[disc] = float((model.fixed_point(u) - before).norm())
    assert moved["zoh"] < 1e-12 < moved["euler"]


def test_finder_recovers_the_linear_rnn_exactly() -> None:
    m = run_fixed_points("linear-rnn", seed=0, input=None, overrides=FAST, out=None)
    assert m["max_rel_error"] <= 1e-6
    assert m["max_eig_rel_error"] <= 1e-6
    assert m["n_stable"] == 4 and m["n_saddle"] == 0 and m["n_matched"] == 4
    assert m["stable_precision"] == 1.0 and m["stable_recall"] == 1.0


def test_finder_recovers_the_selective_ssm_at_several_inputs() -> None:
    for disc in ("zoh", "euler"):
        m = run_fixed_points("selective-ssm", 1, None, [*FAST, f"discretization={disc}"], None)
        assert len(m["inputs"]) == 4
        assert m["max_rel_error"] <= 1e-6
        assert m["max_eig_rel_error"] <= 1e-6
        assert m["n_matched"] == 4
