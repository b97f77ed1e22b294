"""SPD on chosen modules of a real model, on token sequences instead of a zoo task's samples.

It reuses SPD's own parts (`decompose/spd.py`: site selection, rank-1 subcomponents with their
causal-importance MLPs, the masked forward; `spd_losses.py`: gates and losses) and changes only
what a real model needs:

- data: token windows [n_seq, seq]; causal importance and masks are per token;
- output loss: KL(target ‖ masked) of next-token distributions when the model has an LM head,
  MSE of the final hidden states when it has none (cosine reported beside it);
- randomness: the stochastic-mask noise of step t is drawn for the whole global batch from a
  generator seeded by (seed, t), and each data-parallel rank takes its own examples' rows — so a
  mask is a function of (seed, step, example), and a 2-process run computes what a 1-process run
  does (see `distributed.py`).

`masked_loss_report` is SPD's standard check: the output loss with masks = causal importance,
with stochastic masks, with every subcomponent on, and with every subcomponent off (all-zero).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal, cast

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from mechscope.config import Config, ConfigError
from mechscope.core import Progress, derive_seed, no_progress, seeded_generator
from mechscope.decompose import spd_losses as L
from mechscope.decompose.spd import (
    Site,
    SiteComponents,
    SPDDecomposition,
    masked_sites,
    select_sites,
    target_pass,
    weight_matrix,
)
from mechscope.decompose.spd_presets import SPDSettings

OutputKind = Literal["kl", "mse"]


class RealSPDConfig(Config):
    """SPD on a real model. Batch sizes count sequences."""

    modules: list[str] = Field(min_length=1)
    """fnmatch patterns of `Linear` / `Conv1D` / `Embedding` modules to decompose."""
    steps: Annotated[int, Field(ge=1)] = 200
    batch_size: Annotated[int, Field(ge=1)] = 8
    lr: Annotated[float, Field(gt=0)] = 2e-3
    C: Annotated[int, Field(ge=1)] = 64
    ci_hidden: Annotated[int, Field(ge=1)] = 16
    faithfulness_coeff: float = 1.0
    stochastic_coeff: float = 1.0
    layerwise_coeff: float = 1.0
    importance_coeff: float = 1e-4
    pnorm: float = 2.0
    faithfulness_warmup_steps: Annotated[int, Field(ge=0)] = 200
    output_loss: Literal["auto", "kl", "mse"] = "auto"

    def settings(self) -> SPDSettings:
        keys = ("steps", "batch_size", "lr", "C", "ci_hidden", "faithfulness_coeff", "stochastic_coeff",
                "layerwise_coeff", "importance_coeff", "pnorm", "faithfulness_warmup_steps")  # fmt: skip
        return SPDSettings(**{k: getattr(self, k) for k in keys})


def _parts(comps: nn.ModuleList) -> list[SiteComponents]:
    return cast(list[SiteComponents], list(comps))


def _shape(site: Site) -> tuple[int, int]:
    d_out, d_in = weight_matrix(site).shape
    return int(d_out), int(d_in)


def output_error(pred: Tensor, target: Tensor, kind: OutputKind) -> Tensor:
    """Mean per-token KL(target ‖ pred) of logits, or MSE of hidden states."""
    return L.recon_loss(pred, target, kind)


def cosine(pred: Tensor, target: Tensor) -> Tensor:
    """Mean per-token cosine similarity of hidden states."""
    return F.cosine_similarity(pred.flatten(0, -2), target.flatten(0, -2), dim=-1).mean()


def _noise(seed: int, step: int, k: int, shape: tuple[int, ...], rows: slice, device: torch.device) -> Tensor:
    """Uniform noise for the global batch at `step` (k: which site/group), sliced to `rows`."""
    gen = seeded_generator(derive_seed(seed, step), k)
    return torch.rand(shape, generator=gen)[rows].to(device)


def batch_indices(seed: int, step: int, n_seq: int, batch: int) -> Tensor:
    """The global batch of step `step`: sequence indices, a function of (seed, step) only."""
    gen = torch.Generator().manual_seed((seed * 7_919 + step) % 2**63)
    return torch.randint(n_seq, (batch,), generator=gen)


def spd_real_loss(
    model: nn.Module, sites: list[Site], comps: nn.ModuleList, x: Tensor, s: SPDSettings, kind: OutputKind,
    seed: int, step: int, global_batch: int, rows: slice,
) -> tuple[Tensor, dict[str, float]]:  # fmt: skip
    """SPD's objective on this rank's rows `rows` of the global batch (a mean over those rows)."""
    y, acts = target_pass(model, sites, x)
    pre = {site.name: comp.ci_pre(comp.read(site.kind, acts[site.name])) for site, comp in zip(sites, _parts(comps), strict=True)}
    g_mask = {n: L.lower_leaky_hard_sigmoid(p, s.leaky_alpha) for n, p in pre.items()}
    names = list(pre)

    def mask(i: int, group: int) -> Tensor:
        g = g_mask[names[i]]
        r = _noise(seed, step, group * 1_000 + i, (global_batch, *g.shape[1:]), rows, g.device)
        return L.stochastic_mask(g, r)

    groups: dict[str, list[Tensor | None]] = {n: [mask(i, 0)] for i, n in enumerate(names)}
    layerwise = s.layerwise_coeff > 0 and len(names) > 1
    if layerwise:
        for j in range(len(names)):
            for i, n in enumerate(names):
                groups[n].append(mask(i, 1 + j) if i == j else None)
    G = len(groups[names[0]])
    with masked_sites(model, sites, comps, groups):
        outs = model(x.repeat(G, *([1] * (x.dim() - 1)))).chunk(G)
    recon = [output_error(o, y, kind) for o in outs]
    g_upper = [L.upper_leaky_hard_sigmoid(p, s.leaky_alpha) for p in pre.values()]
    terms = {
        "faithfulness": L.faithfulness_loss([weight_matrix(site).detach() for site in sites], [c.weight() for c in _parts(comps)]),
        "stochastic": recon[0],
        "layerwise": torch.stack(recon[1:]).mean() if layerwise else torch.zeros(()),
        "importance": L.importance_minimality_loss(g_upper, s.pnorm),
    }
    total = (
        s.faithfulness_coeff * terms["faithfulness"] + s.stochastic_coeff * terms["stochastic"]
        + s.layerwise_coeff * terms["layerwise"] + s.importance_coeff * terms["importance"]
    )  # fmt: skip
    return total, {k: float(v.detach()) for k, v in terms.items()}


def fit_spd_real(
    model: nn.Module, ids: Tensor, config: RealSPDConfig, has_lm_head: bool, seed: int = 0,
    rank: int = 0, world: int = 1, sync: Callable[[list[Tensor]], None] | None = None,
    progress: Progress = no_progress,
) -> SPDDecomposition:  # fmt: skip
    """Decompose `config.modules` of `model` (`model(ids) -> one tensor`) on token windows `ids`.

    Data-parallel: rank `rank` of `world` trains on its contiguous slice of every global batch and
    `sync(grads)` averages gradients across ranks (None in a single process)."""
    kind: OutputKind = ("kl" if has_lm_head else "mse") if config.output_loss == "auto" else config.output_loss
    if config.batch_size % world:
        raise ConfigError(f"batch_size={config.batch_size} must be divisible by the number of processes ({world})")
    s = config.settings()
    device = next(model.parameters()).device
    sites = select_sites(model, config.modules)
    comps = nn.ModuleList([SiteComponents(*_shape(site), s.C, s.ci_hidden) for site in sites])
    gen = seeded_generator(seed, 1)
    for site, comp in zip(sites, _parts(comps), strict=True):
        comp.init_(weight_matrix(site).detach().float().cpu(), gen)
    comps.to(device)
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        _warmup(sites, comps, s)
        opt = torch.optim.Adam(comps.parameters(), lr=s.lr)
        per = s.batch_size // world
        rows = slice(rank * per, (rank + 1) * per)
        for step in range(s.steps):
            for group in opt.param_groups:
                group["lr"] = L.cosine_lr(step, s.steps, s.lr)
            x = ids[batch_indices(seed, step, ids.shape[0], s.batch_size)[rows]].to(device)
            loss, _ = spd_real_loss(model, sites, comps, x, s, kind, seed, step, s.batch_size, rows)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if sync is not None:
                sync([p.grad for p in comps.parameters() if p.grad is not None])
            opt.step()
            if (step + 1) % 10 == 0 or step + 1 == s.steps:
                progress(step + 1, s.steps)
    finally:
        for p, f in flags:
            p.requires_grad_(f)
    return SPDDecomposition(model, sites, comps, s)


def _warmup(sites: list[Site], comps: nn.ModuleList, s: SPDSettings) -> None:
    """Faithfulness-only steps so that U V ≈ W before the masks matter (deterministic, rank-free)."""
    opt = torch.optim.Adam([p for c in _parts(comps) for p in (c.U, c.V)], lr=s.faithfulness_warmup_lr)
    Ws = [weight_matrix(site).detach().float() for site in sites]
    for _ in range(s.faithfulness_warmup_steps):
        loss = L.faithfulness_loss(Ws, [c.weight() for c in _parts(comps)])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


@torch.no_grad()
def masked_loss_report(dec: SPDDecomposition, ids: Tensor, has_lm_head: bool, seed: int = 0) -> dict[str, float]:
    """Output loss of the model run from its subcomponents under four kinds of mask, on `ids`.

    Keys `<mask>.kl` (LM head) or `<mask>.mse` and `<mask>.cosine` (hidden states), for masks
    `ci` (causal importance), `stochastic` (g + (1 − g) r), `all_on` (every subcomponent: tests
    U V ≈ W) and `zero` (none: what the output loses without these modules' weights); plus
    `l0_ci` (mean subcomponents with importance > 0.1 per token, summed over sites)."""
    kind: OutputKind = "kl" if has_lm_head else "mse"
    model = dec.target
    device = next(model.parameters()).device
    x = ids.to(device)
    y, acts = target_pass(model, dec.site_info, x)
    ci = {s.name: L.hard_sigmoid(c.ci_pre(c.read(s.kind, acts[s.name]))) for s, c in zip(dec.site_info, _parts(dec.comps), strict=True)}
    gen = torch.Generator().manual_seed(seed)
    masks = {
        "ci": ci,
        "stochastic": {n: L.stochastic_mask(g, torch.rand(g.shape, generator=gen).to(device)) for n, g in ci.items()},
        "all_on": {n: torch.ones_like(g) for n, g in ci.items()},
        "zero": {n: torch.zeros_like(g) for n, g in ci.items()},
    }
    out: dict[str, float] = {}
    for name, m in masks.items():
        with masked_sites(model, dec.site_info, dec.comps, {n: [t] for n, t in m.items()}):
            pred = model(x)
        out[f"{name}.{kind}"] = float(output_error(pred, y, kind))
        if kind == "mse":
            out[f"{name}.cosine"] = float(cosine(pred, y))
    out["l0_ci"] = float(sum((g > 0.1).float().sum(-1).mean() for g in ci.values()))
    out["n_components"] = float(sum(int(c.U.shape[1]) for c in _parts(dec.comps)))
    return out
