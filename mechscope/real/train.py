"""Dictionaries trained on a cached real model's activations, and their standard evaluations.

    cache = ActivationCache("cache/")
    dec = train_sae_cached(OutputModel(model, False), cache, "encoder.layer.3.output",
                           SAETopKConfig(n_latents=1536, k=32, steps=2000))
    sae_eval(dec.coder(site), held_out)     # {"fve": …, "l0": …, "dead_frac": …}

The training loop is the project's (`dictionary.train_coder`); only the activations come from disk.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mechscope.config import ConfigError
from mechscope.core import Progress, no_progress
from mechscope.decompose.dictionary import DictionaryConfig, SparseCoder, TopKOptions, train_coder
from mechscope.decompose.dictionary_decomposition import DictionaryDecomposition, SiteCoder
from mechscope.decompose.registry import FitContext
from mechscope.hooks import Where
from mechscope.real.activation_cache import ActivationCache


def fve(x: Tensor, x_hat: Tensor) -> float:
    """Fraction of variance explained: 1 − Σ‖x − x̂‖² / Σ‖x − mean(x)‖²."""
    return float(1 - (x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


@torch.no_grad()
def sae_eval(coder: SparseCoder, x: Tensor, y: Tensor | None = None) -> dict[str, float]:
    """FVE (of y, the coder's target; x for an SAE), mean L0 and dead fraction on rows x [n, d]."""
    z = coder.encode(x)
    y = x if y is None else y
    return {
        "fve": fve(y, coder.decode(z)),
        "l0": float((z > 0).sum(-1).float().mean()),
        "dead_frac": float(1 - (z > 0).any(0).float().mean()),
    }


def train_sae_cached(
    model: nn.Module, cache: ActivationCache, site: str, config: DictionaryConfig, seed: int = 0,
    write_site: str | None = None, progress: Progress = no_progress,
) -> DictionaryDecomposition:  # fmt: skip
    """An SAE (or, with `write_site`, a transcoder from `site`'s output to `write_site`'s output)
    trained on cached rows, read shuffled from the memory-mapped shards."""
    if config.n_latents is None or (isinstance(config, TopKOptions) and config.k is None):
        raise ConfigError("a real-model dictionary needs n_latents (and k for topk/batchtopk) set")
    ctx = FitContext(seed=seed)
    source = cache.source(site, ctx.generator(10), write_site)
    k = config.k if isinstance(config, TopKOptions) else None
    cfg = config.model_copy(update={"buffer_size": min(config.buffer_size, cache.n_rows)})
    coder = train_coder(source, cfg, config.n_latents, k, write_site is None, ctx.generator(100), progress)
    out_site = write_site or site
    read: tuple[str, Where] = (site, "output")
    return DictionaryDecomposition(model, {out_site: SiteCoder(coder, read)})
