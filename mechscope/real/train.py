"""Dictionaries trained on a cached real model's activations, and their standard evaluations.

    cache = ActivationCache("cache/")
    coder = train_cached_coder(cache, "encoder.layer.3.output", SAETopKConfig(n_latents=1536, k=32))
    dec = train_sae_cached(OutputModel(model, False), cache, "encoder.layer.3.output", config)
    sae_eval(dec.coder(site), held_out)     # {"fve": …, "l0": …, "dead_frac": …}

The training loop is the project's one (`dictionary.train_coder`: any device, data-parallel under
torchrun through `parallel.Placement`); only the activations come from disk.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mechscope.config import ConfigError
from mechscope.core import Progress, no_progress, seeded_generator
from mechscope.decompose.dictionary import DictionaryConfig, SparseCoder, TopKOptions, train_coder
from mechscope.decompose.dictionary_decomposition import DictionaryDecomposition, SiteCoder
from mechscope.decompose.parallel import Placement
from mechscope.hooks import Where
from mechscope.real.activation_cache import ActivationCache


def fve(x: Tensor, x_hat: Tensor) -> float:
    """Fraction of variance explained: 1 − Σ‖x − x̂‖² / Σ‖x − mean(x)‖²."""
    return float(1 - (x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


@torch.no_grad()
def sae_eval(coder: SparseCoder, x: Tensor, y: Tensor | None = None) -> dict[str, float]:
    """FVE (of y, the coder's target; x for an SAE), mean L0 and dead fraction on rows x [n, d]."""
    x = x.to(coder.W_enc.device)
    y = x if y is None else y.to(x.device)
    z = coder.encode(x)
    return {
        "fve": fve(y, coder.decode(z)),
        "l0": float((z > 0).sum(-1).float().mean()),
        "dead_frac": float(1 - (z > 0).any(0).float().mean()),
    }


def train_cached_coder(
    cache: ActivationCache, site: str, config: DictionaryConfig, seed: int = 0, write_site: str | None = None,
    progress: Progress = no_progress, device: str = "cpu", placement: Placement = Placement(),
    mixed_precision: bool = False,
) -> SparseCoder:  # fmt: skip
    """An SAE of `site` (or, with `write_site`, a transcoder from `site`'s rows to `write_site`'s)
    trained on cached rows read shuffled from the memory-mapped shards; on `device`."""
    if config.n_latents is None or (isinstance(config, TopKOptions) and config.k is None):
        raise ConfigError("a real-model dictionary needs n_latents (and k for topk/batchtopk) set")
    source = cache.source(site, seeded_generator(seed, 10), write_site)
    k = config.k if isinstance(config, TopKOptions) else None
    cfg = config.model_copy(update={"buffer_size": min(config.buffer_size, cache.n_rows)})
    return train_coder(source, cfg, config.n_latents, k, write_site is None, seeded_generator(seed, 100), progress,
                       device, placement, mixed_precision)  # fmt: skip


def train_sae_cached(
    model: nn.Module, cache: ActivationCache, site: str, config: DictionaryConfig, seed: int = 0,
    write_site: str | None = None, progress: Progress = no_progress, device: str = "cpu",
    placement: Placement = Placement(), mixed_precision: bool = False,
) -> DictionaryDecomposition:  # fmt: skip
    """`train_cached_coder` as a Decomposition of `model` (the cache's model)."""
    coder = train_cached_coder(cache, site, config, seed, write_site, progress, device, placement, mixed_precision)
    read: tuple[str, Where] = (site, "output")
    return DictionaryDecomposition(model, {write_site or site: SiteCoder(coder, read)})
