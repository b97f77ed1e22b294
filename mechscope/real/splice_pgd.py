"""Splice metrics of SPD on a causal LM under the worst-case (PGD) masks of `metrics/pgd.py`.

SPD claims that on each token a component c may be scaled anywhere in [g_c(x), 1] (g_c its causal
importance) without changing the output. `ce_loss_recovered` under CI masks tests one point of
that box (m = g); the adversary of `metrics.pgd.worst_errors` searches the whole box for the masks
that hurt the next-token distribution most (sign-gradient ascent on KL(clean ‖ masked), 4 steps by
default, from a random start, the all-on point also a candidate). This module runs that very
adversary — it calls `worst_errors`, it does not re-implement it — and records every candidate
forward it evaluates, so that per sequence it can take the candidate the adversary found worst and
report the LM numbers at it:

    ce_spliced_pgd, kl_spliced_pgd, ce_loss_recovered_pgd     (next-token definitions, as splice.py)
    pgd_faithfulness                                           (the metric's own number: mean worst KL)

`ce_loss_recovered_pgd ≤ ce_loss_recovered` is expected for a decomposition whose CI masks are
only faithful at the point the training loss sampled; a large gap says the CI claim is not robust.
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor

from mechscope.core import seeded_generator
from mechscope.decompose.base import Admissible, Decomposition, Mask
from mechscope.metrics.faithfulness import per_input_change
from mechscope.metrics.pgd import PGD_SEED, PGD_STEPS, check_pgd_steps, worst_errors
from mechscope.real.splice import ce_loss_recovered, next_token_kl


class _Recorder:
    """A Decomposition's admissible box and forward, with every forward's output kept (detached)."""

    def __init__(self, dec: Decomposition) -> None:
        self.dec, self.target, self.sites = dec, dec.target, dec.sites
        self.outputs: list[Tensor] = []

    def admissible(self, x: Tensor) -> Admissible:
        return self.dec.admissible(x)

    def forward_admissible(self, x: Tensor, masks: Mask) -> Tensor:
        y = self.dec.forward_admissible(x, masks)
        self.outputs.append(y.detach())
        return y


def _seq_ce(logits: Tensor, ids: Tensor) -> Tensor:
    """[B] mean next-token CE of each sequence."""
    ce = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1), reduction="none"
    )
    return ce.view(ids.shape[0], -1).mean(1)


def pgd_splice(dec: Decomposition, ids: Tensor, ce_clean: float, ce_zero: float, steps: int = PGD_STEPS,
               batch_seqs: int = 16) -> dict[str, Any]:  # fmt: skip
    """CE / KL / ce_loss_recovered of `dec` (its `target` returns logits) at the adversary's worst
    admissible masks, per sequence of `ids` [n_seq, T]; `ce_clean`, `ce_zero` from `splice_losses`."""
    check_pgd_steps(steps)
    gen = seeded_generator(PGD_SEED)
    ce_sum, kl_sum, worst_sum, n_tok = 0.0, 0.0, 0.0, 0
    for b in range(0, ids.shape[0], batch_seqs):
        x = ids[b : b + batch_seqs]
        rec = _Recorder(dec)
        worst = worst_errors(cast(Decomposition, rec), x, "logits", steps, None, gen)
        with torch.no_grad():
            y = dec.target(x)
            kl_seq = torch.stack([per_input_change(o, y, "logits") for o in rec.outputs])  # (candidates, B)
            pick = kl_seq.argmax(0)  # the candidate the adversary found worst, per sequence
            chosen = torch.stack(rec.outputs)[pick, torch.arange(x.shape[0])]  # (B, T, V)
            m = x.shape[0] * (x.shape[1] - 1)
            ce_sum += float(_seq_ce(chosen, x).sum()) * (x.shape[1] - 1)
            kl_sum += float(next_token_kl(y, chosen).sum())
            worst_sum += float(worst.sum())
            n_tok += m
    ce = ce_sum / n_tok
    return {"ce_spliced_pgd": ce, "kl_spliced_pgd": kl_sum / n_tok, "ce_loss_recovered_pgd": ce_loss_recovered(ce_clean, ce, ce_zero),
            "pgd_faithfulness": worst_sum / ids.shape[0], "pgd_steps": steps}  # fmt: skip
