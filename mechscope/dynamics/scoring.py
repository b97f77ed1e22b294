"""Ground-truth scores for fixed-point analyses: pure functions of found points and the truth.

One function per kind of expected structure (`ExpectedStructure.kind`):

- closed-form (linear RNN, selective SSM): the one stable point and its eigenvalues are known
  exactly; score the worst relative distance of any found point to h* and the eigenvalue error
  after optimal (Hungarian) pairing.
- flipflop: each of the 2^bits memories should be one stable point; a stable point is matched to
  the memory its readout reproduces (every output within 0.5 of ±1). Precision = stable points
  that are the first match of a distinct memory / stable points; recall = memories matched / 2^bits.
- oscillator (sine generator): a fixed point whose unstable directions rotate (leading eigenvalue
  a complex pair outside the unit circle) with angle |arg λ| ≈ ω, the output frequency.
- line-attractor (integrator): the fixed and slow points lie on a line (first principal
  component), the leading eigenvalue is ≈ 1 and its eigenvector points along that line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from mechscope.dynamics.attractors import MEMORY_TOL
from mechscope.dynamics.finder import FixedPoints
from mechscope.zoo.rnn_tasks import ExpectedStructure

CLOSED_FORM_TOL = 1e-6


def eig_error(found: Tensor, true: Tensor) -> float:
    """max |λ − μ| / max |μ| after Hungarian pairing of two complex spectra [n]."""
    cost = (found[:, None] - true[None, :]).abs()  # (n, n)
    rows, cols = linear_sum_assignment(cost.numpy())
    return float(cost[rows, cols].max() / true.abs().max().clamp_min(1e-300))


def score_closed_form(fp: FixedPoints, expected: ExpectedStructure) -> dict[str, Any]:
    """Relative distance of the found fixed points to h* (absolute below unit norm) and eigen error."""
    assert expected.point is not None and expected.eigvals is not None
    pts = fp.points[fp.is_fixed]
    true = expected.point.to(pts.dtype)
    if pts.shape[0] == 0:
        return {"rel_error": float("inf"), "eig_rel_error": float("inf"), "n_found": 0, "matched": False}
    err = (pts - true).norm(dim=-1) / true.norm().clamp_min(1.0)  # (K,)
    best = int(err.argmin())
    eig = eig_error(fp.linearization.eigvals[best], expected.eigvals.to(fp.linearization.eigvals.dtype))
    rel = float(err.max())
    stable = [k == "stable" for k in fp.kinds]
    return {
        "rel_error": rel,
        "eig_rel_error": eig,
        "n_found": int(pts.shape[0]),
        "matched": rel <= CLOSED_FORM_TOL and stable[best],
    }


def score_flipflop(fp: FixedPoints, expected: ExpectedStructure, readout: Callable[[Tensor], Tensor]) -> dict[str, Any]:
    """Match stable fixed points to memories through the readout (precision / recall)."""
    assert expected.memories is not None
    mem = expected.memories  # (M, bits)
    stable = torch.tensor([k == "stable" for k in fp.kinds], dtype=torch.bool) & fp.is_fixed
    pts = fp.points[stable]
    y = readout(pts).to(mem.dtype) if pts.shape[0] else torch.zeros(0, mem.shape[1], dtype=mem.dtype)
    clean = (y - y.sign()).abs().max(dim=-1).values < MEMORY_TOL if y.shape[0] else torch.zeros(0, dtype=torch.bool)
    which = (y.sign()[:, None, :] == mem[None]).all(-1).float().argmax(-1)  # (S,)
    matched: list[int] = []
    good = 0
    for i in range(pts.shape[0]):
        if bool(clean[i]) and int(which[i]) not in matched:
            matched.append(int(which[i]))
            good += 1
    n_stable = int(pts.shape[0])
    return {
        "n_matched": len(matched),
        "stable_precision": good / n_stable if n_stable else 0.0,
        "stable_recall": len(matched) / mem.shape[0],
        "matched_memories": sorted(matched),
        "stable_outputs": y.tolist(),
    }


def score_oscillator(fp: FixedPoints, expected: ExpectedStructure, tol: float = 0.15) -> dict[str, Any]:
    """The fixed point with rotating unstable directions whose angle is closest to ω. A rotating pair
    on the unit circle (a ring direction, |λ| within the marginal band) counts too: it is a linear
    oscillator's centre, and training may tune the limit cycle's centre to |λ| ≈ 1 ± 1e-3 (on one
    CPU, seed 0's ω = 0.35 input sat there with the angle at ω; elsewhere it was unstable)."""
    assert expected.omega is not None
    lin = fp.linearization
    cand = fp.is_fixed & lin.rotation & ((lin.n_unstable_dims >= 1) | (lin.n_ring_dims >= 1))
    if not bool(cand.any()):
        return {"omega": expected.omega, "angle": None, "angle_rel_error": float("inf"), "matched": False}
    angles = lin.eigvals[:, 0].angle().abs()  # (K,)
    err = torch.where(cand, (angles - expected.omega).abs() / expected.omega, torch.full_like(angles, float("inf")))
    best = int(err.argmin())
    return {
        "omega": expected.omega,
        "angle": float(angles[best]),
        "angle_rel_error": float(err[best]),
        "leading_modulus": float(lin.eigvals[best, 0].abs()),
        "n_unstable_dims": int(lin.n_unstable_dims[best]),
        "matched": float(err[best]) <= tol,
    }


def score_line_attractor(
    fp: FixedPoints, readout: Callable[[Tensor], Tensor], lam_tol: float = 0.02
) -> dict[str, Any]:
    """How well fixed + slow points form a line attractor along the integrated direction."""
    pts = fp.points
    n = int(pts.shape[0])
    if n < 3:
        return {"n_line_points": n, "line_fraction": 0.0, "matched": False}
    centred = pts - pts.mean(0)
    _, s, vt = torch.linalg.svd(centred, full_matrices=False)
    line_fraction = float(s[0] ** 2 / (s**2).sum())
    pc1 = vt[0]  # (n,)
    lead = fp.linearization.eigvals[:, 0]  # (K,)
    vec = fp.linearization.eigvecs[:, :, 0]  # (K, n)
    vec_re = vec.real / vec.real.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    align = (vec_re.to(pc1.dtype) @ pc1).abs()  # (K,)
    second = fp.linearization.eigvals[:, 1].abs() if pts.shape[1] > 1 else torch.zeros(n)
    out = readout(pts).reshape(n, -1)[:, 0]
    lam_err = (lead - 1).abs()
    lam_med, align_med = float(lam_err.median()), float(align.median())
    return {
        "n_line_points": n,
        "line_fraction": line_fraction,
        "lead_eig_median_abs_err": lam_med,
        "lead_eig_max_abs_err": float(lam_err.max()),
        "second_eig_median": float(second.median()),
        "eigvec_alignment_median": align_med,
        "readout_span": [float(out.min()), float(out.max())],
        "matched": line_fraction >= 0.9 and lam_med <= lam_tol and align_med >= 0.9,
    }
