"""Activity metrics: when components fire, against when the true mechanisms are used.

A component *fires* when its activity exceeds its method's threshold (0.1 for causal
importance, 0 for dictionary latents) — `Decomposition.fires` decides, not this module.

- `f1`: F1 between "mechanism active" and "component fires" over a set of inputs.
- `activity_f1`: mean over true mechanisms of the F1 with the matched component (0 if unmatched).
- `l0`: mean number of firing components per input; `l0_true`: the same for the truth, each
  active mechanism counted with its rank (a rank-k mechanism needs k rank-1 components).
- `alive`: fires on some `onehot` input or on ≥ 0.1 % of `data`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

ALIVE_DATA_FRACTION = 1e-3


def f1(active: Tensor, fires: Tensor) -> float:
    """F1 of predicting `active` (bool[batch]) by `fires` (bool[batch]); 1.0 when both are empty."""
    tp = int((active & fires).sum())
    fp = int((~active & fires).sum())
    fn = int((active & ~fires).sum())
    if tp + fp + fn == 0:
        return 1.0
    return 2 * tp / (2 * tp + fp + fn)


def f1_per_truth(active: Tensor, fires: Tensor, truth: list[int], component: list[int]) -> list[float]:
    """F1 for each true mechanism (column of `active` [batch, n]) with its matched component
    (column of `fires` [batch, C]); unmatched mechanisms score 0."""
    matched = dict(zip(truth, component, strict=True))
    return [f1(active[:, t], fires[:, matched[t]]) if t in matched else 0.0 for t in range(active.shape[1])]


def activity_f1(per_site: Sequence[Sequence[float]]) -> float:
    """Mean over every true mechanism of every site of its `f1_per_truth` (one list per site)."""
    v = [f for site in per_site for f in site]
    return sum(v) / len(v) if v else float("nan")


def l0(fires: Tensor) -> float:
    """Mean number of firing components per input (fires: bool[batch, C])."""
    return float(fires.float().sum(dim=1).mean()) if fires.shape[0] else float("nan")


def l0_true(active: Tensor, ranks: list[int]) -> float:
    """Mean over inputs of Σ rank of the active true mechanisms (active: bool[batch, n])."""
    if active.shape[0] == 0:
        return float("nan")
    r = torch.tensor(ranks, dtype=torch.float32)
    return float((active.float() @ r).mean()) if ranks else 0.0


def alive(fires_onehot: Tensor, fires_data: Tensor, fraction: float = ALIVE_DATA_FRACTION) -> Tensor:
    """bool[C]: fires on some onehot input, or on at least `fraction` of data inputs."""
    on_onehot = fires_onehot.any(dim=0)
    on_data = (
        fires_data.float().mean(dim=0) >= fraction if fires_data.shape[0] else torch.zeros_like(on_onehot)
    )
    return on_onehot | on_data


def dead_frac(n_alive: int, n_components: int) -> float:
    return 1.0 - n_alive / n_components if n_components else float("nan")
