"""Dictionary sizes: how wide an SAE or transcoder is and how many latents fire (TopK's k).

`blind_sizes` reads them off the activations alone (width = `expansion` × the site's numerical
rank; k from the activations' excess kurtosis) — what a user with a real model can know.
`oracle_sizes` reads them off the ground truth, only under the explicit `sizing="oracle"` setting
(`reads_truth`), so a truth-sized row is always labelled as such.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mechscope.config import Config, ConfigError
from mechscope.core import GroundTruth, TaskFacts
from mechscope.decompose.activation_buffer import Source
from mechscope.decompose.dictionary import (
    BatchTopKOptions,
    DictionaryConfig,
    TopKOptions,
)
from mechscope.decompose.sparsity_rules import site_width, sparsity_estimate


# --- sizes: from the data (blind) or from the truth (oracle) -------------------------------------
def blind_sizes(cfg: DictionaryConfig, x: Tensor, generator: torch.Generator) -> tuple[int, float | None]:
    """(n_latents, k) from the site's activations x [N, d_in] alone — what a user with a real
    model can compute. C = round(expansion × site_width(x)); k = ⌊sparsity_estimate(x)⌋, between
    1 and half the width: rounded *down* because a k below the true L0 costs TopK far less
    recovery than one above it (stress sweep in benchmarks/RESULTS.md: k = 1 0.99, k = 4 0.94 on iid
    data with L0 = 2). BatchTopK's k is a batch mean, so below 1 it stays fractional (the estimate
    to 2 significant digits): on tms-5-2 (true L0 0.26, estimate 0.58) k = 1 made most inputs,
    which use no feature, fire a latent. The L1 price has its own rule (`sparsity_rules.l1_price`)."""
    width = site_width(x)
    n_latents = cfg.n_latents if cfg.n_latents is not None else max(2, round(cfg.expansion * width))
    k: float | None = None
    if isinstance(cfg, TopKOptions):
        k = cfg.k if cfg.k is not None else blind_k(sparsity_estimate(x, generator), width, isinstance(cfg, BatchTopKOptions))
        _check_k(k, n_latents)
    return n_latents, k


def blind_k(l0_estimate: float, width: int, fractional: bool) -> float:
    """k from an L0 estimate: rounded down to a whole number, at most half the width; at least 1,
    or (`fractional`, BatchTopK) the estimate itself when it is below 1."""
    if fractional and l0_estimate < 1:
        return _fractional_k(l0_estimate)
    return int(min(max(1.0, l0_estimate), max(1, width // 2)))


def _fractional_k(mean: float) -> float:
    """A BatchTopK k below 1: the mean to 2 significant digits, at least 1e-3."""
    return float(f"{max(mean, 1e-3):.2g}")


def oracle_sizes(cfg: DictionaryConfig, n_directions: int, active_counts: Tensor) -> tuple[int, float | None]:
    """(n_latents, k) from the ground truth (sizing=oracle): C = 2 × the n_directions true
    directions at the site, k = the rounded mean of `active_counts` [n] (how many of them each
    input uses, ≥ 1; BatchTopK: the mean itself when it is below 1)."""
    n_latents = cfg.n_latents if cfg.n_latents is not None else 2 * n_directions
    k: float | None = None
    if isinstance(cfg, TopKOptions):
        # More slots than features are really active buy polysemantic fix-ups and spurious firing
        # on single-feature inputs (measured: TMS 40-10 k=4 vs 2, residual MLP k=2 vs 1).
        mean = float(active_counts.float().mean())
        fractional = isinstance(cfg, BatchTopKOptions) and mean < 1
        k = cfg.k if cfg.k is not None else (_fractional_k(mean) if fractional else max(1, round(mean)))
        _check_k(k, n_latents)
    return n_latents, k


def fit_sizes(
    cfg: DictionaryConfig, source: Source, task: TaskFacts, site: str, truth: GroundTruth | None,
    generator: torch.Generator,
) -> tuple[int, float | None]:  # fmt: skip
    """(n_latents, k) for one site's fit: from 8,192 activations of `source` (sizing=blind), or
    from the ground truth at `site` (sizing=oracle; `truth` is None in a blind fit)."""
    if cfg.sizing == "oracle":
        if truth is None:
            raise RuntimeError("sizing=oracle needs the ground truth, but this fit was handed none (use fit_blind)")
        return oracle_sizes(cfg, *truth_counts(truth, task.sample(4_096, generator), site))
    return blind_sizes(cfg, source(8_192)[0], generator)


def reads_truth(config: Config) -> bool:
    """A dictionary method's `MethodSpec.reads_truth`: only a sizing=oracle fit gets the truth."""
    return isinstance(config, DictionaryConfig) and config.sizing == "oracle"


def truth_counts(truth: GroundTruth, probe: Tensor, site: str) -> tuple[int, Tensor]:
    """(number of true activation directions at `site`, [n] how many each input of `probe` uses):
    what `oracle_sizes` reads."""
    return len(truth.in_space("activation", site)), truth.active(probe, "activation", site).sum(-1)


def _check_k(k: float, n_latents: int) -> None:
    if k > n_latents:
        raise ConfigError(f"k={k} is larger than the dictionary (n_latents={n_latents})")
