"""What each latent (or SPD component) of a decomposed LM site means: the numbers behind a dashboard.

For latent c with activation a_c(t) on every token t of some text:

- *top contexts*: the k sequences where a_c peaks (one per sequence, highest peak first), each as
  the window of tokens around the peak with every token's activation (for highlighting);
- *histogram*: counts of a_c over the tokens where it fires, in `n_bins` bins from 0 to its max;
- *frequency*: the fraction of tokens where it fires (a_c > 0 for dictionary latents, causal
  importance > 0.1 for SPD — the scorer's rule);
- *promoted / suppressed tokens* (sites that write the residual stream: the residual itself or an
  MLP's output): the latent's write direction d_c through the final LayerNorm's gain γ and the
  unembedding W_U — logit(v) = W_U[v] · (γ ⊙ d_c) — its largest and smallest entries (the
  "logit lens" of the direction, as Neuronpedia's dashboards show it; the LayerNorm's centring
  and scale are per-token, so only γ is folded in).

    acts = token_activity(dec, ids, site)            # [n_seq, T, C]
    data = latent_cards(acts, ids, tokenizer, directions=dec.directions(site, "activation"),
                        unembed=unembedding(model))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from mechscope.decompose.base import Decomposition


@dataclass(frozen=True)
class Context:
    tokens: list[str]
    """The tokens of the window, as text (whitespace kept)."""
    acts: list[float]
    """The latent's activation on each token of the window."""
    peak: int
    """Index in the window of the token where the activation peaks."""
    seq: int
    """Which evaluation sequence the window comes from."""


@dataclass(frozen=True)
class LatentCard:
    id: int
    frequency: float
    """Fraction of tokens where the latent fires."""
    max_act: float
    mean_act: float
    """Mean activation over the tokens where it fires (0 if it never does)."""
    hist_counts: list[int]
    hist_edges: list[float]
    contexts: list[Context]
    promoted: list[tuple[str, float]] = field(default_factory=list)
    suppressed: list[tuple[str, float]] = field(default_factory=list)


@dataclass(frozen=True)
class DashboardData:
    title: str
    site: str
    method: str
    n_tokens: int
    fire_threshold: float
    latents: list[LatentCard]
    metrics: dict[str, Any] = field(default_factory=dict)
    """Run-level numbers shown on the index page (ce_loss_recovered, kl_spliced, fve, l0 …)."""


@torch.no_grad()
def token_activity(dec: Decomposition, ids: Tensor, site: str, batch_seqs: int = 16) -> Tensor:
    """[n_seq, T, C] activity of `site`'s latents on every token of `ids` [n_seq, T]."""
    parts = []
    for b in range(0, ids.shape[0], batch_seqs):
        x = ids[b : b + batch_seqs]
        parts.append(dec.activity(x)[site].reshape(x.shape[0], x.shape[1], -1).float())
    return torch.cat(parts)


def unembedding(model: nn.Module) -> tuple[Tensor, Tensor | None] | None:
    """(W_U [V, d], final LayerNorm gain γ [d] or None) of a Hugging Face causal LM; None without one."""
    head = getattr(model, "lm_head", None)
    if not isinstance(head, nn.Module) or not isinstance(getattr(head, "weight", None), Tensor):
        return None
    gain = None
    for name in ("transformer.ln_f", "model.norm", "gpt_neox.final_layer_norm", "ln_f"):
        mod = dict(model.named_modules()).get(name)
        weight = getattr(mod, "weight", None)
        if isinstance(weight, Tensor):
            gain = weight.detach().float()
            break
    W_U = head.weight
    assert isinstance(W_U, Tensor)
    return W_U.detach().float(), gain


