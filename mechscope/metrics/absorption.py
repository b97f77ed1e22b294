"""Feature absorption (Chanin et al. 2024, "A is for Absorption").

In a hierarchy the parent feature is active whenever a child is. A sparse method can save a latent
by letting the child's component carry the parent too: on inputs where both are active the child's
component fires and the parent's stays silent, so the parent's component no longer detects the
parent. For one (parent, child) pair, over the inputs where both features are active,

    absorption = #(child's component fires ∧ parent's component does not) / #(both active)

(0: the parent's component fires alongside the child's; 1: the child's has fully absorbed it). The
components are the Hungarian-matched ones of the site's recovery space; a pair where either feature
is not scored at the site or is left unmatched is skipped (there is no component to ask).

Two input sets, one reported under each key:
- `absorption`: the `hierarchy` probe set, one row per pair with the child and all its ancestors at
  0.75 (the `onehot` value) — deterministic, and defined even where `data` rarely has both on; each
  pair then scores 0 or 1, and the mean over pairs is the fraction of pairs absorbed;
- `absorption_data`: the `data` eval set, the fraction over its inputs with both active, averaged
  over the pairs that have any such input (absent if none does).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mechscope.core import Mechanism

PROBE_VALUE = 0.75
"""The magnitude of every feature that is on in a `hierarchy` probe row (the `onehot` value)."""


def ancestors(hierarchy: list[tuple[int, int]], feature: int) -> set[int]:
    """Every feature above `feature` in the hierarchy (parents, their parents, …)."""
    parents: dict[int, set[int]] = {}
    for p, c in hierarchy:
        parents.setdefault(c, set()).add(p)
    out: set[int] = set()
    todo = list(parents.get(feature, ()))
    while todo:
        p = todo.pop()
        if p not in out:
            out.add(p)
            todo.extend(parents.get(p, ()))
    return out


def hierarchy_probe(hierarchy: list[tuple[int, int]], n_features: int, value: float = PROBE_VALUE) -> Tensor:
    """[n_pairs, n_features]: row k holds pair k's child and all the child's ancestors at `value`
    (a child is never on without its parent, so neither is the probe)."""
    x = torch.zeros(len(hierarchy), n_features)
    for k, (_, c) in enumerate(hierarchy):
        x[k, [c, *sorted(ancestors(hierarchy, c))]] = value
    return x


def absorption_rate(
    parent_active: Tensor, child_active: Tensor, parent_fires: Tensor, child_fires: Tensor
) -> float:
    """Over inputs where both features are active (bool[batch] each), the fraction where the
    child's component fires and the parent's does not; NaN when no input has both active."""
    both = parent_active & child_active
    n = int(both.sum())
    if n == 0:
        return math.nan
    return int((both & child_fires & ~parent_fires).sum()) / n


def site_absorption(
    hierarchy: list[tuple[int, int]],
    rank1: list[Mechanism],
    truth: list[int],
    component: list[int],
    active: Tensor,
    fires: Tensor,
) -> list[float]:
    """Absorption of every pair scored at one site (NaN where no input has both active).

    rank1: the site's scored mechanisms; truth/component: its Hungarian pairs (indices into rank1 and
    the components); active: `active_matrix(rank1, x)` bool[batch, n]; fires: bool[batch, C] on x."""
    by_feature = {m.feature: t for t, m in enumerate(rank1) if m.feature is not None}
    matched = dict(zip(truth, component, strict=True))
    out = []
    for p, c in hierarchy:
        tp, tc = by_feature.get(p), by_feature.get(c)
        if tp is None or tc is None or tp not in matched or tc not in matched:
            continue
        out.append(
            absorption_rate(active[:, tp], active[:, tc], fires[:, matched[tp]], fires[:, matched[tc]])
        )
    return out
