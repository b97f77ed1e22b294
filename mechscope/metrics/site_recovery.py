"""One site's recovery: similarities, the one-to-one matching and the per-truth F1 (what `score` pools).

Per (space, site): the rank-1 scored mechanisms (rule "never" is never scored; rank > 1 with rule
"dense" goes to the dense group rule), their similarity to every component (matching.py), the
Hungarian matching — SAELens's on |cos| for mcc, and for non-negative latents one that keeps each on
its side of ±t (`matching.side_key`) for the F1 and coverage pairs — and each site's `active_matrix`,
computed once per eval set. A factored parameter truth is scored from factors (factored.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from mechscope.core import GroundTruth, Mechanism, Space, active_matrix
from mechscope.decompose.base import Decomposition
from mechscope.metrics import activity as act
from mechscope.metrics import factored as fz
from mechscope.metrics import recovery as rec
from mechscope.metrics.eval_sets import EvalSets
from mechscope.metrics.matching import (
    Matching,
    activation_cosine,
    activation_similarity,
    extend_basis,
    hungarian,
    parameter_similarity,
    project_read,
    side_key,
    signed_tiebreak,
)


def scored(mechs: list[Mechanism]) -> tuple[list[Mechanism], list[Mechanism]]:
    """(rank-1 mechanisms scored one to one, dense rank-k mechanisms scored as a group)."""
    rank1 = [m for m in mechs if m.rank == 1 and m.rule != "never"]
    dense = [m for m in mechs if m.rank > 1 and m.rule == "dense" and m.space == "parameter"]
    return rank1, dense


@dataclass
class SiteResult:
    """Recovery of the scored mechanisms at one site in one space."""

    space: Space
    site: str
    rank1: list[Mechanism]
    sim: Tensor  # (n_rank1, C)
    matching: Matching
    n_components: int
    key: Tensor
    """(n_rank1, C) what matching and best-match rank by: `sim` plus a sign tie-break."""
    active_onehot: Tensor
    """bool[n_onehot, n_rank1] `active_matrix` of the rank-1 mechanisms, computed once per set."""
    active_data: Tensor
    """bool[n_data, n_rank1 + n_dense] on `data`: rank-1 columns first, then the dense mechanisms."""
    fires_data: Tensor
    """bool[n_data, C] the site's components firing on `data`."""
    l2r: list[float] = field(default_factory=list)
    f1: list[float] = field(default_factory=list)
    f1_data: list[float] = field(default_factory=list)
    colwise: rec.Colwise | None = None
    read_sim: Tensor | None = None
    """Transcoder truth only: [n_rank1, C] |cos| of each true read vector with each encoder row."""
    read_pairs: list[float] = field(default_factory=list)
    """… and with the encoder row of its matched (by write direction) component."""
    dense: list[tuple[Mechanism, rec.Dense]] = field(default_factory=list)
    mcc_matching: Matching | None = None
    """SAELens's matching (on `key`) where `matching` was assigned by side; None: `matching`."""

    @property
    def active_data_rank1(self) -> Tensor:
        return self.active_data[:, : len(self.rank1)]

    @property
    def ranks(self) -> list[int]:
        """Rank of every column of `active_data` (what `l0_true` weighs by)."""
        return [m.rank for m in self.rank1] + [m.rank for m, _ in self.dense]


def dense_only(truth: GroundTruth, site: str) -> bool:
    """The site's parameter truth is dense rank-k mechanisms only (e.g. the residual MLP's mlp_out)."""
    rank1, dense = scored(truth.in_space("parameter", site))
    return bool(dense) and not rank1


def _directions(dec: Decomposition, site: str, space: Space) -> Tensor | None:
    return dec.directions(site, space) if site in dec.sites else None


def site_recovery(
    dec: Decomposition,
    truth: GroundTruth,
    space: Space,
    site: str,
    sets: EvalSets,
    fires_onehot: dict[str, Tensor],
    fires_data: dict[str, Tensor],
    bases: dict[str, Tensor | None],
    any_feature: Tensor,
) -> SiteResult | None:
    """Similarities, matching, F1 and dense groups of one site; None if nothing is scored there."""
    rank1, dense = scored(truth.in_space(space, site))
    if not rank1 and not dense:
        return None
    if space == "parameter" and any(m.factors is not None for m in rank1):
        return _factored_site(dec, truth, site, rank1, dense, sets, fires_onehot, fires_data, bases, any_feature)
    D = _directions(dec, site, space)
    if D is None:
        return None  # the method does not decompose this site in this space
    if space == "activation" and dense_only(truth, site) and _directions(dec, site, "parameter") is not None:
        return None  # pieces of a dense rank-k weight mechanism have no activation direction
    dense_pairs: list[tuple[Tensor, Tensor]] = []  # per dense mechanism: (components, T) compared
    colwise_ok = True
    read_sim: Tensor | None = None
    if space == "parameter":
        shape = (rank1 or dense)[0].direction.shape  # (o, i)
        P = D.detach().float().cpu().reshape(-1, *shape)  # (C, o, i)
        T = torch.stack([m.direction for m in rank1]).float().cpu() if rank1 else torch.zeros(0, *shape)
        dense_T = [m.direction.float().cpu() for m in dense]
        dense_pairs = [(P, t) for t in dense_T]
        proj = truth.read_projection.get(site)
        proj = proj.cpu() if proj is not None else None
        if proj is not None:
            colwise_ok = False  # columns lose their meaning once the read side is projected
            Q = bases.get(site)
            if Q is None:
                P = project_read(P, proj)
                dense_pairs = [(P, t) for t in dense_T]
            else:  # exact and cheaper: compare in the projection's own basis (d_in -> k)
                # A dense mechanism may read outside Π (the residual MLP's "upstream" part of a
                # later layer's W_in reads earlier MLPs' writes): compare it on Π plus its own reads.
                bases_m = [extend_basis(Q, t) for t in dense_T]
                dense_pairs = [(P @ Qm, t @ Qm) for t, Qm in zip(dense_T, bases_m, strict=True)]
                P, T = P @ Q, T @ Q
        sim = parameter_similarity(P, T)
        key: Tensor = sim.double()
        side: Tensor | None = None
    else:
        P = D.detach().float().cpu()
        T = torch.stack([m.direction for m in rank1]).float().cpu()
        cos = activation_cosine(P, T)  # once: the similarity and both matching keys read it
        sim = cos.abs().float()  # = activation_similarity(P, T)
        read_sim = _read_similarity(dec, site, rank1)
        key = sim.double() + signed_tiebreak(cos)
        side = side_key(sim, cos) if dec.signed_directions else None
    res = _matched_site(space, site, rank1, dense, sim, key, int(P.shape[0]), sets, fires_onehot, fires_data, side)
    matching = res.matching
    if space == "activation" and read_sim is not None:
        res.read_sim = read_sim
        res.read_pairs = [
            float(read_sim[t, c]) for t, c in zip(matching.truth, matching.component, strict=True)
        ]
    if space == "parameter":
        res.l2r = rec.l2r_pairs(P, T, matching)
        res.colwise = rec.colwise(P, T) if rank1 and colwise_ok else None
        group = rec.dense_group(res.fires_data, any_feature)
        for m, (Pm, Tm) in zip(dense, dense_pairs, strict=True):
            res.dense.append((m, rec.dense_score(Pm, Tm, group)))
    return res


