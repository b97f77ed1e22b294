"""Circuit metrics: is an attribution graph right? Pure functions of tensors.

- `edge_auroc(scores, labels, by=dst)`: the probability that a true edge outranks a false one (ties
  count half) — the area under the ROC curve of the graph's edge ranking against the true edge
  set. With `by` (each candidate's destination node) it is the mean over destinations of their own
  AUROC: "do q's true sources outrank its false ones?", blind to how scores scale from one
  destination to another (a random graph then scores 0.5 whatever the layer sizes); the headline
  `edge_auroc` uses it, `edge_auroc_global` pools every candidate.
- `cpr(ks, faithfulness)` / `cmd(ks, faithfulness)`: MIB's circuit performance ratio and circuit
  –model distance (Mueller et al. 2025). f(k) is the faithfulness of the circuit that keeps the
  top-k fraction of edges, f = (m(C_k) − m(∅)) / (m(N) − m(∅)) for a performance m (1 = as good as
  the full model N, 0 = as bad as the empty circuit); CPR = ∫₀¹ f(k) dk (higher is better),
  CMD = ∫₀¹ |1 − f(k)| dk (lower is better), trapezoids over the k grid.
- `faithfulness_ratio(m_circuit, m_full, m_empty)`: that f.
- `node_recall(similarity, threshold)`: the fraction of true intermediate features some component
  matches with |cos| ≥ threshold (rows: true features, columns: components).

    edge_auroc(torch.tensor([.9, .1, .8]), torch.tensor([True, False, True]))   # 1.0
"""

from __future__ import annotations

import torch
from torch import Tensor

MIB_KS: tuple[float, ...] = (0.0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
"""MIB's grid of kept-edge fractions (0 added: the empty circuit, f = 0 by definition)."""


def edge_auroc(scores: Tensor, labels: Tensor, by: Tensor | None = None) -> float:
    """AUROC of `scores` [P] for the boolean `labels` [P] (Mann–Whitney U with average ranks);
    with `by` [P] (group ids) the mean AUROC over groups that hold both true and false pairs."""
    if by is not None:
        values = []
        for gid in by.unique():
            sel = by == gid
            lab = labels[sel].bool()
            if bool(lab.any()) and not bool(lab.all()):
                values.append(edge_auroc(scores[sel], lab))
        if not values:
            raise ValueError("edge_auroc: no group holds both true and false candidate edges")
        return sum(values) / len(values)
    labels = labels.bool().flatten()
    scores = scores.double().flatten()
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"edge_auroc needs true and false candidate edges; got {n_pos} true, {n_neg} false")
    order = scores.argsort()
    sorted_scores = scores[order]
    ranks = torch.empty_like(scores)
    # average rank of each tie block (1-based)
    _, inverse, counts = torch.unique_consecutive(sorted_scores, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    avg = ends - (counts.double() - 1) / 2
    ranks[order] = avg[inverse]
    u = float(ranks[labels].sum()) - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)


def faithfulness_ratio(m_circuit: Tensor, m_full: float, m_empty: float) -> Tensor:
    """f = (m(C) − m(∅)) / (m(N) − m(∅)) for each circuit performance in `m_circuit`."""
    denom = m_full - m_empty
    if abs(denom) < 1e-30:
        raise ValueError("the full model and the empty circuit perform the same: faithfulness is undefined")
    return (m_circuit.double() - m_empty) / denom


def _area(ks: Tensor, values: Tensor) -> float:
    ks = ks.double()
    if ks.numel() < 2 or bool((ks[1:] <= ks[:-1]).any()):
        raise ValueError("ks must be increasing with at least two points")
    return float(torch.trapezoid(values.double(), ks) / (ks[-1] - ks[0]))


def cpr(ks: Tensor, faithfulness: Tensor) -> float:
    """Circuit performance ratio: the mean of f(k) over k (area under the faithfulness curve)."""
    return _area(ks, faithfulness)


def cmd(ks: Tensor, faithfulness: Tensor) -> float:
    """Circuit–model distance: the mean of |1 − f(k)| over k (0 = every circuit is the model)."""
    return _area(ks, (1 - faithfulness.double()).abs())


def node_recall(similarity: Tensor, threshold: float = 0.9) -> float:
    """Fraction of rows (true features) whose best |cos| with any column (component) ≥ threshold."""
    if similarity.shape[0] == 0:
        raise ValueError("node_recall needs at least one true feature")
    if similarity.shape[1] == 0:
        return 0.0
    return float((similarity.abs().max(dim=1).values >= threshold).double().mean())
