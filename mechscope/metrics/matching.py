"""Similarity between components and true mechanisms, and one-to-one (Hungarian) matching.

Parameter space: a true mechanism is a matrix T [d_out, d_in], a component a matrix P_c. The
component's read side is first projected with the site's `read_projection` Π (P_c Π: the part of
W_in that never sees data must not count against a method), then

    sim(c, T) = ⟨P_c Π, T⟩_F / (‖P_c Π‖_F ‖T‖_F)            (signed: −T writes the opposite)

Activation space: a true mechanism is a vector t, a component a vector p; sim = |cos(p, t)|
(an SPD component's direction has no sign of its own). Non-negative latents (dictionaries) are
assigned to truths by `side_key`, which prefers the true vector on their side of ±t.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

EPS = 1e-12


def project_read(P: Tensor, projection: Tensor | None) -> Tensor:
    """P Π for every component: [C, d_out, d_in] @ [d_in, d_in]; identity when Π is None."""
    return P if projection is None else P @ projection.to(P.dtype)


def read_basis(projection: Tensor, tol: float = 1e-4) -> Tensor | None:
    """Q [d_in, k] with Π = Q Qᵀ when Π is an orthogonal projection, else None.

    Every parameter metric only needs Frobenius inner products and norms of P Π and T, and
    ⟨P Π, T Π⟩ = ⟨P Q, T Q⟩, ‖P Π‖ = ‖P Q‖: comparing in the k-dim read basis is exact and, for the
    residual MLP (d_in 1000, k 100), ten times cheaper than forming P Π."""
    Pi = projection.double()
    if float((Pi - Pi.T).abs().max()) > tol * max(1.0, float(Pi.abs().max())):
        return None
    evals, evecs = torch.linalg.eigh(Pi)
    if float((evals - evals.round()).abs().max()) > tol or float(evals.min()) < -tol:
        return None  # not a projection: callers fall back to P Π
    return evecs[:, evals > 0.5].float()


def extend_basis(Q: Tensor, T: Tensor, tol: float = 1e-6) -> Tensor:
    """Orthonormal basis [d_in, k'] of span(Q) + the row space of T [d_out, d_in] (what T reads)."""
    _, S, Vh = torch.linalg.svd(T.double(), full_matrices=False)
    reads = Vh[tol * float(S.max()) < S] if S.numel() and float(S.max()) > 0 else Vh[:0]  # (r, d_in)
    Qd = Q.double()
    reads = reads - (reads @ Qd) @ Qd.T  # the part of T's reads outside span(Q)
    if reads.shape[0] == 0:
        return Q
    U, S2, _ = torch.linalg.svd(reads.T, full_matrices=False)  # (d_in, r)
    extra = U[:, S2 > 1e-4]  # residual reads of unit length; below this they are float noise
    return torch.cat([Qd, extra], dim=1).float()


def parameter_similarity(P: Tensor, T: Tensor) -> Tensor:
    """[n_true, C] Frobenius cosines between true matrices T [n, o, i] and components P [C, o, i]
    (P already read-projected). A zero matrix has similarity 0 to everything."""
    Pf = P.flatten(1).double()  # (C, o·i)
    Tf = T.flatten(1).double()  # (n, o·i)
    dots = Tf @ Pf.T  # (n, C)
    norms = Tf.norm(dim=1, keepdim=True) * Pf.norm(dim=1)[None, :]
    return torch.where(norms > EPS, dots / norms.clamp_min(EPS), torch.zeros_like(dots)).float()


def activation_similarity(p: Tensor, t: Tensor) -> Tensor:
    """[n_true, C] |cos| between true vectors t [n, d] and component vectors p [C, d]."""
    return activation_cosine(p, t).abs().float()


@dataclass(frozen=True)
class Matching:
    """Hungarian matching on one similarity matrix: pairs (truth[k], component[k])."""

    truth: list[int]
    component: list[int]
    similarity: list[float]


def signed_tiebreak(cos: Tensor) -> Tensor:
    """[n_true, C] 1e-6·cos (`activation_cosine`): added to |cos| only to rank, never reported.

    Signed features give pairs of true vectors ±t (the residual stream's +W_E[i] / −W_E[i]) that
    |cos| cannot tell apart; the term breaks those exact ties and is far below any real difference
    in |cos|, so the matching stays SAELens's (mcc, uniqueness)."""
    return 1e-6 * cos


def side_key(sim: Tensor, cos: Tensor) -> Tensor:
    """[n_true, C] |cos| + cos = 2 max(cos, 0) (sim = |cos|): how non-negative latents are assigned to truths.

    A dictionary latent is never negative, so it writes +p only: of ±t it is the one on its side.
    Ranked by |cos| (even with the tie-break), a duplicate latent on −t whose |cos| is 1e-4 higher
    takes +t's place and the latent that found +t goes unmatched (resid-mlp-1l: 11 of 200 signed
    directions counted as missed). The F1 and coverage pairs use this key; mcc keeps SAELens's."""
    return sim.double() + cos


def activation_cosine(p: Tensor, t: Tensor) -> Tensor:
    """[n_true, C] signed cosines (double)."""
    pd, td = p.double(), t.double()
    norms = td.norm(dim=1, keepdim=True) * pd.norm(dim=1)[None, :]
    return torch.where(norms > EPS, (td @ pd.T) / norms.clamp_min(EPS), torch.zeros_like(norms))


def hungarian(sim: Tensor, rank_by: Tensor | None = None) -> Matching:
    """One-to-one matching maximising total similarity; min(n_true, C) pairs, sorted by truth.

    `rank_by` (default `sim`) is what is maximised; the reported similarities are `sim`'s."""
    if sim.numel() == 0:
        return Matching([], [], [])
    key = sim if rank_by is None else rank_by
    rows, cols = linear_sum_assignment(key.detach().double().cpu().numpy(), maximize=True)
    order = np.argsort(rows)
    r, c = rows[order].tolist(), cols[order].tolist()
    return Matching(r, c, [float(sim[i, j]) for i, j in zip(r, c, strict=True)])


def frobenius_cos(A: Tensor, B: Tensor) -> float:
    """Frobenius cosine of two matrices of the same shape (0 if either is zero)."""
    a, b = A.double().flatten(), B.double().flatten()
    den = float(a.norm() * b.norm())
    return float(a @ b) / den if den > EPS else 0.0


def norm_ratio(A: Tensor, B: Tensor) -> float:
    """‖A‖/‖B‖ (inf-safe: 0 when B is zero)."""
    nb = float(B.double().norm())
    return float(A.double().norm()) / nb if nb > EPS else 0.0


__all__ = [
    "Matching",
    "activation_cosine",
    "activation_similarity",
    "extend_basis",
    "frobenius_cos",
    "hungarian",
    "norm_ratio",
    "parameter_similarity",
    "project_read",
    "read_basis",
    "side_key",
    "signed_tiebreak",
]
