"""Fixed and slow points of h' = F(h, u) at a constant input u (Sussillo & Barak 2013).

Minimise the speed q(h) = ½‖F(h, u) − h‖² from many starts at once:

1. starts: states sampled from real trajectories, plus Gaussian noise (scaled per dimension by
   the trajectories' spread), so the search covers the region the network actually visits;
2. Adam on all starts as one batch, with a per-point adaptive step (a point whose q went up
   shrinks its step ×0.7, one whose q went down grows it by 2 %), until every point has either
   reached `adam_tol` or stopped improving — this brings starts into the basins of the minima;
3. damped Newton on F(h) − h = 0, batched: (J − I) δ = −(F(h) − h) with Levenberg–Marquardt
   damping, a step kept only where it lowers q — this takes true fixed points to machine
   precision (GRU/LSTM speed landscapes are very flat, where plain Adam stalls near q ~ 1e-7)
   and leaves slow points (q > 0 minima) in place;
4. keep points with q < `q_slow`, drop outliers far from every trajectory state, and merge
   duplicates closer than `dedup_tol` (both scaled by the trajectories' RMS radius).

Points with q < `q_fixed` are fixed points; the rest of the kept ones are slow points. With
`keep_slow`, the pre-Newton points are kept too (deduplication prefers the lowest q), so a line
of slow points survives next to the exact fixed points on it.

    result = find_fixed_points(as_step(model), states, u, FinderConfig(), torch.Generator())
    result.points, result.q, result.linearization.kinds
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import Field
from torch import Tensor

from mechscope.bounds import MAX_STEPS, LearningRate, Positive
from mechscope.config import Config
from mechscope.dynamics.linearize import STABLE_TOL, Linearization, jacobians, linearize
from mechscope.dynamics.wrappers import StepFunction


class FinderConfig(Config):
    """The finder's settings, each with a concrete default (the fixed-points method's table,
    `mechscope/dynamics/method.py`, sets the ones a task needs otherwise)."""

    n_starts: int = Field(1024, ge=1)
    noise: float = Field(0.05, ge=0)
    """Start noise, in units of each state dimension's standard deviation over the trajectories."""
    lr: LearningRate = 1e-2
    max_iters: int = Field(500, ge=0, le=MAX_STEPS)
    adam_tol: float = Field(1e-12, ge=0)
    newton_steps: int = Field(50, ge=0)
    q_fixed: float = Field(1e-12, ge=0)
    q_slow: float = Field(1e-5, ge=0)
    """Keep points with q below this."""
    dedup_tol: float = Field(1e-3, ge=0)
    outlier_scale: float = Field(10.0, gt=0)
    stable_tol: Positive = STABLE_TOL
    keep_slow: bool = False
    """True: also keep the Adam-phase points with q < q_slow (before Newton): an approximate line
    attractor is a continuum of slow points, which Newton would pull onto its few exact points."""

    @property
    def slow_level(self) -> float:
        return self.q_slow


class NoFixedPointsError(ValueError):
    """The search ended with no point below the slow-point level; says the best q reached."""


@dataclass(frozen=True)
class FixedPoints:
    """Kept fixed and slow points at one input, with their linearisation."""

    points: Tensor
    """[K, n], sorted by q."""
    q: Tensor
    """[K]"""
    is_fixed: Tensor
    """bool[K]: q < q_fixed (the rest are slow points)."""
    linearization: Linearization
    input: Tensor
    """[m]: the constant input u."""
    best_q: float
    """Lowest q reached over all starts (whether or not anything was kept)."""
    n_starts: int
    iters: int

    @property
    def kinds(self) -> list[str]:
        return self.linearization.kinds

    def count(self, kind: str, fixed_only: bool = True) -> int:
        return sum(
            1 for k, f in zip(self.kinds, self.is_fixed.tolist(), strict=True) if k == kind and (f or not fixed_only)
        )


