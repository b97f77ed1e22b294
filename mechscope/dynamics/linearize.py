"""Linearisation at fixed points: batched Jacobians, eigenvalues and a stability label.

Around a fixed point h* of h' = F(h, u) the dynamics are h' − h* ≈ J (h − h*), J = ∂F/∂h at h*.
Discrete time, so the unit circle decides (Sussillo & Barak 2013):

- stable   — every |λ| < 1 − tol: an attractor (a memory of the flip-flop);
- saddle   — some |λ| > 1 + tol and some |λ| < 1 − tol (the flip-flop's points between memories;
             the sine generator's oscillatory point, whose unstable directions are a complex pair);
- unstable — every |λ| > 1 + tol (a source);
- marginal — none above 1 + tol but the largest within the band |1 − |λ|| ≤ tol: a line (real λ ≈ 1)
             or ring (complex λ on the circle) direction, as in the integrator and in GRU/LSTM
             memories whose leading eigenvalue sits near 1.

`rotation` marks points whose leading eigenvalue is complex (the dynamics spiral there).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import jacrev, vmap

from mechscope.dynamics.wrappers import StepFunction

KINDS = ("stable", "saddle", "unstable", "marginal")
STABLE_TOL = 1e-3
"""METHODS.md: stable means max|λ| < 1 − 1e-3; the band 1 ± 1e-3 is reported as marginal."""


def jacobians(step: StepFunction, h: Tensor, u: Tensor) -> Tensor:
    """J[b] = ∂F/∂h at (h[b], u[b]): [B, n, n], one vectorised reverse pass (`torch.func`)."""

    def one(hb: Tensor, ub: Tensor) -> Tensor:
        return step(hb[None], ub[None])[0]

    jac: Tensor = vmap(jacrev(one, argnums=0))(h, u)
    return jac


@dataclass(frozen=True)
class Linearization:
    """Eigen-decomposition of the Jacobians at a batch of points."""

    eigvals: Tensor
    """[B, n] complex, sorted by decreasing modulus."""
    eigvecs: Tensor
    """[B, n, n] complex; column k is the right eigenvector of eigvals[:, k]."""
    kinds: list[str]
    rotation: Tensor
    """bool[B]: the leading eigenvalue is complex."""
    n_marginal_dims: Tensor
    """int[B]: eigenvalues within the marginal band (line / ring directions)."""
    n_unstable_dims: Tensor
    """int[B]: eigenvalues with |λ| > 1 + tol."""
    n_line_dims: Tensor
    """int[B]: marginal eigenvalues that are real and ≈ +1 — line-attractor directions."""
    n_ring_dims: Tensor
    """int[B]: marginal eigenvalues that are complex (on the unit circle) — ring / rotation directions."""

    @property
    def max_abs(self) -> Tensor:
        return self.eigvals.abs()[:, 0] if self.eigvals.shape[0] else torch.zeros(0)


def linearize(jac: Tensor, tol: float = STABLE_TOL) -> Linearization:
    """Eigen-decompose [B, n, n] Jacobians and classify each point (see the module docstring)."""
    vals, vecs = torch.linalg.eig(jac)  # (B, n), (B, n, n)
    order = vals.abs().argsort(dim=-1, descending=True)
    vals = vals.gather(-1, order)
    vecs = vecs.gather(-1, order[:, None, :].expand_as(vecs))
    mod = vals.abs()
    n_unstable = (mod > 1 + tol).sum(-1)
    n_contract = (mod < 1 - tol).sum(-1)
    band = (mod - 1).abs() <= tol
    n_marginal = band.sum(-1)
    is_complex = vals.imag.abs() > 1e-9
    n_line = (band & ~is_complex & (vals.real > 0)).sum(-1)
    n_ring = (band & is_complex).sum(-1)
    kinds = [classify(int(a), int(b), vals.shape[-1]) for a, b in zip(n_unstable, n_contract, strict=True)]
    rotation = vals[:, 0].imag.abs() > 1e-9 if vals.shape[0] else torch.zeros(0, dtype=torch.bool)
    return Linearization(vals, vecs, kinds, rotation, n_marginal, n_unstable, n_line, n_ring)


def classify(n_unstable: int, n_contracting: int, n: int) -> str:
    """Stability label from how many eigenvalues lie outside / inside the marginal band."""
    if n_unstable == 0:
        return "stable" if n_contracting == n else "marginal"
    return "unstable" if n_unstable == n else "saddle"
