"""SPD's losses and gates as pure functions of tensors (Bushnaq, Braun, Sharkey et al. 2025).

SPD writes each decomposed weight W (d_out × d_in) as a sum of C rank-1 subcomponents
U[:, c] V[c, :] and trains them with four losses:

- faithfulness: Σ_sites ‖W − U V‖² / (number of decomposed parameters) — the parts sum to the whole;
- stochastic reconstruction: output error when every site runs with masks
  m = g + (1 − g) r, r ~ U(0, 1) — components with low causal importance g must be ablatable;
- layerwise stochastic reconstruction: the same with one site masked at a time;
- importance minimality: Σ_sites Σ_c mean_batch |g_c|^p — as few components as possible matter.

Causal importance g_c(x) is a tiny MLP on the scalar V[c, :]·a(x) followed by a hard sigmoid that
leaks (slope α) below 0 where it feeds the masks, and above 1 where it feeds the importance loss,
so a gate pushed outside [0, 1] still gets a gradient back.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

OutputLoss = Literal["mse", "kl"]


def lower_leaky_hard_sigmoid(x: Tensor, alpha: float = 0.01) -> Tensor:
    """clamp(x, 0, 1), but α·x below 0: the gate used for the masks."""
    return torch.where(x < 0, alpha * x, x.clamp(max=1.0))


def upper_leaky_hard_sigmoid(x: Tensor, alpha: float = 0.01) -> Tensor:
    """clamp(x, 0, 1), but 1 + α·(x − 1) above 1: the gate used for importance minimality."""
    return torch.where(x > 1, 1 + alpha * (x - 1), x.clamp(min=0.0))


def hard_sigmoid(x: Tensor) -> Tensor:
    """clamp(x, 0, 1): causal importance as reported (the `activity` of a component)."""
    return x.clamp(0.0, 1.0)


def ci_mlp(inner: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor) -> Tensor:
    """Pre-sigmoid causal importance: one hidden GELU layer per component, on a scalar input.

    inner [..., C] (component activations V[c, :]·a), w1/b1/w2 [C, H], b2 [C] → [..., C].
    """
    h = F.gelu(inner.unsqueeze(-1) * w1 + b1)  # (..., C, H)
    return (h * w2).sum(-1) + b2  # (..., C)


def stochastic_mask(g: Tensor, r: Tensor) -> Tensor:
    """m = g + (1 − g) r: a component with importance 1 is always on; with 0, randomly scaled."""
    return g + (1 - g) * r


def faithfulness_loss(weights: list[Tensor], approximations: list[Tensor]) -> Tensor:
    """Σ ‖W − UV‖² over all decomposed weights / their total number of entries."""
    sq = sum(((w - a) ** 2).sum() for w, a in zip(weights, approximations, strict=True))
    n = sum(w.numel() for w in weights)
    return torch.as_tensor(sq) / n


def recon_loss(pred: Tensor, target: Tensor, kind: OutputLoss) -> Tensor:
    """Output error of a masked forward: MSE (toys) or KL(target ‖ pred) per position (logits)."""
    if kind == "mse":
        return F.mse_loss(pred, target)
    logp = F.log_softmax(pred.flatten(0, -2), dim=-1)
    logq = F.log_softmax(target.flatten(0, -2), dim=-1)
    return F.kl_div(logp, logq, log_target=True, reduction="batchmean")


def importance_minimality_loss(
    g_upper: list[Tensor], p: float, weights: Tensor | None = None, eps: float = 1e-12, scales: list[Tensor] | None = None
) -> Tensor:
    """Σ_sites Σ_c scale_c mean_batch (g + ε)^p; g_upper [batch, ..., C] per site, already ≥ 0.

    `weights` [batch] (summing to 1) replaces the plain mean when rows stand for several examples;
    `scales` ([C] per site, default 1) weights each component's term (see spd_components.init_)."""
    total = torch.zeros((), device=g_upper[0].device if g_upper else None)
    for i, g in enumerate(g_upper):
        gp = ((g + eps) ** p).flatten(1, -2).mean(1) if g.dim() > 2 else (g + eps) ** p  # (batch, C)
        per_c = gp.mean(0) if weights is None else weights @ gp  # (C,)
        total = total + (per_c if scales is None else per_c * scales[i]).sum()
    return total