def speed(step: StepFunction, h: Tensor, u: Tensor) -> Tensor:
    """q(h) = ½‖F(h, u) − h‖² per point: [B]."""
    return 0.5 * (step(h, u) - h).pow(2).sum(-1)


def sample_starts(states: Tensor, n: int, noise: float, generator: torch.Generator) -> Tensor:
    """n starts drawn from trajectory states [N, d] plus per-dimension-scaled Gaussian noise."""
    idx = torch.randint(states.shape[0], (n,), generator=generator)
    std = states.std(dim=0) if states.shape[0] > 1 else torch.ones(states.shape[1], dtype=states.dtype)
    eps = torch.randn(n, states.shape[1], generator=generator, dtype=states.dtype)
    return states[idx] + noise * std * eps


def check_shapes(step: StepFunction, states: Tensor, u: Tensor) -> None:
    """One-line errors for a state or input of the wrong size."""
    if states.dim() != 2 or states.shape[1] != step.state_size:
        got = tuple(states.shape)
        raise ValueError(
            f"states have shape {got}; the model's state has size {step.state_size} "
            "(expected [N, state_size]; an LSTM's state is h and c concatenated)"
        )
    if u.shape != (step.input_size,):
        raise ValueError(f"input has shape {tuple(u.shape)}; the model takes inputs of size {step.input_size}")


def minimise_q(step: StepFunction, h0: Tensor, u: Tensor, cfg: FinderConfig) -> tuple[Tensor, int]:
    """Batched Adam on Σ_b q(h_b) with a per-point step size; returns (points, iterations)."""
    h = h0.clone()
    ub = u.expand(h.shape[0], -1)
    m = torch.zeros_like(h)
    v = torch.zeros_like(h)
    lr = torch.full((h.shape[0], 1), cfg.lr, dtype=h.dtype)
    b1, b2, eps = 0.9, 0.999, 1e-16
    q_prev = torch.full((h.shape[0],), float("inf"), dtype=h.dtype)
    q_check = q_prev.clone()
    active = torch.ones(h.shape[0], dtype=torch.bool)
    it = 0
    for it in range(1, cfg.max_iters + 1):
        hg = h.detach().requires_grad_(True)
        q = speed(step, hg, ub)  # (B,)
        (g,) = torch.autograd.grad(q.sum(), hg)
        q = q.detach()
        # per-point adaptive step: shrink where q rose, grow (slowly) where it fell
        lr = torch.where((q > q_prev)[:, None], (lr * 0.7).clamp_min(cfg.lr * 1e-3), (lr * 1.02).clamp_max(cfg.lr * 10))
        q_prev = q
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        mhat = m / (1 - b1**it)
        vhat = v / (1 - b2**it)
        step_h = lr * mhat / (vhat.sqrt() + eps)
        h = h - step_h * active[:, None]
        active &= q > cfg.adam_tol
        if it % 200 == 0:  # stop points that no longer improve (slow points, converged minima)
            active &= q < 0.98 * q_check
            q_check = q.clone()
        if not bool(active.any()):
            break
    return h.detach(), it


def newton_refine(step: StepFunction, h: Tensor, u: Tensor, n_steps: int) -> Tensor:
    """Batched damped Newton (Levenberg–Marquardt) on r(h) = F(h) − h with J_r = ∂F/∂h − I:

        δ = −(J_rᵀ J_r + μ I)⁻¹ J_rᵀ r,

    with a per-point damping μ that shrinks ×3 after a step that lowered q (towards the pure
    Newton step −J_r⁻¹ r, quadratic convergence at a fixed point) and grows ×4 after one that
    did not (the step is then rejected). Slow points, minima of q with r ≠ 0, are left in place.
    """
    ub = u.expand(h.shape[0], -1)
    eye = torch.eye(h.shape[1], dtype=h.dtype)
    q = speed(step, h, ub).detach()
    mu = torch.full((h.shape[0],), 1e-6, dtype=h.dtype)
    for _ in range(n_steps):
        live = (q > 1e-30) & (mu < 1e12)
        if not bool(live.any()):
            break
        with torch.no_grad():
            r = step(h, ub) - h  # (B, n)
        jr = jacobians(step, h, ub).detach() - eye  # (B, n, n)
        jt = jr.transpose(1, 2)
        normal = jt @ jr + mu[:, None, None] * eye  # (B, n, n)
        delta, info = torch.linalg.solve_ex(normal, -(jt @ r[..., None]).squeeze(-1))
        ok = (info == 0) & torch.isfinite(delta).all(-1) & live
        cand = torch.where(ok[:, None], h + torch.nan_to_num(delta), h)
        with torch.no_grad():
            q_new = speed(step, cand, ub)
        better = ok & (q_new < q)
        h = torch.where(better[:, None], cand, h)
        q = torch.where(better, q_new, q)
        mu = torch.where(better, (mu / 3).clamp_min(1e-15), mu * 4)
    return h


