"""Checking the linear edge weights against the ablation they approximate.

For edge u → d the ablation effect is what zeroing u (its coefficient; an input feature's value)
does to d's pre-activation when every other site's components are held at their clean values —
the same direct path the gradient follows, but with the nonlinearities in between recomputed,
not frozen:

    ablation(u→d) = mean_b fires_d[b] · |pre_d(clean)[b] − pre_d(z_u = 0)[b]|

One forward pass per ablated node (all its downstream edges at once). Where the path between two
sites is linear (a residual stream, a transcoder's direct path) the two agree exactly; through a
ReLU they differ where the ablation flips a gate.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mechscope.circuits.graph import AttributionGraph, _clean, _order, module_outputs, rewritten_pass
from mechscope.circuits.groups import Group, groups_of, rows
from mechscope.decompose.base import Decomposition


@dataclass
class AblationCheck:
    edges: Tensor
    """int64 [K] edge indices into the graph that were checked (the strongest K)."""
    linear: Tensor
    """[K] the graph's weights of those edges."""
    ablation: Tensor
    """[K] the ablation effects."""

    @property
    def pearson(self) -> float:
        a, b = self.linear.double(), self.ablation.double()
        a, b = a - a.mean(), b - b.mean()
        return float((a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-30))

    @property
    def rel_error(self) -> float:
        """Σ|linear − ablation| / Σ ablation."""
        return float((self.linear - self.ablation).abs().sum() / self.ablation.abs().sum().clamp_min(1e-30))


@torch.no_grad()
def ablation_check(
    dec: Decomposition, x: Tensor, graph: AttributionGraph, n_edges: int = 200, groups: list[Group] | None = None
) -> AblationCheck:
    """Ablation effects of the `n_edges` strongest edges of `graph` (built from `dec` on `x`)."""
    groups = _order(dec, groups if groups is not None else groups_of(dec), x)
    k = min(n_edges, graph.n_edges)
    edges = graph.weight.topk(k).indices
    z, fires, err = _clean(dec, groups, x)
    y, pres = rewritten_pass(dec, groups, x, module_outputs(groups, z, err))
    site_of = {g.site: g for g in groups}
    effects = torch.zeros(k)
    by_src: dict[int, list[int]] = {}
    for e_i, e in enumerate(edges.tolist()):
        by_src.setdefault(int(graph.src[e]), []).append(e_i)
    n_rows = rows(y).shape[0]
    for s, members in by_src.items():
        node = graph.nodes[s]
        xa, za = x, dict(z)
        if node.kind == "input":
            xa = x.clone()
            xa[..., node.index] = 0
        else:
            za[node.site] = z[node.site].clone()
            za[node.site][:, node.index] = 0
        ya, pa = rewritten_pass(dec, groups, xa, module_outputs(groups, za, err))
        for e_i in members:
            d = graph.nodes[int(graph.dst[edges[e_i]])]
            if d.kind == "output":
                delta = (rows(y)[:, d.index] - rows(ya)[:, d.index]).abs()
            else:
                assert d.site in site_of
                delta = (pres[d.site][:, d.index] - pa[d.site][:, d.index]).abs() * fires[d.site][:, d.index]
            effects[e_i] = delta.sum() / n_rows
    return AblationCheck(edges, graph.weight[edges], effects)
