"""Splice metrics on a causal LM: how much next-token loss survives when a decomposition replaces a site.

A decomposition of one site is *spliced in* by running the model with the site's output replaced by
the decomposition's reconstruction (an SAE: its own reconstruction; a transcoder on an MLP: its
prediction from the MLP's input; SPD: the masked forward with causal-importance masks). The
definitions are SAELens's (`evals.get_recons_loss`) and SAEBench's:

    ce_loss_recovered = (CE_zero − CE_spliced) / (CE_zero − CE_clean)
    kl_spliced        = mean over tokens of KL(p_clean ‖ p_spliced)     (next-token distributions)

CE_zero is the CE with the site's output zero-ablated; every CE is the mean next-token loss over
all predicted tokens (a ratio of means, as SAELens computes it). A perfect reconstruction gives
ce_loss_recovered 1 and kl_spliced 0; the all-zero reconstruction gives 0.

    clean = lm_forward(model)                         # ids [B, T] → logits [B, T, V]
    losses = splice_losses(clean, replaced(model, "transformer.h.2", sae_fn), zero_ablated(model, "transformer.h.2"), ids)
    losses.ce_loss_recovered, losses.kl_spliced

`evaluate_dictionary` / `evaluate_spd` add the reconstruction metrics (FVE, L0, dead fraction) of
a trained mechscope decomposition and return the `metrics.json` keys.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mechscope.decompose.dictionary_decomposition import DictionaryDecomposition
from mechscope.decompose.spd import SPDDecomposition
from mechscope.hooks import capture, get_module, replace_output

Forward = Callable[[Tensor], Tensor]
"""`forward(ids [B, T]) -> logits [B, T, vocab]`: the model, possibly with a site replaced."""


# --- the pure metrics --------------------------------------------------------------------------
def next_token_ce(logits: Tensor, ids: Tensor) -> Tensor:
    """Mean next-token cross-entropy (nats): the logits at position t predict token t+1."""
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1))


def next_token_kl(clean: Tensor, new: Tensor) -> Tensor:
    """[B, T−1] KL(p_clean ‖ p_new) of the next-token distributions at each predicting position."""
    log_p = F.log_softmax(clean[:, :-1].float(), -1)
    log_q = F.log_softmax(new[:, :-1].float(), -1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def ce_loss_recovered(ce_clean: float, ce_spliced: float, ce_zero: float) -> float:
    """(CE_zero − CE_spliced) / (CE_zero − CE_clean): 1 = the splice loses nothing, 0 = as bad as
    zero-ablating the site. NaN when zero-ablation itself costs nothing (the ratio is undefined)."""
    denom = ce_zero - ce_clean
    return (ce_zero - ce_spliced) / denom if abs(denom) > 1e-12 else float("nan")


def fve(sse: float, sum_sq: float, sum_: Tensor, n: int) -> float:
    """Fraction of variance explained from streamed sums: 1 − SSE / (Σ‖y‖² − n‖ȳ‖²)."""
    total = sum_sq - float(sum_.pow(2).sum()) / max(1, n)
    return 1 - sse / total if total > 0 else float("nan")


@dataclass(frozen=True)
class SpliceLosses:
    ce_clean: float
    """Mean next-token CE of the untouched model."""
    ce_spliced: float
    """… with the site replaced by the decomposition's reconstruction."""
    ce_zero_ablated: float
    """… with the site's output set to zero."""
    kl_spliced: float
    """Mean per-token KL(clean ‖ spliced)."""
    kl_zero_ablated: float
    n_tokens: int
    """Predicted tokens the means are over."""

    @property
    def ce_loss_recovered(self) -> float:
        return ce_loss_recovered(self.ce_clean, self.ce_spliced, self.ce_zero_ablated)

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "ce_loss_recovered": self.ce_loss_recovered}


# --- forwards ----------------------------------------------------------------------------------
def _logits(model: nn.Module) -> Forward:
    def forward(ids: Tensor) -> Tensor:
        out = model(ids)
        return out if isinstance(out, Tensor) else out.logits

    return forward


def check_lm(model: nn.Module) -> None:
    """CE needs next-token logits: a model without an LM head is a one-line error."""
    archs = list(getattr(getattr(model, "config", None), "architectures", None) or [])
    head = hasattr(model, "lm_head") or any(a.endswith(("LMHeadModel", "ForCausalLM")) for a in archs)
    if not head or getattr(model, "logits", True) is False:
        name = getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
        raise ValueError(f"ce_loss_recovered needs a causal LM with an LM head; {name} ({type(model).__name__}) has none")


def lm_forward(model: nn.Module) -> Forward:
    """The clean forward of a causal LM (a `GPT2LMHeadModel`, or `OutputModel(model, logits=True)`)."""
    check_lm(model)
    return torch.no_grad()(_logits(model))


def replaced(model: nn.Module, site: str, fn: Callable[[Tensor], Tensor]) -> Forward:
    """The forward with module `site`'s output h replaced by `fn(h)` (same shape; via hooks.py)."""
    check_lm(model)
    get_module(model, site)  # a site not in the model fails here, in one line
    inner = _logits(model)

    @torch.no_grad()
    def forward(ids: Tensor) -> Tensor:
        with replace_output(model, site, lambda _inputs, h: fn(h)):
            return inner(ids)

    return forward


def zero_ablated(model: nn.Module, site: str) -> Forward:
    """The forward with module `site`'s output set to zero (SAELens's zero-ablation baseline)."""
    return replaced(model, site, torch.zeros_like)


