"""Per-latent precision / recall / F1: SAELens's synthetic-benchmark classification metrics.

Each latent (component) is read as a detector of the one true feature its direction is closest to
(argmax over true mechanisms of |cos|, the activation-space similarity), and scored on when it
fires against when that feature is active, over the `data` eval set:

    precision_c = TP / (TP + FP)    recall_c = TP / (TP + FN)    F1_c = 2 p r / (p + r)

each 0 where its denominator is 0 (so a dead latent scores 0 on all three). `latent_precision`,
`latent_recall` and `latent_f1` are the plain means over every latent — F1 is averaged per latent,
not recomputed from the mean precision and recall — as SAELens's
`ClassificationMetricsCalculator` does. Unlike `activity_f1` (one score per true mechanism, via the
Hungarian match) this asks of every latent, duplicates and dead ones included, whether it is a
clean detector of something.

Differences from SAELens, by construction of the scorer: "fires" is the method's own threshold
(`Decomposition.fires`: > 0 for dictionaries, the same as SAELens's ≠ 0 for non-negative latents;
causal importance > 0.1 for SPD), the true features are the site's scored (represented) rank-1
mechanisms, and the inputs are the fixed `data` set, not fresh generator samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class LatentScores:
    """Per latent of one site: [C] each."""

    precision: Tensor
    recall: Tensor
    f1: Tensor


def best_truth(sim: Tensor) -> Tensor:
    """[C] for each component (column of sim [n_true, C]) the index of its most similar truth."""
    return sim.argmax(dim=0)


def latent_scores(sim: Tensor, active: Tensor, fires: Tensor) -> LatentScores:
    """sim [n_true, C] |cos|; active bool[batch, n_true]; fires bool[batch, C]."""
    C = sim.shape[1]
    if sim.shape[0] == 0 or C == 0:
        z = torch.zeros(C, dtype=torch.float64)
        return LatentScores(z, z, z)
    gt = active[:, best_truth(sim)]  # (batch, C): is each latent's feature active?
    tp = (fires & gt).sum(dim=0).double()
    fp = (fires & ~gt).sum(dim=0).double()
    fn = (~fires & gt).sum(dim=0).double()
    zero = torch.zeros_like(tp)
    precision = torch.where(tp + fp > 0, tp / (tp + fp).clamp_min(1), zero)
    recall = torch.where(tp + fn > 0, tp / (tp + fn).clamp_min(1), zero)
    pr = precision + recall
    f1 = torch.where(pr > 0, 2 * precision * recall / pr.clamp_min(1e-300), zero)
    return LatentScores(precision, recall, f1)


def mean_scores(scores: list[LatentScores]) -> dict[str, float]:
    """`latent_precision`, `latent_recall`, `latent_f1`: means over every latent of every site given
    (NaN when there are none)."""
    out = {}
    for key, attr in (("latent_precision", "precision"), ("latent_recall", "recall"), ("latent_f1", "f1")):
        v = torch.cat([getattr(s, attr) for s in scores]) if scores else torch.zeros(0)
        out[key] = float(v.mean()) if v.numel() else math.nan
    return out
