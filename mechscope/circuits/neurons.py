"""The neuron basis as a decomposition: the supervision-free baseline every circuit method must beat.

Each MLP neuron is one component: it reads row W_in[n] of the MLP's input (plus its bias) through
the MLP's own ReLU and writes column W_out[:, n]. That is an exact transcoder with no training —

    W_enc = W_in, b_enc = b_in, activation ReLU, W_dec = W_outᵀ, b_dec = b_out

— so it is a `DictionaryDecomposition` and every graph, ablation and score treats it like any
other method. Only MLPs whose hidden nonlinearity is a ReLU (`relu(mlp_in(a))`) qualify.
"""

from __future__ import annotations

import torch
from torch import nn

from mechscope.decompose.dictionary import SparseCoder
from mechscope.decompose.dictionary_decomposition import DictionaryDecomposition, SiteCoder
from mechscope.hooks import get_module


def neuron_decomposition(target: nn.Module, mlp_sites: list[tuple[str, str]]) -> DictionaryDecomposition:
    """One exact ReLU "transcoder" per (input Linear, output Linear) pair of `mlp_sites`."""
    if not mlp_sites:
        raise ValueError("the neuron basis needs the target's MLPs (task.mlp_sites() is empty)")
    coders: dict[str, SiteCoder] = {}
    for mlp_in, mlp_out in mlp_sites:
        lin_in, lin_out = get_module(target, mlp_in), get_module(target, mlp_out)
        if not (isinstance(lin_in, nn.Linear) and isinstance(lin_out, nn.Linear)):
            raise ValueError(f"neuron basis needs nn.Linear MLP layers; {mlp_in!r}/{mlp_out!r} are not")
        d_hidden, d_in = lin_in.weight.shape
        coder = SparseCoder(d_in, lin_out.weight.shape[0], d_hidden, "relu", sae=False)
        with torch.no_grad():
            coder.W_enc.copy_(lin_in.weight)
            coder.b_enc.copy_(lin_in.bias if lin_in.bias is not None else torch.zeros(d_hidden))
            coder.W_dec.copy_(lin_out.weight.T)
            coder.b_dec.copy_(lin_out.bias if lin_out.bias is not None else torch.zeros(lin_out.weight.shape[0]))
        coder.eval()
        coders[mlp_out] = SiteCoder(coder, (mlp_in, "input"))
    return DictionaryDecomposition(target, coders)
