"""The acceptance rule that every memory is an attractor at the finder's stable band."""

import pytest
import torch
from torch import Tensor

from mechscope.dynamics.attractors import memory_attractors
from mechscope.dynamics.wrappers import StepFunction


def flipflop_map(rate: float) -> StepFunction:
    """h' = h + a (h − h³) + 0.8 u per bit: memories at ±1 with λ = 1 − 2a exactly; the input
    pulse lands the state at ±0.8, so the hold must relax towards the memory."""

    def fn(h: Tensor, u: Tensor) -> Tensor:
        return h + rate * (h - h**3) + 0.8 * u

    return StepFunction(fn, 2, 2, 2, (0, 2))


MEMORIES = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]], dtype=torch.float64)


@pytest.mark.parametrize(("lam", "ok"), [(0.99, True), (0.9995, False)])
def test_a_slow_attractor_fails_and_a_clear_one_passes(lam: float, ok: bool) -> None:
    r = memory_attractors(flipflop_map((1 - lam) / 2), lambda h: h, MEMORIES, hold_steps=500)
    assert r["attractors_ok"] is ok and r["n_attractors"] == (4 if ok else 0)
    assert r["memory_lambda_max"] == pytest.approx([lam] * 4, abs=1e-9)  # Newton reached ±1 exactly
    assert max(r["memory_q"]) < 1e-20
    assert r["worst_lambda_max"] == pytest.approx(lam, abs=1e-9)


def test_a_fixed_point_that_reads_out_another_memory_fails() -> None:
    """The readout swaps bit 0's sign: every point is a clear attractor, but not of its memory."""
    r = memory_attractors(flipflop_map(0.005), lambda h: h * torch.tensor([-1.0, 1.0]), MEMORIES, hold_steps=50)
    assert not r["attractors_ok"] and r["n_attractors"] == 0
