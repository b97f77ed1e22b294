"""AuxK (Gao et al. 2024): the dead latents' largest pre-activations reconstruct what the live code
missed, so a latent that stopped firing gets a gradient towards error it could explain.

    z_aux = TopK_{k_aux}(ReLU(pre[:, dead]))        L_aux = ‖(y − ŷ) − z_aux W_dec[dead]‖²

k_aux is half the output width. On a toy (d 10, k_aux 5 of tens of dead latents) z_aux fills a
large share of the dead columns and dense products over them are the fast form. On a wide
dictionary it is a small share (d 512, 8,192 latents: 256 of the dead), and the dense form — the
dead latents' pre-activations recomputed, their encoder gradient, z_aux W_dec and its two
gradients: five [B, n_dead] × d products — grew with every latent that died: a TopK step took 161
ms with none dead, 307 at 2,000 and 881 at 6,000 (B 1,024, 1 thread; RESULTS.md). The sparse form reads the
step's pre-activations, already computed for TopK's own selection, and works on the B·k_aux
entries alone with the sparse code's kernels (sparse_code.py): the same loss and gradients.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from mechscope.decompose.dictionary_kernels import _EncodeAt
from mechscope.decompose.sparse_code import SparseCode, code_decode, latent_block

AUX_SPARSE_BELOW = 0.12
"""The sparse form when k_aux is below this share of the dead latents: the two forms cross near 2,000
dead at k_aux 256 (0.128; `benchmarks/auxk_speed.py`), as the ReLU step's sparse and dense do at ≈ 12 %."""
AUX_SPARSE_MIN_DEAD = 512
"""…and at least this many are dead: below it the dense products cost less than listing entries."""


def uses_sparse_aux(pre: Tensor | None, n_dead: int, k_aux: int) -> bool:
    return (
        pre is not None and pre.device.type == "cpu"  # measured on CPU; an accelerator's dense products are fast
        and n_dead >= AUX_SPARSE_MIN_DEAD and k_aux < AUX_SPARSE_BELOW * n_dead
    )  # fmt: skip


def dense_aux_loss(x: Tensor, W_enc: Tensor, bias: Tensor, W_dec: Tensor, residual: Tensor, dead: Tensor, k_aux: int) -> Tensor:
    """L_aux with dense products over the dead latents (over all, masked, when most are dead: no gather)."""
    if 2 * int(dead.sum()) > W_enc.shape[0]:
        pre = F.linear(x, W_enc, bias).masked_fill(~dead, -math.inf)  # (B, C)
    else:
        dead_idx = dead.nonzero().squeeze(1)
        pre, W_dec = F.linear(x, W_enc[dead_idx], bias[dead_idx]), W_dec[dead_idx]  # (B, n_dead)
    vals, idx = pre.topk(k_aux, dim=-1, sorted=False)
    z_aux = torch.zeros_like(pre).scatter(1, idx, vals.relu())
    return (z_aux @ W_dec - residual).pow(2).sum(-1).mean()


def sparse_aux_loss(
    x: Tensor, W_enc: Tensor, b_enc: Tensor, b_dec: Tensor | None, W_dec: Tensor, residual: Tensor,
    dead: Tensor, k_aux: int, pre: Tensor,
) -> Tensor:  # fmt: skip
    """L_aux on its entries alone, from pre [B, C] = W_enc (x − b_dec) + b_enc without a graph
    (b_dec None: a transcoder's x); the gradients are pre's at the entries (`_EncodeAt`)."""
    B, C = pre.shape
    dead_idx = dead.nonzero().squeeze(1)
    vals, local = pre.index_select(1, dead_idx).topk(k_aux, dim=1, sorted=False)  # (B, k_aux)
    live = vals > 0  # ReLU: an entry at ≤ 0 carries neither value nor gradient
    rows = torch.arange(B, device=pre.device).unsqueeze(1).expand_as(local)[live]
    on = torch.zeros(B, C, dtype=torch.bool, device=pre.device)
    on[rows, dead_idx[local[live]]] = True
    code = SparseCode(on, latent_block(C, W_dec.shape[1], W_dec.element_size()))
    z_aux = _EncodeAt.apply(x, W_enc, b_enc, b_dec, pre.new_zeros(C), pre, code)  # pre at the entries
    r_hat = code_decode(residual.new_zeros(residual.shape), z_aux, W_dec, code)
    return (r_hat - residual).pow(2).sum(-1).mean()
