"""`pgd_faithfulness`: the worst-case ablation of what a method calls irrelevant (VPD).

`faithfulness` asks whether the components reproduce the target at one point: all on. A
decomposition also claims, on every input, that some components do not matter there (SPD:
causal importance g_c < 1; a dictionary: the latents that stay silent, and its reconstruction
error). If the claim is true, any admissible setting of those components leaves the output as it
is; if the decomposition is exact only under its own masks, an adversary finds a setting that
breaks it. Per `data` input,

    m⁰ ~ U[lo, hi]                    (the box `Decomposition.admissible(x)`)
    mᵏ⁺¹ = clip(mᵏ + α (hi − lo) sign ∇_m err(x; mᵏ), lo, hi)       k = 0 … steps − 1
    worst(x) = max(err(x; start), err(x; m⁰), …, err(x; m^steps))

with err the same output error as `faithfulness` (MSE, or KL(target ‖ decomposition) for logits)
and α = `step_size(steps)` (2 / steps, within [0.1, 1]: one step of 1.0 as VPD trains, 4 steps of
0.5). `pgd_faithfulness` = mean over inputs of worst(x) ≥ `faithfulness` (the start point, all
on, is one candidate); per site, only that site's masks move and the others stay at their start.
What each method's box is lives beside its forward: `ParameterDecomposition.admissible` (SPD,
oracle, random: [g_c(x), 1], g_c the activity clamped to [0, 1]) and
`DictionaryDecomposition.admissible` (silent latents up to their ungated value, error term in
[0, 1]).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from mechscope.config import ConfigError
from mechscope.core import seeded_generator
from mechscope.decompose.base import Decomposition
from mechscope.metrics.faithfulness import per_input_change

PGD_STEPS = 4
"""Default ascent steps: VPD's evaluation adversary (4 steps collapsed a CI-pruned graph there)."""
PGD_SEED = 19
"""Seed of the random start inside the box (fixed: the same decomposition scores the same)."""
PGD_INPUTS = 2048
"""Inputs per forward/backward chunk (memory stays flat on large eval sets)."""


@dataclass(frozen=True)
class WorstCase:
    total: float
    """Every site's masks attacked together: the top-level `pgd_faithfulness`."""
    by_site: dict[str, float]
    """One site attacked at a time (the others at their start): `sites.<site>.pgd_faithfulness`."""


def check_pgd_steps(steps: object) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ConfigError(f"pgd_steps must be an integer ≥ 0 (0 = a random admissible mask only), got {steps!r}")


def step_size(steps: int) -> float:
    """α as a fraction of each box's width: 2 / steps, kept within [0.1, 1]."""
    return min(1.0, max(0.1, 2.0 / steps)) if steps > 0 else 0.0


def worst_errors(
    dec: Decomposition,
    x: Tensor,
    kind: Literal["mse", "logits"],
    steps: int,
    sites: list[str] | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """[batch] worst(x) on one chunk of inputs; only `sites` (default all) move."""
    adm = dec.admissible(x)
    attacked = [s for s in (sites if sites is not None else list(adm.lo)) if s in adm.lo]
    fixed = {s: m for s, m in adm.start.items() if s not in attacked}
    gen = generator if generator is not None else seeded_generator(PGD_SEED)
    with torch.no_grad():
        y_ref = dec.target(x)
        worst = per_input_change(dec.forward_admissible(x, adm.start), y_ref, kind)
    lo = {s: adm.lo[s] for s in attacked}
    width = {s: adm.hi[s] - adm.lo[s] for s in attacked}
    m = {s: lo[s] + torch.rand(lo[s].shape, generator=gen).to(lo[s]) * width[s] for s in attacked}
    alpha = step_size(steps)
    for k in range(steps + 1):
        with torch.enable_grad():
            free = {s: v.detach().requires_grad_(k < steps) for s, v in m.items()}
            err = per_input_change(dec.forward_admissible(x, {**fixed, **free}), y_ref, kind)
            worst = torch.maximum(worst, err.detach())
            if k == steps or not err.requires_grad:
                break
            grads = torch.autograd.grad(err.sum(), list(free.values()), allow_unused=True)
        for (s, v), g in zip(free.items(), grads, strict=True):
            if g is not None:
                m[s] = torch.minimum(torch.maximum(v.detach() + alpha * width[s] * g.sign(), lo[s]), lo[s] + width[s])
    return worst


def pgd_faithfulness(
    dec: Decomposition,
    x: Tensor,
    kind: Literal["mse", "logits"],
    steps: int = PGD_STEPS,
    chunk: int = PGD_INPUTS,
) -> WorstCase:
    """Mean over inputs x of the worst admissible output error, all sites together and per site."""
    check_pgd_steps(steps)
    groups: list[list[str] | None] = [None] + ([[s] for s in dec.sites] if len(dec.sites) > 1 else [])
    means: list[float] = []
    for sites in groups:
        gen = seeded_generator(PGD_SEED)
        errs = [worst_errors(dec, x[i : i + chunk], kind, steps, sites, gen) for i in range(0, x.shape[0], chunk)]
        means.append(float(torch.cat(errs).mean()))
    total = means[0]
    by_site = dict(zip(dec.sites, means[1:], strict=True)) if len(dec.sites) > 1 else {s: total for s in dec.sites}
    return WorstCase(total, by_site)
