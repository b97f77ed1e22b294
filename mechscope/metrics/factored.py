"""Parameter-space recovery from factors: T = U Vᵀ and P_c = U_c V_cᵀ are never formed.

A large dictionary task's truth is one d_out × d_in matrix per feature (synth-sae-bench-4k: 4,096
of 192 × 4,096, ≈ 13 GB dense), so it is stored as factors (`Mechanism.factors`), and so are the
components of the factored methods (`Decomposition.factors`: oracle, random, SPD). Every parameter
metric needs only Frobenius inner products and norms, and those have closed forms:

    ⟨U_t V_tᵀ, U_c V_cᵀ⟩_F = Σ_{r,s} (U_tᵀ U_c)_rs (V_tᵀ V_c)_rs     (rank 1: (u_t·u_c)(v_t·v_c))
    ⟨U_t V_tᵀ, P_c⟩_F      = Σ_r U_t[:, r]ᵀ P_c V_t[:, r]              (a dense component)
    ‖U Vᵀ‖²_F              = Σ_{r,s} (UᵀU)_rs (VᵀV)_rs
    (U Vᵀ) M               = U (Mᵀ V)ᵀ                                  (the read projection)

Dense truth keeps the dense path (matching.parameter_similarity, recovery.l2r_pairs / colwise), so
its scores are bit-identical; this path gives the same numbers to float precision
(tests/metrics/test_factored.py checks both on one task).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from mechscope.core import Mechanism
from mechscope.decompose.base import Decomposition
from mechscope.metrics.matching import EPS, Matching
from mechscope.metrics.recovery import Colwise, column_match

SPARSE_DENSITY = 0.05
"""A factor with fewer non-zeros than this is multiplied as a sparse matrix (one-hot reads: e_i)."""
CHUNK = 256
"""Dense components are contracted with the truth's factors this many at a time (bounded memory)."""


@dataclass(frozen=True)
class LowRank:
    """n matrices U[k] V[k]ᵀ: U [n, d_out, r], V [n, d_in, r] (a lower-rank one padded with zeros)."""

    U: Tensor
    V: Tensor

    @staticmethod
    def of(mechs: Sequence[Mechanism]) -> LowRank:
        """The factors of parameter mechanisms (each with `factors`), padded to one rank."""
        pairs = [m.factors for m in mechs if m.factors is not None]
        if len(pairs) != len(mechs):
            raise ValueError("LowRank.of needs every mechanism factored (Mechanism.factored)")
        r = max((int(U.shape[1]) for U, _ in pairs), default=1)
        o, i = (int(mechs[0].direction.shape[0]), int(mechs[0].direction.shape[1])) if mechs else (0, 0)
        U = torch.zeros(len(pairs), o, r, dtype=torch.float64)
        V = torch.zeros(len(pairs), i, r, dtype=torch.float64)
        for k, (u, v) in enumerate(pairs):
            U[k, :, : u.shape[1]] = u.detach().cpu().double()
            V[k, :, : v.shape[1]] = v.detach().cpu().double()
        return LowRank(U, V)

    @staticmethod
    def rank_one(U: Tensor, V: Tensor) -> LowRank:
        """Components U[c] V[c]ᵀ from write rows U [C, d_out] and read rows V [C, d_in]."""
        return LowRank(U.detach().cpu().double().unsqueeze(-1), V.detach().cpu().double().unsqueeze(-1))

    def __len__(self) -> int:
        return int(self.U.shape[0])

    @property
    def rank(self) -> int:
        return int(self.U.shape[2])

    def read(self, M: Tensor) -> LowRank:
        """(U Vᵀ) M for every matrix: M [d_in, k] (a read basis Q or the projection Π)."""
        return LowRank(self.U, torch.einsum("nir,ik->nkr", self.V, M.detach().cpu().double()))

    def norms(self) -> Tensor:
        """[n] ‖U Vᵀ‖_F (double)."""
        gu = torch.einsum("nor,nos->nrs", self.U, self.U)
        gv = torch.einsum("nir,nis->nrs", self.V, self.V)
        return (gu * gv).sum(dim=(1, 2)).clamp_min(0.0).sqrt()

    def column(self, k: int, j: int) -> Tensor:
        """[d_out] column j of matrix k."""
        return self.U[k] @ self.V[k, j]

    def columns(self, j: int) -> Tensor:
        """[n, d_out] column j of every matrix."""
        return torch.einsum("nor,nr->no", self.U, self.V[:, j])

    def dense(self) -> Tensor:
        """[n, d_out, d_in] — for small sizes only (tests, a dense mechanism's group sum)."""
        return torch.einsum("nor,nir->noi", self.U, self.V)


Components = LowRank | Tensor
"""A site's parameter components: factors, or dense matrices [C, d_out, d_in]."""


