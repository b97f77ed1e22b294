"""Ground-truth scores on hand-built fixed-point sets with known answers."""

import math

import torch

from mechscope.dynamics.finder import FixedPoints
from mechscope.dynamics.linearize import linearize
from mechscope.dynamics.scoring import score_flipflop, score_line_attractor, score_oscillator
from mechscope.zoo.rnn_tasks import ExpectedStructure, FlipFlopTask

F64 = torch.float64


def points(pts: torch.Tensor, jac: torch.Tensor, q: float = 1e-30) -> FixedPoints:
    k = pts.shape[0]
    return FixedPoints(pts, torch.full((k,), q, dtype=F64), torch.full((k,), q < 1e-12), linearize(jac),
                       torch.zeros(1, dtype=F64), q, k, 1)


def test_flipflop_precision_and_recall() -> None:
    mem = FlipFlopTask().memories()  # (8, 3)
    # 7 memories as stable points, one duplicate memory (spurious), one saddle at the origin
    pts = torch.cat([mem[:7], mem[:1] * 0.9, torch.zeros(1, 3, dtype=F64)])
    jac = torch.stack([0.5 * torch.eye(3, dtype=F64)] * 8 + [torch.diag(torch.tensor([1.5, 0.5, 0.5], dtype=F64))])
    s = score_flipflop(points(pts, jac), ExpectedStructure(kind="flipflop", memories=mem), lambda h: h)
    assert s["n_matched"] == 7
    assert s["stable_recall"] == 7 / 8
    assert s["stable_precision"] == 7 / 8


def test_oscillator_angle() -> None:
    th = 0.3
    rot = 1.05 * torch.tensor([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]], dtype=F64)
    fp = points(torch.zeros(1, 2, dtype=F64), rot[None])
    good = score_oscillator(fp, ExpectedStructure(kind="oscillator", omega=0.3))
    bad = score_oscillator(fp, ExpectedStructure(kind="oscillator", omega=0.6))
    assert good["matched"] and good["angle_rel_error"] < 1e-12 and good["n_unstable_dims"] == 2
    assert not bad["matched"] and abs(bad["angle_rel_error"] - 0.5) < 1e-12


def test_oscillator_centre_on_the_unit_circle_counts_a_contracting_spiral_does_not() -> None:
    """A rotating pair in the marginal band (|λ| = 1.0005: a linear oscillator's centre) is the
    oscillatory point; at |λ| = 0.9 the spiral decays — no oscillation, not matched."""
    th = 0.3
    rot = torch.tensor([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]], dtype=F64)
    centre = score_oscillator(points(torch.zeros(1, 2, dtype=F64), 1.0005 * rot[None]), ExpectedStructure(kind="oscillator", omega=th))
    assert centre["matched"] and centre["angle_rel_error"] < 1e-12 and centre["n_unstable_dims"] == 0
    decaying = score_oscillator(points(torch.zeros(1, 2, dtype=F64), 0.9 * rot[None]), ExpectedStructure(kind="oscillator", omega=th))
    assert not decaying["matched"] and decaying["angle"] is None


def test_line_attractor() -> None:
    direction = torch.tensor([0.6, 0.8], dtype=F64)
    pts = torch.linspace(-1, 1, 9, dtype=F64)[:, None] * direction  # on a line
    # λ = 0.995 along the line, 0.5 across it
    basis = torch.stack([direction, torch.tensor([-0.8, 0.6], dtype=F64)], dim=1)
    jac = basis @ torch.diag(torch.tensor([0.995, 0.5], dtype=F64)) @ basis.T
    s = score_line_attractor(points(pts, jac.expand(9, 2, 2), q=1e-8), lambda h: h[:, :1])
    assert s["matched"] and s["line_fraction"] > 0.999
    assert abs(s["lead_eig_median_abs_err"] - 0.005) < 1e-9 and s["eigvec_alignment_median"] > 0.999