def cosine_lr(step: int, steps: int, lr: float, warmup_frac: float = 0.0, final_frac: float = 0.0) -> float:
    """Linear warm-up, then cosine decay from `lr` to `final_frac · lr` at the last step."""
    warm = int(warmup_frac * steps)
    if step < warm:
        return lr * (step + 1) / warm
    t = (step - warm) / max(1, steps - warm)
    return lr * (final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * t)))


def ci_pattern_match(fires: Tensor, truth_active: Tensor, ranks: list[int]) -> tuple[int, Tensor]:
    """Errors of a binarised CI pattern against the true one, after the best matching.

    fires bool[n_inputs, C]: which components fire on each probe input; truth_active
    bool[n_inputs, K]: which true mechanisms each input uses; ranks[k]: how many components
    mechanism k should own (1 for a feature; m for a dense rank-m mechanism such as +ID's identity).
    Each mechanism's column is repeated rank times and matched one-to-one to components (Hungarian,
    minimising Hamming distance); unmatched components should never fire. Returns (number of entries
    off the ideal pattern, component order: matched components in mechanism order, then the rest by
    how often they fire).
    """
    from scipy.optimize import linear_sum_assignment

    F_, truth_active = fires.bool().cpu(), truth_active.cpu()  # the matching runs on the CPU (scipy)
    n, C = F_.shape
    cols = [truth_active[:, k] for k, r in enumerate(ranks) for _ in range(r)]
    T = torch.stack(cols, dim=1) if cols else torch.zeros(n, 0, dtype=torch.bool)  # (n, R)
    R = T.shape[1]
    pad = torch.cat([F_, torch.zeros(n, max(0, R - C), dtype=torch.bool)], dim=1)  # dummy never-firing columns
    ones = pad.sum(0)  # (C',)
    # Cost of matching truth column r to component c, relative to leaving c unmatched (cost: its ones).
    cost = (T.unsqueeze(2) != pad.unsqueeze(1)).sum(0) - ones.unsqueeze(0)  # (R, C')
    rows, matched = linear_sum_assignment(cost.numpy()) if R else ([], [])
    errors = int(ones.sum()) + int(cost[rows, matched].sum()) if R else int(ones.sum())
    first = [int(c) for c in matched if c < C]
    rest = sorted((c for c in range(C) if c not in first), key=lambda c: -int(F_[:, c].sum()))
    return errors, torch.tensor(first + rest, dtype=torch.long)


def frequent_directions(
    a: Tensor, max_k: int, min_count: int = 4, decimals: int = 3, min_frac: float = 5e-4
) -> Tensor | None:
    """Unit input directions that recur exactly in a sample of a site's inputs a [N, d_in], most
    frequent first; None if there are more than `max_k` of them (no small recurring set).

    Sparse data puts most inputs on one mechanism at a time, so the input directions that recur —
    the same line hit by many samples — are the candidate read vectors of single mechanisms. A line
    must be hit by max(min_count, min_frac · non-zero inputs) samples: two features with continuous
    magnitudes land on the same rounded line a few times by chance (stress-correlated: 4 hits vs
    35–63 for the single features), and one such line in 40 dimensions would read as superposed."""
    a = a.reshape(-1, a.shape[-1]).float()
    a = a[a.ne(0).any(1)]
    if a.shape[0] == 0:
        return None
    u = a / a.norm(dim=1, keepdim=True)
    sign = torch.sign(u.gather(1, u.abs().argmax(1, keepdim=True)))  # a line, not a ray
    key = torch.round(u * sign * 10**decimals)
    _, inverse, counts = torch.unique(key, dim=0, return_inverse=True, return_counts=True)
    frequent = (counts >= max(min_count, min_frac * a.shape[0])).nonzero().squeeze(1)
    if frequent.numel() == 0 or frequent.numel() > max_k:
        return None
    frequent = frequent[counts[frequent].argsort(descending=True, stable=True)]
    reads = torch.stack([(u * sign)[inverse == f].mean(0) for f in frequent.tolist()])
    return reads / reads.norm(dim=1, keepdim=True)


