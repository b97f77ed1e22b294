"""Behavioural metrics: does running the components reproduce the target, and does switching one
component off change the output where (and only where) its mechanism is used?

- `faithfulness`: output error of `forward_with(x, all components)` vs the target on `data`
  (MSE; KL(target ‖ decomposition) over the last axis when outputs are logits).
- `shrinkage`: ‖reconstruction‖/‖true activation‖ at an activation site, mean over `onehot`.
- `ablation_specificity`: per matched pair, Δ_on/(Δ_on+Δ_off), where Δ is the per-input MSE between
  the output with that component ablated and the all-on output, averaged over inputs where the
  mechanism is active (Δ_on) or not (Δ_off).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from mechscope.decompose.base import Decomposition
from mechscope.hooks import capture

ABLATION_INPUTS = 128
"""Per matched pair, Δ_on and Δ_off are each averaged over at most this many `data` inputs (the
first ones in order; `data` is i.i.d., so that is a fixed random subsample)."""
ROW_CHUNK = 8192


def output_error(y: Tensor, y_ref: Tensor, kind: Literal["mse", "logits"]) -> float:
    """MSE, or KL(softmax(y_ref) ‖ softmax(y)) averaged over all leading axes for logits."""
    if kind == "logits":
        logp_ref = F.log_softmax(y_ref.double(), dim=-1)
        logp = F.log_softmax(y.double(), dim=-1)
        return float((logp_ref.exp() * (logp_ref - logp)).sum(-1).mean())
    return float(F.mse_loss(y.double(), y_ref.double()))


def all_on(dec: Decomposition, x: Tensor) -> dict[str, Tensor]:
    """Every component kept, on the inputs' device."""
    return {s: torch.ones(x.shape[0], dec.n_components(s), device=x.device) for s in dec.sites}


def faithfulness(dec: Decomposition, x: Tensor, kind: Literal["mse", "logits"]) -> float:
    with torch.no_grad():
        return output_error(dec.forward_with(x, all_on(dec, x)), dec.target(x), kind)


def norm_ratio_mean(recon: Tensor, true: Tensor, eps: float = 1e-9) -> float:
    """Mean over inputs with a non-zero true activation of ‖recon‖/‖true‖ ([batch, d] each)."""
    rn, tn = recon.flatten(1).norm(dim=1), true.flatten(1).norm(dim=1)
    keep = tn > eps
    return float((rn[keep] / tn[keep]).mean()) if bool(keep.any()) else float("nan")


def shrinkage_by_site(dec: Decomposition, onehot: Tensor) -> dict[str, float]:
    """‖reconstruction‖/‖true activation‖ per activation site on `onehot` (empty if no reconstruction)."""
    with torch.no_grad():
        recon = dec.reconstruct(onehot)
        if not recon:
            return {}
        with capture(dec.target, list(recon)) as true:
            dec.target(onehot)
    return {s: norm_ratio_mean(recon[s].detach(), true[s].detach()) for s in recon}


def per_input_change(y: Tensor, y_ref: Tensor, kind: Literal["mse", "logits"]) -> Tensor:
    """[batch] output change of each input (MSE over output dims, or KL for logits)."""
    if kind == "logits":
        logp_ref = F.log_softmax(y_ref.double(), dim=-1)
        kl = (logp_ref.exp() * (logp_ref - F.log_softmax(y.double(), dim=-1))).sum(-1)
        return kl.reshape(kl.shape[0], -1).mean(dim=1)
    return (y.double() - y_ref.double()).pow(2).reshape(y.shape[0], -1).mean(dim=1)


@dataclass(frozen=True)
class AblationPair:
    site: str
    component: int
    active: Tensor
    """bool[batch] on x: where the matched mechanism is used."""


def ablation_specificity(
    dec: Decomposition,
    x: Tensor,
    pairs: list[AblationPair],
    kind: Literal["mse", "logits"],
    max_inputs: int = ABLATION_INPUTS,
) -> list[float | None]:
    """Δ_on/(Δ_on+Δ_off) per pair (None where both are 0 or one input set is empty).

    All ablated forwards run as one batch of rows — each row an input with its own mask — cut
    into chunks of `ROW_CHUNK` rows, so 40 pairs cost a handful of forward calls, not 40."""
    sites = dec.sites
    n_comp = {s: dec.n_components(s) for s in sites}
    with torch.no_grad():
        y_all = dec.forward_with(x, all_on(dec, x))
    rows: list[Tensor] = []  # input indices
    owners: list[tuple[int, Tensor]] = []  # (pair index, bool on-mask of its rows)
    for k, p in enumerate(pairs):
        on = p.active.nonzero().flatten()[:max_inputs]
        off = (~p.active).nonzero().flatten()[:max_inputs]
        idx = torch.cat([on, off])
        rows.append(idx)
        owners.append(
            (k, torch.cat([torch.ones(len(on), dtype=torch.bool), torch.zeros(len(off), dtype=torch.bool)]))
        )
    if not rows:
        return []
    all_idx = torch.cat(rows)  # (R,)
    pair_of_row = torch.cat([torch.full((len(r),), k) for k, r in enumerate(rows)])  # (R,)
    change = torch.empty(len(all_idx), dtype=torch.float64)
    for start in range(0, len(all_idx), ROW_CHUNK):
        sl = slice(start, start + ROW_CHUNK)
        idx, who = all_idx[sl], pair_of_row[sl]
        mask = {s: torch.ones(len(idx), n_comp[s], device=x.device) for s in sites}
        for k in who.unique().tolist():
            p = pairs[k]
            mask[p.site][(who == k).to(x.device), p.component] = 0.0
        with torch.no_grad():
            y = dec.forward_with(x[idx.to(x.device)], mask)
        change[sl] = per_input_change(y, y_all[idx.to(x.device)], kind).cpu()
    out: list[float | None] = []
    for k, on_mask in owners:
        ch = change[pair_of_row == k]
        if on_mask.all() or (~on_mask).all():
            out.append(None)
            continue
        d_on, d_off = float(ch[on_mask].mean()), float(ch[~on_mask].mean())
        out.append(d_on / (d_on + d_off) if d_on + d_off > 0 else None)
    return out
