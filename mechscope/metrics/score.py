"""`score`: every metric of DESIGN.md's table for one decomposition of one target.

    dec = method.fit(target, task, cfg, ctx)
    result = score(dec, task)            # truth defaults to task.ground_truth(dec.target)
    result.metrics["mmcs"], result.metrics["spaces"]["activation"]["mmcs"], result.matches

Recovery is computed per (space, site) on the rank-1 scored mechanisms of that site (rule
"never" is never scored; rank > 1 with rule "dense" goes to the dense group rule), then pooled
over sites by the one definition of each key in recovery.py / activity.py (`pool`): means over
true mechanisms (mmcs, coverage, activity_f1), over matched pairs (mcc, ml2r,
ablation_specificity), ratios of totals (uniqueness: SAELens's, every component counted).
Each site's `active_matrix` is computed once per eval set (`SiteResult.active_onehot/active_data`)
and every metric reads it from there; `l0_true` counts the truth of the scored sites only. A space is *present* when at least
one site is scored in it: the truth has scored mechanisms there and the method has directions. Truth at
sites the method does not decompose in a space is left out of that space (an SAE on the residual
stream is not scored on the MLP's truth) and listed in `unscored_sites`; so is activation truth at
a site whose parameter truth is one dense rank-k mechanism, for methods with parameter
components there (DESIGN: a rank-k mechanism has no activation direction; its rank-1 pieces are
not per-feature writes). The top-level recovery keys come from parameter space when present,
else activation space; `sites.<site>` holds one space per site (its `recovery_space`).
Two additions read the matches afterwards: `absorption`/`absorption_data` (only when the truth has a
hierarchy; top space's pairs) and `latent_precision/recall/f1` (activation space, every latent);
they return their keys, top level and per site. `pgd_faithfulness` (metrics/pgd.py) sits beside
`faithfulness`. A factored parameter truth (`Mechanism.factors`) is scored from factors (metrics/factored.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from mechscope.core import SPACES, GroundTruth, Mechanism, Space, Task, active_matrix
from mechscope.decompose.base import Decomposition
from mechscope.metrics import absorption as absn
from mechscope.metrics import activity as act
from mechscope.metrics import factored as fz
from mechscope.metrics import latent_f1 as lf1
from mechscope.metrics import recovery as rec
from mechscope.metrics.eval_sets import EvalSets, eval_sets
from mechscope.metrics.faithfulness import AblationPair, ablation_specificity, faithfulness, shrinkage_by_site
from mechscope.metrics.matching import (
    Matching,
    activation_similarity,
    extend_basis,
    hungarian,
    parameter_similarity,
    project_read,
    read_basis,
    side_key,
    signed_tiebreak,
)
from mechscope.metrics.pgd import PGD_STEPS, check_pgd_steps, pgd_faithfulness
from mechscope.metrics.result import Match, Score


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
    else:
        P = D.detach().float().cpu()
        T = torch.stack([m.direction for m in rank1]).float().cpu()
        sim = activation_similarity(P, T)
        read_sim = _read_similarity(dec, site, rank1)
    key = sim.double() + signed_tiebreak(P, T) if space == "activation" else sim.double()
    side = side_key(sim, P, T) if space == "activation" and dec.signed_directions else None
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


def target_device(dec: Decomposition) -> torch.device:
    """Where the target runs (eval inputs go there; every statistic comes back to the CPU)."""
    p = next(iter(dec.target.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def read_bases(truth: GroundTruth) -> dict[str, Tensor | None]:
    """`read_basis` of every site's read projection, each distinct Π decomposed once (the
    residual MLP's layers all share one)."""
    out: dict[str, Tensor | None] = {}
    seen: list[tuple[Tensor, Tensor | None]] = []
    for site, proj in truth.read_projection.items():
        proj = proj.detach().cpu()
        hit = [Q for P, Q in seen if P.shape == proj.shape and torch.equal(P, proj)]
        out[site] = hit[0] if hit else read_basis(proj)
        if not hit:
            seen.append((proj, out[site]))
    return out


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else math.nan