@torch.no_grad()
def latent_cards(
    acts: Tensor, ids: Tensor, tokenizer: Any, *, fire_threshold: float = 0.0, top_k: int = 8, before: int = 10,
    after: int = 4, n_bins: int = 20, directions: Tensor | None = None, unembed: tuple[Tensor, Tensor | None] | None = None,
    n_logits: int = 8,
) -> list[LatentCard]:  # fmt: skip
    """One card per latent from its activity `acts` [n_seq, T, C] on token ids [n_seq, T]; with
    `directions` [C, d] and `unembed` (W_U [V, d], γ [d]) also its promoted/suppressed tokens."""
    if acts.dim() != 3 or acts.shape[:2] != ids.shape:
        raise ValueError(f"activity has shape {tuple(acts.shape)}; expected [n_seq, seq_len, C] for ids {tuple(ids.shape)}")
    n_seq, T, C = acts.shape
    flat = acts.reshape(-1, C)  # (N, C)
    fires = flat > fire_threshold
    freq = fires.float().mean(0)  # (C,)
    max_act = flat.max(0).values
    mean_act = (flat * fires).sum(0) / fires.sum(0).clamp_min(1)
    peak_val, peak_pos = acts.max(1)  # (n_seq, C): each sequence's peak per latent
    k = min(top_k, n_seq)
    top_val, top_seq = peak_val.topk(k, dim=0)  # (k, C)
    logits = None
    if directions is not None and unembed is not None and directions.shape[1] == unembed[0].shape[1]:
        W_U, gain = unembed
        d = directions.float() * (gain if gain is not None else 1.0)
        logits = d @ W_U.T  # (C, V)
    vocab_cache: dict[int, str] = {}

    def text(i: int) -> str:
        if i not in vocab_cache:
            vocab_cache[i] = tokenizer.decode([i])
        return vocab_cache[i]

    cards = []
    for c in range(C):
        contexts = []
        for j in range(k):
            if float(top_val[j, c]) <= fire_threshold:
                break
            s, p = int(top_seq[j, c]), int(peak_pos[top_seq[j, c], c])
            lo, hi = max(0, p - before), min(T, p + after + 1)
            window = ids[s, lo:hi].tolist()
            contexts.append(Context([text(i) for i in window], [round(float(v), 4) for v in acts[s, lo:hi, c]], p - lo, s))
        on = flat[fires[:, c], c]
        top = float(max_act[c])
        if on.numel() and top > 0:
            counts = torch.histc(on, bins=n_bins, min=0.0, max=top).long().tolist()
            edges = torch.linspace(0, top, n_bins + 1).tolist()
        else:
            counts, edges = [0] * n_bins, [0.0] * (n_bins + 1)
        promoted: list[tuple[str, float]] = []
        suppressed: list[tuple[str, float]] = []
        if logits is not None:
            hi_v, hi_i = logits[c].topk(n_logits)
            lo_v, lo_i = (-logits[c]).topk(n_logits)
            promoted = [(text(int(i)), round(float(v), 4)) for v, i in zip(hi_v, hi_i, strict=True)]
            suppressed = [(text(int(i)), round(-float(v), 4)) for v, i in zip(lo_v, lo_i, strict=True)]
        cards.append(LatentCard(c, float(freq[c]), top, float(mean_act[c]), counts, [round(e, 5) for e in edges],
                                contexts, promoted, suppressed))  # fmt: skip
    return cards


def dashboard_data(
    dec: Decomposition, ids: Tensor, tokenizer: Any, site: str, method: str, metrics: dict[str, Any] | None = None,
    unembed: tuple[Tensor, Tensor | None] | None = None, writes_residual: bool = True, **kwargs: Any,
) -> DashboardData:  # fmt: skip
    """Everything a dashboard of `site` shows, from a trained decomposition on token ids [n_seq, T].
    `writes_residual`: the site writes the residual stream (residual / MLP out / c_proj), so its
    directions have promoted and suppressed tokens."""
    acts = token_activity(dec, ids, site)
    threshold = float(getattr(dec, "fire_threshold", 0.0))
    directions = dec.directions(site, "activation") if writes_residual else None
    cards = latent_cards(acts, ids, tokenizer, fire_threshold=threshold, directions=directions,
                         unembed=unembed if writes_residual else None, **kwargs)  # fmt: skip
    return DashboardData(f"{method} · {site}", site, method, int(ids.numel()), threshold, cards, dict(metrics or {}))