def _outer_mm(A: Tensor, B: Tensor) -> Tensor:
    """A @ Bᵀ (double), A [n, k], B [m, k]; a mostly-zero A (one-hot reads) goes through sparse mm."""
    if A.numel() and float((A != 0).float().mean()) < SPARSE_DENSITY:
        return torch.sparse.mm(A.to_sparse(), B.T.contiguous())
    return A @ B.T


def inner(T: LowRank, P: Components) -> Tensor:
    """[n_true, C] ⟨T_t, P_c⟩_F for factored truth T and factored or dense components P."""
    if isinstance(P, LowRank):
        out = torch.zeros(len(T), len(P), dtype=torch.float64)
        for r in range(T.rank):
            for s in range(P.rank):
                out += _outer_mm(T.U[:, :, r], P.U[:, :, s]) * _outer_mm(T.V[:, :, r], P.V[:, :, s])
        return out
    out = torch.zeros(len(T), int(P.shape[0]), dtype=torch.float64)
    for start in range(0, int(P.shape[0]), CHUNK):
        Pc = P[start : start + CHUNK].double()  # (c, o, i)
        for r in range(T.rank):
            pv = torch.einsum("coi,ni->con", Pc, T.V[:, :, r])  # P_c v_t for every pair
            out[:, start : start + CHUNK] += torch.einsum("con,no->nc", pv, T.U[:, :, r])
    return out


def norms(P: Components) -> Tensor:
    """[C] Frobenius norms (double)."""
    return P.norms() if isinstance(P, LowRank) else P.flatten(1).double().norm(dim=1)


def similarity(P: Components, T: LowRank) -> Tensor:
    """[n_true, C] Frobenius cosines, as `matching.parameter_similarity` (0 against a zero matrix)."""
    dots = inner(T, P)
    den = T.norms()[:, None] * norms(P)[None, :]
    return torch.where(den > EPS, dots / den.clamp_min(EPS), torch.zeros_like(dots)).float()


def l2r_pairs(P: Components, T: LowRank, matching: Matching) -> list[float]:
    """‖P_c‖/‖T_t‖ for each matched pair (0 where T_t is zero), as `recovery.l2r_pairs`."""
    pn, tn = norms(P), T.norms()
    return [
        float(pn[c]) / float(tn[t]) if float(tn[t]) > EPS else 0.0
        for t, c in zip(matching.truth, matching.component, strict=True)
    ]


def single_column(T: LowRank, k: int) -> int | None:
    """The one column truth k writes through (T = u e_jᵀ-like), or None if it reads several."""
    nz = ((T.V[k].abs().sum(dim=1) > EPS) & (float(T.U[k].abs().sum()) > EPS)).nonzero().flatten()
    return int(nz[0]) if nz.numel() == 1 else None


def colwise(P: Components, T: LowRank) -> Colwise | None:
    """`recovery.colwise` from factors: column j of each truth vs column j of every component."""
    cos: list[float] = []
    l2r: list[float] = []
    for k in range(len(T)):
        j = single_column(T, k)
        if j is None:
            return None
        cols = P.columns(j) if isinstance(P, LowRank) else P[:, :, j].double()  # (C, o)
        c, r = column_match(cols, T.column(k, j))
        cos.append(c)
        l2r.append(r)
    return Colwise(cos, l2r)


def components(dec: Decomposition, site: str, shape: torch.Size) -> Components | None:
    """The method's parameter components at `site`: its factors, else its dense matrices [C, o, i]."""
    if site not in dec.sites:
        return None
    f = dec.factors(site)
    if f is not None:
        return LowRank(f[0].detach().cpu().double(), f[1].detach().cpu().double())
    D = dec.directions(site, "parameter")
    return None if D is None else D.detach().float().cpu().reshape(-1, *shape)


def compare(
    dec: Decomposition, site: str, rank1: Sequence[Mechanism], proj: Tensor | None, Q: Tensor | None
) -> tuple[Components, LowRank, Tensor] | None:
    """(components, truth, sim [n_true, C]) of one site, read-projected as the dense path does:
    with the read basis Q both sides are compared in it (exact); with only Π, components as P Π."""
    P = components(dec, site, rank1[0].direction.shape)
    if P is None:
        return None
    T = LowRank.of(rank1)
    if proj is not None:
        M = Q if Q is not None else proj
        P = P.read(M) if isinstance(P, LowRank) else P @ M.to(P.dtype)
        T = T.read(Q) if Q is not None else T
    return P, T, similarity(P, T)


def dense_components(P: Components) -> Tensor:
    """[C, o, i] float: what a dense rank-k mechanism's group sum is taken over."""
    if isinstance(P, LowRank):
        return P.dense().float()
    return P


__all__ = [
    "Components",
    "LowRank",
    "colwise",
    "compare",
    "components",
    "dense_components",
    "inner",
    "l2r_pairs",
    "norms",
    "similarity",
    "single_column",
]