def deduplicate(points: Tensor, q: Tensor, tol: float) -> Tensor:
    """Indices of points kept after greedy merging (lowest q first) within distance `tol`."""
    order = q.argsort()
    dist = torch.cdist(points[order], points[order])  # (K, K)
    keep = torch.zeros(len(order), dtype=torch.bool)
    covered = torch.zeros(len(order), dtype=torch.bool)
    for i in range(len(order)):
        if covered[i]:
            continue
        keep[i] = True
        covered |= dist[i] < tol
    return order[keep]


def find_fixed_points(
    step: StepFunction,
    states: Tensor,
    u: Tensor,
    cfg: FinderConfig,
    generator: torch.Generator,
    starts: Tensor | None = None,
) -> FixedPoints:
    """Fixed and slow points of `step` at constant input u.

    Arguments:
        states: [N, n] states from real trajectories (starts are drawn from them; outliers are
            judged against them).
        u: [m] the constant input.
        starts: optional [S, n] explicit starts (otherwise `cfg.n_starts` sampled ones).
    Returns: the kept points, possibly none (`points.shape[0] == 0`, with `best_q`).
    """
    u = u.to(states.dtype)
    check_shapes(step, states, u)
    if starts is None:
        starts = sample_starts(states, cfg.n_starts, cfg.noise, generator)
    elif starts.dim() != 2 or starts.shape[1] != step.state_size:
        raise ValueError(f"starts have shape {tuple(starts.shape)}; the model's state has size {step.state_size}")
    h_adam, iters = minimise_q(step, starts.to(states.dtype), u, cfg)
    h = newton_refine(step, h_adam, u, cfg.newton_steps)
    if cfg.keep_slow:  # Newton slides slow points along a line to its fixed points: keep both
        h = torch.cat([h, h_adam])
    with torch.no_grad():
        q = speed(step, h, u.expand(h.shape[0], -1))
    finite = torch.isfinite(q) & torch.isfinite(h).all(-1)
    best_q = float(q[finite].min()) if bool(finite.any()) else float("inf")
    scale = float((states - states.mean(0)).pow(2).sum(-1).mean().sqrt().clamp_min(1e-12))
    keep = finite & (q < cfg.slow_level)
    if bool(keep.any()):
        near = torch.cdist(h[keep], states).min(dim=1).values
        idx = keep.nonzero().squeeze(1)
        keep[idx[near > cfg.outlier_scale * scale]] = False
    h, q = h[keep], q[keep]
    kept = deduplicate(h, q, cfg.dedup_tol * scale) if h.shape[0] else torch.zeros(0, dtype=torch.long)
    h, q = h[kept], q[kept]
    jac = jacobians(step, h, u.expand(h.shape[0], -1)) if h.shape[0] else torch.zeros(0, *([step.state_size] * 2))
    lin = linearize(jac.detach().to(states.dtype), cfg.stable_tol)  # a stack's params carry grad
    return FixedPoints(h.detach(), q, q < cfg.q_fixed, lin, u, best_q, starts.shape[0], iters)
