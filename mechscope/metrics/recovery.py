"""Recovery metrics: how well components line up with the true mechanisms.

Per site, a similarity matrix `sim` [n_true, C] (rows: rank-1 true mechanisms of one site and
space; columns: that site's components) and the Hungarian `Matching` on it. Each pooled metric
takes one entry per site (a list of one for a single site) and is the one definition `score` uses
(DESIGN.md's metric table):

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

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from mechscope.metrics.matching import EPS, Matching, frobenius_cos, norm_ratio

COVERAGE_THRESHOLD = 0.9
DENSE_FRACTION = 0.9


def best_similarity(sim: Tensor) -> Tensor:
    """[n_true] the best similarity of each true mechanism (0 when there are no components)."""
    return sim.max(dim=1).values if sim.shape[1] > 0 else torch.zeros(sim.shape[0])


def mmcs(sims: Sequence[Tensor]) -> float:
    """Mean over every true mechanism (row) of every site of its best similarity to a component of
    its site (0 where the site has none); NaN when there are no true mechanisms."""
    best = torch.cat([best_similarity(s) for s in sims]) if sims else torch.zeros(0)
    return float(best.mean()) if best.numel() else math.nan


def mcc(matchings: Sequence[Matching]) -> float:
    """Mean similarity over the Hungarian-matched pairs of every site (SAELens's
    `mean_correlation_coefficient`: min(n_true, C) pairs per site)."""
    s = [v for m in matchings for v in m.similarity]
    return sum(s) / len(s) if s else math.nan


def distinct_best(key: Tensor) -> int:
    """How many distinct true mechanisms are some component's best match (argmax over rows of
    each column of `key` [n_true, C]; ties go to the first, as `argmax` does in SAELens)."""
    if key.shape[0] == 0 or key.shape[1] == 0:
        return 0
    return int(key.argmax(dim=0).unique().numel())


def uniqueness(keys: Sequence[Tensor]) -> float:
    """Σ_sites distinct best-matched true mechanisms / Σ_sites components (SAELens's
    `feature_uniqueness`: every latent counts in the denominator, dead or zero ones included).

    `keys` are what components rank truths by: the similarity, plus in activation space the
    signed cosine that tells ±t apart (`matching.sign_key`)."""
    n_comp = sum(int(k.shape[1]) for k in keys)
    return sum(distinct_best(k) for k in keys) / n_comp if n_comp else math.nan


def n_covered(matching: Matching, threshold: float = COVERAGE_THRESHOLD) -> int:
    return sum(1 for s in matching.similarity if s >= threshold)


def coverage(matchings: Sequence[Matching], n_true: int, threshold: float = COVERAGE_THRESHOLD) -> float:
    """True mechanisms matched with similarity ≥ threshold / number of true mechanisms (all sites)."""
    return sum(n_covered(m, threshold) for m in matchings) / n_true if n_true else math.nan


def l2r_pairs(P: Tensor, T: Tensor, matching: Matching) -> list[float]:
    """‖P_c‖/‖T‖ for each matched pair; P [C, o, i] already read-projected, T [n, o, i]."""
    return [norm_ratio(P[c], T[t]) for t, c in zip(matching.truth, matching.component, strict=True)]


def ml2r(pair_ratios: Sequence[Sequence[float]]) -> float:
    """Mean of ‖P_c‖/‖T‖ (`l2r_pairs`, one list per site) over every matched pair."""
    r = [v for site in pair_ratios for v in site]
    return sum(r) / len(r) if r else math.nan


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
        c, r = column_match(P[:, :, j].double(), Tk[:, j].double())
        cos.append(c)
        l2r.append(r)
    return Colwise(cos, l2r)


def column_match(cols: Tensor, t: Tensor) -> tuple[float, float]:
    """(best cosine of any component column cols [C, o] with the truth column t [o], that
    column's norm ratio to t); (0, 0) when there are no components."""
    if cols.shape[0] == 0:
        return 0.0, 0.0
    den = (cols.norm(dim=1) * t.norm()).clamp_min(EPS)
    c = (cols @ t) / den  # (C,)
    best = int(c.argmax())
    return float(c[best]), float(cols[best].norm() / t.norm().clamp_min(EPS))


def mmcs_colwise(cws: Sequence[Colwise | None]) -> float:
    """Mean best column cosine over every true mechanism; NaN unless every site has `colwise`."""
    if not cws or any(cw is None for cw in cws):
        return math.nan
    v = [c for cw in cws if cw is not None for c in cw.cos]
    return sum(v) / len(v) if v else math.nan


def ml2r_colwise(cws: Sequence[Colwise | None]) -> float:
    """Mean column norm ratio of each true mechanism's best column; NaN as `mmcs_colwise`."""
    if not cws or any(cw is None for cw in cws):
        return math.nan
    v = [r for cw in cws if cw is not None for r in cw.l2r]
    return sum(v) / len(v) if v else math.nan


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
