"""Transcoders: a sparse dictionary that reads an MLP's input and predicts its output.

    z = act(W_enc a + b_enc),  m̂ = W_dec z + b_dec      a = the MLP's input, m = its output

Each latent is an input-conditioned mechanism of the MLP: it reads direction W_enc[c] of the
input and writes W_dec[c] into the output — the activation-side analogue of SPD's rank-1
parameter components. `forward_with` replaces the MLP's output with the transcoder's prediction
(computed from the MLP's input on the same pass), so the MLP is swapped out entirely.

Per task MLP `(input module, output module)` of `task.mlp_sites()`, the transcoder reads the input
of the input module and replaces the output of the output module; its Decomposition site is the
output module. `directions(site, "activation")` are the writes, `read_directions(site)` the reads.
Registered as `transcoder-topk` and `transcoder-jumprelu`; n/a on tasks without an MLP.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

from mechscope.config import Config, ConfigError
from mechscope.core import Task, TaskFacts
from mechscope.decompose.activation_buffer import loader_source, task_source
from mechscope.decompose.dictionary import DictionaryConfig, JumpReLUOptions, TopKOptions, train_coder
from mechscope.decompose.dictionary_decomposition import DictionaryDecomposition, SiteCoder
from mechscope.decompose.dictionary_sizing import fit_sizes, reads_truth
from mechscope.decompose.registry import FitContext, MethodSpec, register


class _MLPOption(Config):
    site: str | None = None
    """Output module of the one MLP to transcode; None: every MLP of `task.mlp_sites()`."""


class TranscoderTopKConfig(TopKOptions, _MLPOption):
    pass


class TranscoderJumpReLUConfig(JumpReLUOptions, _MLPOption):
    pass


def fit(target: nn.Module, task: TaskFacts, config: Config, ctx: FitContext) -> DictionaryDecomposition:
    """Train one transcoder per MLP of `task` (or the one named by `site`)."""
    assert isinstance(config, DictionaryConfig) and isinstance(config, _MLPOption)
    mlps = task.mlp_sites()
    if config.site is not None:
        mlps = [m for m in mlps if m[1] == config.site]
        if not mlps:
            allowed = ", ".join(out for _, out in task.mlp_sites()) or "(none)"
            raise ConfigError(f"site {config.site!r} is not an MLP output of {task.name!r}; allowed: {allowed}")
    if not mlps:
        raise ConfigError(f"task {task.name!r} has no MLP to transcode")
    target.to(ctx.device)  # the activations are computed, and the coder trained, on ctx.device
    coders: dict[str, SiteCoder] = {}
    for i, (mlp_in, mlp_out) in enumerate(mlps):
        source = task_source(target, task, (mlp_in, "input"), (mlp_out, "output"), ctx.generator(10 + i))
        n_latents, k = fit_sizes(config, source, task, mlp_out, ctx.truth, ctx.generator(1 + i))
        coder = train_coder(source, config, n_latents, k, False, ctx.generator(100 + i), ctx.progress,
                            ctx.device, ctx.placement)  # fmt: skip
        coders[mlp_out] = SiteCoder(coder, (mlp_in, "input"))
    return DictionaryDecomposition(target, coders)


def train_transcoder(
    model: nn.Module, loader: Iterable[Any], mlp_in: str, mlp_out: str, config: DictionaryConfig, seed: int = 0
) -> DictionaryDecomposition:
    """A transcoder of any model's MLP (input of module `mlp_in` → output of module `mlp_out`),
    trained on the batches of `loader`; `n_latents` (and `k`) must be set."""
    if config.n_latents is None or (isinstance(config, TopKOptions) and config.k is None):
        raise ConfigError("train_transcoder needs n_latents (and k for topk) set: no task to size them from")
    source = loader_source(model, loader, (mlp_in, "input"), (mlp_out, "output"))
    k = config.k if isinstance(config, TopKOptions) else None
    coder = train_coder(source, config, config.n_latents, k, False, FitContext(seed=seed).generator(100))
    return DictionaryDecomposition(model, {mlp_out: SiteCoder(coder, (mlp_in, "input"))})


def applies_to(task: Task) -> str | None:
    if task.kind == "dynamics":
        return "a transcoder decomposes a feed-forward MLP, not fixed-point dynamics"
    if not task.mlp_sites():
        return "the target has no MLP to transcode"
    return None


_SUMMARY = "transcoder: MLP input → MLP output"
register(MethodSpec("transcoder-topk", f"TopK {_SUMMARY}", TranscoderTopKConfig, fit, applies_to, "activation", reads_truth))
register(MethodSpec("transcoder-jumprelu", f"JumpReLU {_SUMMARY}", TranscoderJumpReLUConfig, fit, applies_to, "activation", reads_truth))
