"""Recovery metrics: how well components line up with the true mechanisms.

All functions take a similarity matrix `sim` [n_true, C] (rows: rank-1 true mechanisms of one
site and space; columns: that site's components) and/or the Hungarian `Matching` on it.

- `mmcs`: mean over true mechanisms of the best similarity to any component.
- `mcc`: mean similarity over Hungarian-matched pairs (SAELens synthetic benchmark).
- `uniqueness`: distinct true mechanisms that are some component's best match / components.
- `coverage`: matched pairs with similarity ≥ 0.9 / true mechanisms.
- `ml2r`: ‖P_c Π‖/‖T‖ over matched pairs (parameter space; 1.0 = no shrinkage).
- `mmcs_colwise` / `ml2r_colwise`: the SPD paper's column-wise versions (column j of the truth vs
  column j of each component) — weak evidence in low dimension, kept for comparison.
- `dense_*`: a rank-k mechanism against the group of components firing on ≥ 90 % of inputs with
  any non-zero feature: cosine of the group's sum with T, norm ratio, group size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mechscope.metrics.matching import EPS, Matching, frobenius_cos, norm_ratio

COVERAGE_THRESHOLD = 0.9
DENSE_FRACTION = 0.9


def mmcs(sim: Tensor) -> float:
    """Mean over rows (true mechanisms) of the max over columns (components)."""
    if sim.shape[0] == 0:
        return float("nan")
    if sim.shape[1] == 0:
        return 0.0
    return float(sim.max(dim=1).values.mean())


def best_similarity(sim: Tensor) -> Tensor:
    """[n_true] the best similarity of each true mechanism (0 when there are no components)."""
    return sim.max(dim=1).values if sim.shape[1] > 0 else torch.zeros(sim.shape[0])


def mcc(matching: Matching) -> float:
    """Mean similarity over matched pairs."""
    s = matching.similarity
    return sum(s) / len(s) if s else float("nan")


def distinct_best(sim: Tensor) -> int:
    """How many distinct true mechanisms are some component's best match (uniqueness numerator)."""
    if sim.shape[0] == 0 or sim.shape[1] == 0:
        return 0
    return int(sim.argmax(dim=0).unique().numel())


def uniqueness(sim: Tensor) -> float:
    """Distinct best-matched true mechanisms / number of components."""
    return distinct_best(sim) / sim.shape[1] if sim.shape[1] > 0 else float("nan")


def n_covered(matching: Matching, threshold: float = COVERAGE_THRESHOLD) -> int:
    return sum(1 for s in matching.similarity if s >= threshold)


def coverage(matching: Matching, n_true: int, threshold: float = COVERAGE_THRESHOLD) -> float:
    """True mechanisms matched with similarity ≥ threshold / number of true mechanisms."""
    return n_covered(matching, threshold) / n_true if n_true else float("nan")


def l2r_pairs(P: Tensor, T: Tensor, matching: Matching) -> list[float]:
    """‖P_c‖/‖T‖ for each matched pair; P [C, o, i] already read-projected, T [n, o, i]."""
    return [norm_ratio(P[c], T[t]) for t, c in zip(matching.truth, matching.component, strict=True)]


def ml2r(P: Tensor, T: Tensor, matching: Matching) -> float:
    r = l2r_pairs(P, T, matching)
    return sum(r) / len(r) if r else float("nan")


@dataclass(frozen=True)
class Colwise:
    """Per true mechanism: best column cosine and the norm ratio of that best component's column."""

    cos: list[float]
    l2r: list[float]


def single_column(T: Tensor) -> int | None:
    """The one non-zero column of T [o, i], or None if T is spread over several columns."""
    nz = (T.abs().sum(dim=0) > EPS).nonzero().flatten()
    return int(nz[0]) if nz.numel() == 1 else None


def colwise(P: Tensor, T: Tensor) -> Colwise | None:
    """SPD paper's column-wise MMCS/ML2R: truth column T[:, j] vs every component's P_c[:, j].

    Defined only where every true mechanism is a single column (TMS: W[:, j] e_jᵀ); None otherwise."""
    cos: list[float] = []
    l2r: list[float] = []
    for Tk in T:
        j = single_column(Tk)
        if j is None:
            return None
        t = Tk[:, j].double()  # (o,)
        cols = P[:, :, j].double()  # (C, o)
        if cols.shape[0] == 0:
            cos.append(0.0)
            l2r.append(0.0)
            continue
        den = (cols.norm(dim=1) * t.norm()).clamp_min(EPS)
        c = (cols @ t) / den  # (C,)
        best = int(c.argmax())
        cos.append(float(c[best]))
        l2r.append(float(cols[best].norm() / t.norm().clamp_min(EPS)))
    return Colwise(cos, l2r)


def mmcs_colwise(P: Tensor, T: Tensor) -> float | None:
    cw = colwise(P, T)
    return None if cw is None or not cw.cos else sum(cw.cos) / len(cw.cos)


def ml2r_colwise(P: Tensor, T: Tensor) -> float | None:
    cw = colwise(P, T)
    return None if cw is None or not cw.l2r else sum(cw.l2r) / len(cw.l2r)


@dataclass(frozen=True)
class Dense:
    cos: float
    l2r: float
    rank: int
    group: list[int]


def dense_group(fires: Tensor, any_feature: Tensor, fraction: float = DENSE_FRACTION) -> Tensor:
    """bool[C]: components firing on ≥ `fraction` of the inputs that have a non-zero feature.

    fires: bool[batch, C] on `data`; any_feature: bool[batch]."""
    if int(any_feature.sum()) == 0:
        return torch.zeros(fires.shape[1], dtype=torch.bool)
    return fires[any_feature].float().mean(dim=0) >= fraction


def dense_score(P: Tensor, T: Tensor, group: Tensor) -> Dense:
    """A dense rank-k mechanism T [o, i] against the sum of its group of components P [C, o, i]."""
    idx = group.nonzero().flatten().tolist()
    total = P[idx].sum(dim=0) if idx else torch.zeros_like(T)
    return Dense(frobenius_cos(total, T), norm_ratio(total, T), len(idx), idx)