def pool(results: list[SiteResult], space: Space) -> dict[str, Any]:
    """Recovery keys over a set of site results (one site, or all sites of a space): each key is
    one call of its definition in recovery.py / activity.py (DESIGN.md's metric table)."""
    out: dict[str, Any] = {}
    r1 = [r for r in results if r.rank1]
    n1 = sum(len(r.rank1) for r in r1)
    dense = [d for r in results for d in r.dense]
    out["n_true"] = n1 + len(dense)
    out["true_rank"] = n1 + sum(m.rank for m, _ in dense)
    if results:
        active = torch.cat([r.active_data for r in results], dim=1)
        out["l0_true"] = act.l0_true(active, [k for r in results for k in r.ranks])
    if n1:
        out["mmcs"] = rec.mmcs([r.sim for r in r1])
        out["mcc"] = rec.mcc([r.mcc_matching or r.matching for r in r1])
        out["uniqueness"] = rec.uniqueness([r.key for r in r1])
        out["coverage"] = rec.coverage([r.matching for r in r1], n1)
        out["activity_f1"] = act.activity_f1([r.f1 for r in r1])
        out["activity_f1_data"] = act.activity_f1([r.f1_data for r in r1])
        reads = [r for r in r1 if r.read_sim is not None]
        if reads:
            out["read_mmcs"] = rec.mmcs([r.read_sim for r in reads if r.read_sim is not None])
            out["read_mcc"] = _mean([v for r in reads for v in r.read_pairs])
        if space == "parameter":
            out["ml2r"] = rec.ml2r([r.l2r for r in r1])
            out["mmcs_colwise"] = rec.mmcs_colwise([r.colwise for r in r1])
            out["ml2r_colwise"] = rec.ml2r_colwise([r.colwise for r in r1])
    if dense:
        out["dense_cos"] = _mean([d.cos for _, d in dense])
        out["dense_l2r"] = _mean([d.l2r for _, d in dense])
        out["dense_rank"] = sum(d.rank for _, d in dense)
    return out


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    """Drop keys whose value is undefined (NaN/None): absent, never zero."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out[k] = _clean(v)
        elif v is not None and not (isinstance(v, float) and math.isnan(v)):
            out[k] = v
    return out


SiteKeys = dict[str, dict[str, float]]
"""{site: {key: value}} that a helper hands back for `sites.<site>`."""


def _absorption(
    dec: Decomposition, truth: GroundTruth, n_features: int, by_space: dict[Space, list[SiteResult]],
    top: Space, site_space: dict[str, Space],
) -> tuple[dict[str, float], SiteKeys]:  # fmt: skip
    """`absorption` (the `hierarchy` probe set) and `absorption_data` (`data`): top level from the
    top space's matches, per site from the site's recovery space (see metrics/absorption.py)."""
    probe = absn.hierarchy_probe(truth.hierarchy, n_features)
    fires_probe = {s: f.cpu() for s, f in dec.fires(probe.to(target_device(dec))).items()}
    top_probe: list[float] = []
    top_data: list[float] = []
    per_site: SiteKeys = {}
    for space, results in by_space.items():
        for r in results:
            if not r.rank1:
                continue
            m = r.matching
            fp = fires_probe.get(r.site, torch.zeros(probe.shape[0], r.n_components, dtype=torch.bool))
            active_probe = active_matrix(r.rank1, probe)
            on_probe = absn.site_absorption(truth.hierarchy, r.rank1, m.truth, m.component, active_probe, fp)
            on_data = absn.site_absorption(
                truth.hierarchy, r.rank1, m.truth, m.component, r.active_data_rank1, r.fires_data
            )
            on_data = [v for v in on_data if not math.isnan(v)]
            if space == top:
                top_probe += on_probe
                top_data += on_data
            if site_space.get(r.site) == space:
                per_site[r.site] = {"absorption": _mean(on_probe), "absorption_data": _mean(on_data)}
    return {"absorption": _mean(top_probe), "absorption_data": _mean(top_data)}, per_site


def _latent_f1(results: list[SiteResult]) -> tuple[dict[str, float], SiteKeys]:
    """`latent_precision/recall/f1` (SAELens's definition, metrics/latent_f1.py) on `data`, from
    the activation space: pooled over every latent of every site, and per site."""
    per_site: SiteKeys = {}
    scores = []
    for r in results:
        if not r.rank1:
            continue
        ls = lf1.latent_scores(r.sim, r.active_data_rank1, r.fires_data)
        scores.append(ls)
        per_site[r.site] = lf1.mean_scores([ls])
    return lf1.mean_scores(scores), per_site


def score(
    decomposition: Decomposition,
    task: Task,
    truth: GroundTruth | None = None,
    *,
    sets: EvalSets | None = None,
    ablation: bool = True,
    pgd_steps: int = PGD_STEPS,
) -> Score:
    """Score `decomposition` (of `decomposition.target`) against the task's ground truth.

    Arguments:
        decomposition: what a method's `fit` returned; its `.target` is the scored network.
        task: supplies the evaluation sets (`onehot`, `data`) and, by default, the truth.
        truth: the ground truth; default `task.ground_truth(decomposition.target)`.
        sets: override the evaluation sets (tests); default `eval_sets(task)`.
        ablation: compute `ablation_specificity` (extra forwards, one batch per 8k rows).
        pgd_steps: ascent steps of the worst-case ablation `pgd_faithfulness` (≥ 0; 0 = a random
            admissible mask only), recorded as `pgd_steps`.
    Returns:
        `Score` with `metrics` (the metrics.json body, without task/method/seed/wall_s),
        `matches` (Hungarian pairs, every space) and `tensors` (similarity and onehot activity).
    """
    check_pgd_steps(pgd_steps)
    dec = decomposition
    truth = truth if truth is not None else task.ground_truth(dec.target)
    sets = sets if sets is not None else eval_sets(task)
    with torch.no_grad():
        return _score(dec, truth, sets, ablation, pgd_steps)


def _score(dec: Decomposition, truth: GroundTruth, sets: EvalSets, ablation: bool, pgd_steps: int) -> Score:
    kind = truth.output_kind
    dev = target_device(dec)
    onehot_dev, data_dev = sets.onehot.to(dev), sets.data.to(dev)
    act_onehot = {s: a.detach().float().cpu() for s, a in dec.activity(onehot_dev).items()}
    fires_onehot = {s: a > dec.fire_threshold for s, a in act_onehot.items()}
    fires_data = {s: f.cpu() for s, f in dec.fires(data_dev).items()}
    any_feature = (sets.data != 0).any(dim=-1)
    tensors: dict[str, Tensor] = {f"onehot_activity.{s}": a.detach().float() for s, a in act_onehot.items()}
    matches: list[Match] = []

    # --- recovery per space and site ------------------------------------------------------------
    by_space: dict[Space, list[SiteResult]] = {}
    unscored: dict[str, list[str]] = {}
    bases = read_bases(truth)
    for space in SPACES:
        results, skipped = [], []
        for site in truth.sites(space):
            r = site_recovery(dec, truth, space, site, sets, fires_onehot, fires_data, bases, any_feature)
            if r is not None:
                results.append(r)
            elif any(scored(truth.in_space(space, site))):
                skipped.append(site)
        if not results:
            continue  # the method has no object in this space: its keys stay absent
        by_space[space] = results
        if skipped:
            unscored[space] = skipped
        for r in results:
            if r.rank1:
                tensors[f"similarity.{space}.{r.site}"] = r.sim
            for t, c, v in zip(r.matching.truth, r.matching.component, r.matching.similarity, strict=True):
                matches.append(Match(space, r.site, r.rank1[t].name, c, v))
    present = list(by_space)
    top: Space | None = present[0] if present else None  # SPACES lists "parameter" first

    metrics: dict[str, Any] = {"recovery_space": top}
    sites: dict[str, dict[str, Any]] = {s: {} for s in dec.sites}
    site_space: dict[str, Space] = {}  # one space per site: the top one where the site has it
    if top is not None:
        # l0_true comes with the pool: the truth of the scored sites only (issue 13)
        metrics.update(pool(by_space[top], top))
        metrics["spaces"] = {sp: pool(by_space[sp], sp) for sp in present}
        for space in present:
            for r in by_space[space]:
                if r.site not in site_space:
                    site_space[r.site] = space
                    sites.setdefault(r.site, {}).update(recovery_space=space, **pool([r], space))

    # --- absorption (hierarchical truth) and per-latent F1 (activation space) -------------------
    if top is not None and truth.hierarchy:
        top_keys, per_site = _absorption(dec, truth, int(sets.data.shape[1]), by_space, top, site_space)
        metrics.update(top_keys)
        for site, keys in per_site.items():
            sites[site].update(keys)
    if "activation" in by_space:
        pooled, per_site = _latent_f1(by_space["activation"])
        metrics.update(pooled)
        metrics["spaces"]["activation"].update(pooled)
        for site, keys in per_site.items():
            sites.setdefault(site, {}).update(keys)

    # --- activity ------------------------------------------------------------------------------
    n_total, n_alive_total = 0, 0
    alive_by_site: dict[str, int] = {}
    l0_total = torch.zeros(sets.data.shape[0])
    for s in dec.sites:
        C = dec.n_components(s)
        fo = fires_onehot.get(s, torch.zeros(sets.onehot.shape[0], C, dtype=torch.bool))
        fd = fires_data.get(s, torch.zeros(sets.data.shape[0], C, dtype=torch.bool))
        alive = int(act.alive(fo, fd).sum())
        alive_by_site[s] = alive
        n_total += C
        n_alive_total += alive
        l0_total += fd.float().sum(dim=1)
        sites[s].update(l0=act.l0(fd), n_alive=alive, n_components=C, dead_frac=act.dead_frac(alive, C))
    metrics.update(
        l0=float(l0_total.mean()),
        n_alive=n_alive_total,
        n_alive_by_site=alive_by_site,
        n_components=n_total,
        dead_frac=act.dead_frac(n_alive_total, n_total),
    )

    # --- behaviour -----------------------------------------------------------------------------
    metrics["faithfulness"] = faithfulness(dec, data_dev, kind)
    worst = pgd_faithfulness(dec, data_dev, kind, pgd_steps)
    metrics.update(pgd_faithfulness=worst.total, pgd_steps=pgd_steps)
    for s, v in worst.by_site.items():
        sites[s]["pgd_faithfulness"] = v
    shrink = shrinkage_by_site(dec, onehot_dev)
    if shrink:
        metrics["shrinkage"] = _mean(list(shrink.values()))
        for site, v in shrink.items():
            sites.setdefault(site, {})["shrinkage"] = v
    if ablation and top is not None:
        pairs, where = [], []
        for r in by_space[top]:
            if r.site not in dec.sites:
                continue
            active = r.active_data_rank1
            for t, c in zip(r.matching.truth, r.matching.component, strict=True):
                pairs.append(AblationPair(r.site, c, active[:, t]))
                where.append(r.site)
        spec = ablation_specificity(dec, data_dev, pairs, kind)
        metrics["ablation_specificity"] = _mean([v for v in spec if v is not None])
        for s in set(where):
            sites[s]["ablation_specificity"] = _mean(
                [v for v, w in zip(spec, where, strict=True) if w == s and v is not None]
            )

    metrics["n_features"] = truth.n_features
    metrics["represented"] = list(truth.represented)
    metrics["n_represented"] = len(truth.represented)
    if truth.notes:
        metrics["truth_notes"] = list(truth.notes)
    if unscored:
        metrics["unscored_sites"] = unscored
    metrics["sites"] = sites
    return Score(metrics=_clean(metrics), matches=matches, tensors=tensors)