@torch.no_grad()
def splice_losses(clean: Forward, spliced: Forward, zero: Forward, ids: Tensor, batch_seqs: int = 16) -> SpliceLosses:
    """CE clean / spliced / zero-ablated and KLs over token windows `ids` [n_seq, T]."""
    if ids.dim() != 2 or ids.shape[0] == 0 or ids.shape[1] < 2:
        raise ValueError(f"splice metrics need token windows [n_seq ≥ 1, seq_len ≥ 2]; got shape {tuple(ids.shape)}")
    sums = dict.fromkeys(("ce_clean", "ce_spliced", "ce_zero_ablated", "kl_spliced", "kl_zero_ablated"), 0.0)
    n = 0
    for b in range(0, ids.shape[0], batch_seqs):
        x = ids[b : b + batch_seqs]
        m = x[:, 1:].numel()
        y, s, z = clean(x), spliced(x), zero(x)
        sums["ce_clean"] += float(next_token_ce(y, x)) * m
        sums["ce_spliced"] += float(next_token_ce(s, x)) * m
        sums["ce_zero_ablated"] += float(next_token_ce(z, x)) * m
        sums["kl_spliced"] += float(next_token_kl(y, s).sum())
        sums["kl_zero_ablated"] += float(next_token_kl(y, z).sum())
        n += m
    return SpliceLosses(**{k: v / n for k, v in sums.items()}, n_tokens=n)


# --- a trained decomposition, spliced in -------------------------------------------------------
@torch.no_grad()
def evaluate_dictionary(dec: DictionaryDecomposition, ids: Tensor, site: str | None = None, batch_seqs: int = 16) -> dict[str, Any]:
    """metrics.json keys of an SAE / transcoder at `site` of a causal LM (`dec.target` returns
    logits): ce_loss_recovered, kl_spliced, the three CEs, fve (of the site's output), l0,
    dead_frac (latents that never fire on `ids`)."""
    site = site or dec.sites[0]
    coder = dec.coder(site)
    model = dec.target
    losses = splice_losses(lm_forward(model), lambda x: dec.forward_with(x, {}),
                           zero_ablated(model, site), ids, batch_seqs)  # fmt: skip
    sse, sum_sq, total, n, l0 = 0.0, 0.0, torch.zeros(coder.d_out), 0, 0.0
    fired = torch.zeros(coder.n_latents, dtype=torch.bool)
    for b in range(0, ids.shape[0], batch_seqs):
        x = ids[b : b + batch_seqs]
        with capture(model, [site], "output") as out:
            z = dec.activity(x)[site]  # (rows, C); the same pass records the site's clean output
        y = out[site].reshape(-1, coder.d_out)
        y_hat = coder.decode(z)
        sse += float((y - y_hat).pow(2).sum())
        sum_sq += float(y.pow(2).sum())
        total += y.sum(0)
        n += y.shape[0]
        l0 += float((z > 0).sum())
        fired |= (z > 0).any(0)
    return {
        **losses.as_dict(), "site": site, "fve": fve(sse, sum_sq, total, n), "l0": l0 / n,
        "dead_frac": float(1 - fired.float().mean()), "n_latents": coder.n_latents,
    }  # fmt: skip


@torch.no_grad()
def evaluate_spd(dec: SPDDecomposition, ids: Tensor, ablate_site: str, batch_seqs: int = 16) -> dict[str, Any]:
    """metrics.json keys of SPD on the modules of one MLP: the spliced model is the masked forward
    with causal-importance masks; `ablate_site` (the MLP) is zero-ablated for the baseline; fve is
    of `ablate_site`'s output under CI masks; l0 = components with CI > 0.1 per token (all sites)."""
    model = dec.target

    def ci_forward(x: Tensor) -> Tensor:
        return dec.forward_with(x, dec.activity(x))

    losses = splice_losses(lm_forward(model), ci_forward, zero_ablated(model, ablate_site), ids, batch_seqs)
    sse, sum_sq, n, l0 = 0.0, 0.0, 0, 0.0
    total: Tensor | None = None
    fired = {s: torch.zeros(dec.n_components(s), dtype=torch.bool) for s in dec.sites}
    for b in range(0, ids.shape[0], batch_seqs):
        x = ids[b : b + batch_seqs]
        ci = dec.activity(x)
        with capture(model, [ablate_site], "output") as clean:
            model(x)
        y = clean[ablate_site].reshape(-1, clean[ablate_site].shape[-1])
        with capture(model, [ablate_site], "output") as masked:
            dec.forward_with(x, ci)
        y_hat = masked[ablate_site].reshape(y.shape)
        sse += float((y - y_hat).pow(2).sum())
        sum_sq += float(y.pow(2).sum())
        total = y.sum(0) if total is None else total + y.sum(0)
        n += y.shape[0]
        for s, g in ci.items():
            on = g > dec.fire_threshold
            l0 += float(on.sum())
            fired[s] |= on.any(0)
    n_comp = sum(int(f.numel()) for f in fired.values())
    assert total is not None
    return {
        **losses.as_dict(), "site": ablate_site, "modules": dec.sites, "fve": fve(sse, sum_sq, total, n), "l0": l0 / n,
        "dead_frac": float(1 - sum(int(f.sum()) for f in fired.values()) / n_comp), "n_components": n_comp,
    }  # fmt: skip