def peeled_directions(a: Tensor, reads: Tensor, max_k: int, rel_tol: float = 1e-3) -> Tensor | None:
    """Input directions that recur once the known reads [k, d_in] are projected out of a sample of
    inputs a [N, d_in] (`frequent_directions` of the residuals; None: none, or more than max_k).

    A feature that never occurs alone — a child that always fires with its parent, a sparse feature
    beside always-on dense ones — recurs in no input, but the input minus its parent's (or the dense
    features') part is that feature's line: one peel finds it. Inputs the reads explain (residual
    below rel_tol of the input) are dropped, so the pass adds nothing where every input is a
    combination of the reads (the residual MLP's layers)."""
    a = a.reshape(-1, a.shape[-1]).float()
    if max_k <= 0 or reads.shape[0] >= a.shape[1]:
        return None
    res = a - (a @ torch.linalg.pinv(reads)) @ reads
    res[res.norm(dim=1) <= rel_tol * a.norm(dim=1)] = 0
    return frequent_directions(res, max_k)


def axis_directions(a: Tensor, reads: Tensor | None, max_k: int, max_active: float = 0.5, dup_cos: float = 0.99) -> Tensor | None:
    """The input's own coordinate axes [k, d_in], most often non-zero first, for an input that is
    sparse in its coordinates: each axis non-zero on at least one and at most `max_active` of the
    non-zero inputs of a sample a [N, d_in], and not already one of `reads` (|cos| > dup_cos);
    None if none.

    Where the inputs are sparse codes themselves (SynthSAEBench's h = W x: ~7 of 1,024 features
    on at once, Zipf-rare ones never alone) no line recurs and peeling finds nothing, yet every
    feature's line is an axis the data shows exactly zero most of the time. A dense input (a
    residual stream) has no such axis, so the rule adds nothing there."""
    a = a.reshape(-1, a.shape[-1]).float()
    a = a[a.ne(0).any(1)]
    if max_k <= 0 or a.shape[0] == 0:
        return None
    active = a.ne(0).float().mean(0)  # (d_in,)
    axes = ((active > 0) & (active <= max_active)).nonzero().squeeze(1)
    axes = axes[active[axes].argsort(descending=True, stable=True)]
    eye = torch.eye(a.shape[1])[axes]
    if reads is not None and reads.shape[0] > 0:
        eye = eye[(eye @ reads.T).abs().amax(1) <= dup_cos]
    return eye[:max_k] if eye.shape[0] > 0 else None


def principal_directions(a: Tensor, max_k: int, rel_tol: float = 1e-4) -> Tensor:
    """The principal axes [k, d_in] of a sample of inputs a [N, d_in] (singular values above
    rel_tol of the largest; at most max_k): the read basis of a dense mechanism."""
    a = a.reshape(-1, a.shape[-1]).float()
    _, S, Vh = torch.linalg.svd(a, full_matrices=False)
    k = min(max_k, int((rel_tol * S[0] < S).sum()))
    return Vh[:k]


def live_rows(acts: dict[str, Tensor]) -> Tensor | None:
    """Indices of the examples on which some decomposed module reads a non-zero input, or None when
    that cannot be decided (an embedding reads indices).

    On the other rows every masked module outputs exactly its bias whatever the masks, so the masked
    forward equals the target's: their reconstruction error is exactly 0 and their causal importance
    is that of a zero input. Skipping them changes no loss value (TMS: ~77 % of inputs are empty)."""
    if any(not a.is_floating_point() for a in acts.values()):
        return None
    nonzero = torch.stack([a.flatten(1).ne(0).any(1) for a in acts.values()]).any(0)  # (B,)
    return nonzero.nonzero().squeeze(1)
