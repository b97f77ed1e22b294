"""Matryoshka BatchTopK SAE (Bussmann et al. 2025; Nabeshima 2024): nested prefixes each reconstruct.

The latents are ordered; for prefix widths w₁ < w₂ < … < C each prefix alone must reconstruct:

    z = BatchTopK(W_enc (h − b_dec) + b_enc)                                  [B, C]
    ĥ_w = z[:, :w] W_dec[:w] + b_dec
    loss = Σ_w ‖h − ĥ_w‖²  (+ AuxK on the full residual, as BatchTopK)

so the first latents must carry the most general directions on their own, and a parent feature
cannot be split off into children (absorption) without the small prefixes paying for it. At
inference it *is* a BatchTopK SAE (one threshold θ), saved and loaded as one. Widths halve from
C: C/8, C/4, C/2, C (the same `matryoshka_widths` the `saelens-matryoshka` peer uses).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from mechscope.bounds import Count
from mechscope.config import Config, ConfigError
from mechscope.core import TaskFacts
from mechscope.decompose.dictionary import (
    BatchTopKOptions,
    DictionaryConfig,
    SparseCoder,
    TrainStep,
)
from mechscope.decompose.dictionary_decomposition import DictionaryDecomposition
from mechscope.decompose.dictionary_kernels import sparse_decode
from mechscope.decompose.dictionary_sizing import reads_truth
from mechscope.decompose.registry import FitContext, MethodSpec, register
from mechscope.decompose.sae import SiteOption, applies_to
from mechscope.decompose.sae import fit as fit_sae


class SAEMatryoshkaConfig(BatchTopKOptions, SiteOption):
    levels: Count = 4
    """Number of nested prefixes: widths C/2^(levels−1), …, C/2, C."""


def matryoshka_widths(n_latents: int, levels: int = 4) -> list[int]:
    """Nested prefix widths C/2^(levels−1), …, C/2, C (distinct, ≥ 1)."""
    return sorted({max(1, n_latents >> i) for i in range(levels)})


class MatryoshkaCoder(SparseCoder):
    """A BatchTopK coder whose training loss sums the reconstruction error of every prefix."""

    def __init__(self, *args: Any, levels: int = 4, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.activation != "batchtopk":
            raise ConfigError(f"a Matryoshka coder uses batchtopk, not {self.activation!r}")
        self.widths = matryoshka_widths(self.n_latents, levels)

    def train_step(self, x: Tensor, y: Tensor, cfg: DictionaryConfig, dead: Tensor) -> TrainStep:
        assert isinstance(cfg, BatchTopKOptions)
        kept = self._kept_pre_acts(x, self._enc_bias())  # one x W_encᵀ for the code and AuxK
        vals, rows, cols = self.batchtopk_entries(x, cfg, kept)  # BatchTopK over the batch (updates θ)
        y_hat = self.b_dec.expand_as(y)
        loss = y.new_zeros(())
        start = 0
        for w in self.widths:  # ĥ_w = ĥ_{w_prev} + z[:, w_prev:w] W_dec[w_prev:w], on the sparse code
            level = (cols >= start) & (cols < w)
            y_hat = sparse_decode(y_hat, rows[level], cols[level], vals[level], self.W_dec)
            loss = loss + (y_hat - y).pow(2).sum(-1).mean()
            start = w
        mse = (y_hat - y).pow(2).sum(-1).mean()
        if cfg.aux_coef > 0 and bool(dead.any()):
            loss = loss + cfg.aux_coef * self._aux_loss(x, (y - y_hat).detach(), dead, cfg, kept)
        fired = torch.zeros(self.n_latents, dtype=torch.bool, device=x.device)
        fired[cols[vals > 0]] = True
        return TrainStep(loss, mse.detach(), fired, float((vals > 0).sum()) / x.shape[0])


def fit(target: nn.Module, task: TaskFacts, config: Config, ctx: FitContext) -> DictionaryDecomposition:
    """Train one Matryoshka SAE per activation site (the seeds and sizes of `sae-batchtopk`)."""
    assert isinstance(config, SAEMatryoshkaConfig)
    if config.levels < 1:
        raise ConfigError(f"levels={config.levels} must be ≥ 1")
    return fit_sae(target, task, config, ctx, partial(MatryoshkaCoder, levels=config.levels))


register(
    MethodSpec(
        "sae-matryoshka",
        "Matryoshka BatchTopK SAE: nested prefixes each reconstruct",
        SAEMatryoshkaConfig,
        fit,
        applies_to,
        "activation",
        reads_truth,
    )
)