def _factored_site(
    dec: Decomposition, truth: GroundTruth, site: str, rank1: list[Mechanism], dense: list[Mechanism],
    sets: EvalSets, fires_onehot: dict[str, Tensor], fires_data: dict[str, Tensor],
    bases: dict[str, Tensor | None], any_feature: Tensor,
) -> SiteResult | None:  # fmt: skip
    """`site_recovery` in parameter space for a factored truth (metrics/factored.py): the same
    keys from inner products of factors, with the method's own factors where it has them."""
    compared = fz.compare(dec, site, rank1, truth.read_projection.get(site), bases.get(site))
    if compared is None:
        return None
    P, T, sim = compared
    C = len(P) if isinstance(P, fz.LowRank) else int(P.shape[0])
    res = _matched_site("parameter", site, rank1, dense, sim, sim.double(), C, sets, fires_onehot, fires_data)
    res.l2r = fz.l2r_pairs(P, T, res.matching)
    res.colwise = fz.colwise(P, T) if site not in truth.read_projection else None
    if dense:  # a dense rank-k mechanism beside factored ones: its group sum is one d_out × d_in matrix
        if site in truth.read_projection:
            raise NotImplementedError(f"site {site!r}: dense mechanisms beside a factored truth with a read projection")
        group = rec.dense_group(res.fires_data, any_feature)
        res.dense = [(m, rec.dense_score(fz.dense_components(P), m.matrix().float().cpu(), group)) for m in dense]
    return res


def _matched_site(
    space: Space, site: str, rank1: list[Mechanism], dense: list[Mechanism], sim: Tensor, key: Tensor, C: int,
    sets: EvalSets, fires_onehot: dict[str, Tensor], fires_data: dict[str, Tensor], side: Tensor | None = None,
) -> SiteResult:  # fmt: skip
    """The part of a site's recovery every path shares: the matching on `key`, which truths are
    active on each eval set, and the matched components' per-truth F1 on both sets.

    `side` (non-negative latents, `matching.side_key`): where a pair of the `key` matching has
    cos ≤ 0, the F1 and coverage pairs come from a matching on `side`; mcc keeps `key`'s. Where
    every pair has cos > 0 that matching is optimal for `side` too (its total is 2× the largest
    |cos| total), so the second one is only solved when it can differ."""
    mcc_matching = hungarian(sim, key)
    matching = mcc_matching
    if side is not None and any(
        float(side[t, c]) <= float(sim[t, c]) for t, c in zip(mcc_matching.truth, mcc_matching.component, strict=True)
    ):
        matching = hungarian(sim, side)
    fo = fires_onehot.get(site, torch.zeros(sets.onehot.shape[0], C, dtype=torch.bool))
    fd = fires_data.get(site, torch.zeros(sets.data.shape[0], C, dtype=torch.bool))
    active_onehot = active_matrix(rank1, sets.onehot)
    res = SiteResult(space, site, rank1, sim, matching, C, key, active_onehot, active_matrix(rank1 + dense, sets.data), fd,
                     mcc_matching=mcc_matching)
    if rank1:
        res.f1 = act.f1_per_truth(active_onehot, fo, matching.truth, matching.component)
        res.f1_data = act.f1_per_truth(res.active_data_rank1, fd, matching.truth, matching.component)
    return res


def _read_similarity(dec: Decomposition, site: str, rank1: list[Mechanism]) -> Tensor | None:
    """[n, C] |cos| between true read vectors and the method's read directions (transcoders:
    `read_directions(site)`, encoder rows); None where either side has none."""
    reader = getattr(dec, "read_directions", None)
    if reader is None or not rank1 or any(m.read is None for m in rank1):
        return None
    R = reader(site)
    if R is None:
        return None
    reads = torch.stack([m.read for m in rank1 if m.read is not None]).float().cpu()
    return activation_similarity(R.detach().float().cpu(), reads) if R.shape[1] == reads.shape[1] else None
