"""Sparse autoencoders (SAEs): a sparse dictionary of one activation site, reconstructing itself.

    z = act(W_enc (h − b_dec) + b_enc),  ĥ = W_dec z + b_dec      h = the site module's output

The four variants (`sae-relu`, `sae-topk`, `sae-batchtopk`, `sae-jumprelu`) share the coder and the
training loop of `dictionary.py`; this file only says *where* an SAE reads (a task's
`activation_sites()`, or the `site` setting) and registers them. On a real model:

    dec = train_sae(model, loader, "transformer.h.0.mlp", SAETopKConfig(n_latents=512, k=16))
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from torch import nn

from mechscope.bounds import Count, Fraction, LearningRate, Positive
from mechscope.config import Config, ConfigError
from mechscope.core import Task, TaskFacts
from mechscope.decompose.activation_buffer import loader_source, task_source
from mechscope.decompose.dictionary import (
    BatchTopKOptions,
    DictionaryConfig,
    JumpReLUOptions,
    ReLUOptions,
    SparseCoder,
    TopKOptions,
    train_coder,
)
from mechscope.decompose.dictionary_decomposition import DictionaryDecomposition, SiteCoder
from mechscope.decompose.dictionary_sizing import fit_sizes, reads_truth
from mechscope.decompose.registry import FitContext, MethodSpec, register


class SiteOption(Config):
    site: str | None = None
    """Module whose output the SAE decomposes; None: the task's `activation_sites()`."""


class SAEReLUConfig(ReLUOptions, SiteOption):
    pass


class SAETopKConfig(TopKOptions, SiteOption):
    """Rows start at norm 1 (`init_norm`). A small start (0.05) lifts tms-40-10's activity_f1 0.741 →
    0.883 — TopK's spare slot on a one-feature input then lands on a live near-duplicate, not on a
    neighbour's latent — but costs mmcs on the stress variants (stress-iid at k = 1 0.989 → 0.945,
    hierarchical 0.940 → 0.897, synth-sae-bench 0.603 → 0.561; RESULTS "ReLU's price ramp…"): not taken."""

    lr: LearningRate = 5e-3
    """Measured (RESULTS "Two scorer artefacts fixed…", 3 seeds): synth-sae-bench's 300 steps mmcs
    0.485 at 2e-3 → 0.574 (sparsify's default, Signum at 0.02 there: 0.557); tms-40-10, stress-iid and
    resid-mlp-1l mmcs unchanged (1.000, 0.998, 0.998). BatchTopK and Matryoshka keep 2e-3: at 5e-3
    stress-iid 0.979 → 0.976 and 0.904 → 0.882 (seed 0)."""


class SAEBatchTopKConfig(BatchTopKOptions, SiteOption):
    pass


class SAEJumpReLUConfig(JumpReLUOptions, SiteOption):
    """The SAE starts small as sae-relu does (rows of norm 0.1; lr scaled by √(10/d_in)) and trains the
    first 70 % of its steps as an L1 SAE: from a near-ReLU start with only the L0 price, its
    latents settle on mixtures of features and die as θ rises (stress-iid 0.82 ± 0.03, 31 of 80
    alive). At the switch the decoder norms are folded into encoder, bias and θ (the same function,
    unit rows). Transcoders keep L0 from the start. Measured: benchmarks/RESULTS.md (helper sae13)."""

    l1_warmup_frac: Fraction = 0.7
    init_norm: Positive = 0.1
    lr_reference_dim: Count | None = 10


def fit(
    target: nn.Module, task: TaskFacts, config: Config, ctx: FitContext,
    make_coder: Callable[..., SparseCoder] | None = None,
) -> DictionaryDecomposition:  # fmt: skip
    """Train one SAE per activation site of `task` on the target's activations (`make_coder`: a
    SparseCoder subclass with its own loss, e.g. Matryoshka's)."""
    assert isinstance(config, DictionaryConfig) and isinstance(config, SiteOption)
    sites = [config.site] if config.site else task.activation_sites()
    if not sites:
        raise ConfigError(f"task {task.name!r} names no activation site; set site=<module name>")
    target.to(ctx.device)  # the activations are computed, and the coder trained, on ctx.device
    coders: dict[str, SiteCoder] = {}
    for i, site in enumerate(sites):
        source = task_source(target, task, (site, "output"), (site, "output"), ctx.generator(10 + i))
        n_latents, k = fit_sizes(config, source, task, site, ctx.truth, ctx.generator(1 + i))
        coder = train_coder(source, config, n_latents, k, True, ctx.generator(100 + i), ctx.progress,
                            ctx.device, ctx.placement, make_coder=make_coder)  # fmt: skip
        coders[site] = SiteCoder(coder, (site, "output"))
    return DictionaryDecomposition(target, coders)


def train_sae(
    model: nn.Module, loader: Iterable[Any], site: str, config: DictionaryConfig, seed: int = 0
) -> DictionaryDecomposition:
    """An SAE of any model's (e.g. a transformers model's) output of module `site`, trained on the
    batches of `loader`; `n_latents` (and `k`) must be set — there is no task to size them from."""
    if config.n_latents is None or (isinstance(config, TopKOptions) and config.k is None):
        raise ConfigError("train_sae needs n_latents (and k for topk/batchtopk) set: no task to size them from")
    source = loader_source(model, loader, (site, "output"), (site, "output"))
    k = config.k if isinstance(config, TopKOptions) else None
    coder = train_coder(source, config, config.n_latents, k, True, FitContext(seed=seed).generator(100))
    return DictionaryDecomposition(model, {site: SiteCoder(coder, (site, "output"))})


def applies_to(task: Task) -> str | None:
    if task.kind == "dynamics":
        return "an SAE decomposes activations of a feed-forward target, not fixed-point dynamics"
    if not task.activation_sites():
        return "the task names no activation site"
    return None


_SUMMARY = "sparse autoencoder on the task's activation site"
register(MethodSpec("sae-relu", f"ReLU + L1 {_SUMMARY}", SAEReLUConfig, fit, applies_to, "activation", reads_truth))
register(MethodSpec("sae-topk", f"TopK {_SUMMARY} (AuxK revival)", SAETopKConfig, fit, applies_to, "activation", reads_truth))
register(MethodSpec("sae-batchtopk", f"BatchTopK {_SUMMARY}", SAEBatchTopKConfig, fit, applies_to, "activation", reads_truth))
register(MethodSpec("sae-jumprelu", f"JumpReLU {_SUMMARY} (L0 penalty)", SAEJumpReLUConfig, fit, applies_to, "activation", reads_truth))
