"""`score`: every metric of DESIGN.md's table for one decomposition of one target.

    dec = method.fit(target, task, cfg, ctx)
    result = score(dec, task)            # truth defaults to task.ground_truth(dec.target)
    result.metrics["mmcs"], result.metrics["spaces"]["activation"]["mmcs"], result.matches

Recovery is computed per (space, site) on the rank-1 scored mechanisms of that site (site_recovery.py:
rule "never" is never scored; rank > 1 with rule "dense" goes to the dense group rule), then pooled
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
from typing import Any

import torch
from torch import Tensor

from mechscope.core import SPACES, GroundTruth, Space, Task, active_matrix
from mechscope.decompose.base import Decomposition
from mechscope.metrics import absorption as absn
from mechscope.metrics import activity as act
from mechscope.metrics import latent_f1 as lf1
from mechscope.metrics import recovery as rec
from mechscope.metrics.eval_sets import EvalSets, eval_sets
from mechscope.metrics.faithfulness import AblationPair, ablation_specificity, faithfulness, shrinkage_by_site
from mechscope.metrics.matching import (
    read_basis,
)
from mechscope.metrics.pgd import PGD_STEPS, check_pgd_steps, pgd_faithfulness
from mechscope.metrics.result import Match, Score
from mechscope.metrics.site_recovery import SiteResult, scored, site_recovery


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
