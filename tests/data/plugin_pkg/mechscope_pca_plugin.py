"""A tiny third-party method, registered through the `mechscope.methods` entry point: the site's
principal directions (± each) as a fixed ReLU dictionary — what a plugin author writes."""

from __future__ import annotations

import torch
from torch import nn

from mechscope.config import Config
from mechscope.core import TaskFacts
from mechscope.decompose.activation_buffer import task_source
from mechscope.decompose.dictionary import SparseCoder
from mechscope.decompose.dictionary_decomposition import DictionaryDecomposition, SiteCoder
from mechscope.decompose.registry import FitContext, MethodSpec


class PCAConfig(Config):
    n_samples: int = 2_048


def fit(target: nn.Module, task: TaskFacts, config: Config, ctx: FitContext) -> DictionaryDecomposition:
    assert isinstance(config, PCAConfig)
    coders = {}
    for site in task.activation_sites():
        x, _ = task_source(target, task, (site, "output"), (site, "output"), ctx.generator(0))(config.n_samples)
        mean = x.mean(0)
        V = torch.linalg.svd(x - mean, full_matrices=False).Vh  # (d, d) principal directions
        D = torch.cat([V, -V])  # (2d, d): each direction both ways, so ReLU codes are ≥ 0
        coder = SparseCoder(x.shape[1], x.shape[1], D.shape[0], "relu", sae=True)
        with torch.no_grad():
            coder.W_enc.copy_(D)
            coder.W_dec.copy_(D)
            coder.b_enc.zero_()
            coder.b_dec.copy_(mean)
        coders[site] = SiteCoder(coder.eval(), (site, "output"))
    return DictionaryDecomposition(target, coders)


SPEC = MethodSpec("plugin-pca", "principal directions of the site (a test plugin)", PCAConfig, fit,
                  family="activation")
