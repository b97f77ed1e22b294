"""A batch's sparse code listed block by block of latents, and the decoder on it (see dictionary.py).

ReLU and JumpReLU train on their firing entries alone below `SPARSE_BELOW` density. At 1–5 % of
B = 1024 × C = 8192 (d = 512) every product over those entries is memory-bound, and what it costs is
set by which dense operand stays in cache (1 thread, CPU; RESULTS.md):

- ŷ = Z W_dec gathers one decoder row per entry. Row by row over the whole code, W_dec (16 MB)
  streams from memory for every row: 40 ms at 5 % (`embedding_bag` or one CSR product). Row by row
  within blocks of latents whose decoder rows fit in L2 (`DECODER_BLOCK_BYTES`): 16 ms.
- ∂z = ∂ŷ W_decᵀ at the entries (a sampled product), block by block: 21 ms (`embedding_bag`'s 37).
- ∂W_dec = Zᵀ ∂ŷ and ∂W_enc = Gᵀ x add a row of a [B, d] operand (in cache) per entry, latent by
  latent (CSR of Zᵀ): 11 ms each written into their output (`torch.addmm`, β = 0; `Z @ G` zero-fills
  and copies: 22), where `embedding_bag`'s ∂W_dec took 43. Both need the entries in latent order:
  one sort (`SparseCode.latent_major`), shared.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

DECODER_BLOCK_BYTES = 2**21
"""Latents per block: as many as have decoder rows in this many bytes (an L2 cache's worth)."""


def csr(crow: Tensor, cols: Tensor, vals: Tensor, shape: tuple[int, int]) -> Tensor:
    with warnings.catch_warnings():  # "sparse CSR support is in beta": CSR × dense is what we use
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, cols, vals, shape, check_invariants=False)


class SparseCode:
    """The entries (rows, cols) of a [B, C] code, block-major: latents in blocks of `block`, within
    a block rows ascending, within a row latents ascending. `blocks`: per block its first latent,
    its entries' span [e0, e1) and its CSR row pointer and block-local latents."""

    def __init__(self, on: Tensor, block: int) -> None:
        B, C = on.shape
        self.shape, self.block = (B, C), block
        self.blocks: list[tuple[int, int, int, Tensor, Tensor]] = []
        rows, cols, e0 = [], [], 0
        for c0 in range(0, C, block):
            r, c = on[:, c0 : c0 + block].nonzero().unbind(1)
            counts = torch.bincount(r, minlength=B)
            crow = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
            self.blocks.append((c0, e0, e0 + r.shape[0], crow, c))
            rows.append(r)
            cols.append(c + c0)
            e0 += r.shape[0]
        self.rows, self.cols = torch.cat(rows), torch.cat(cols)
        self._latent_major: tuple[Tensor, Tensor, Tensor] | None = None

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def gather(self, dense: Tensor) -> Tensor:
        """dense [B, C] at the entries (one flat `index_select`: half the time of dense[rows, cols])."""
        return dense.reshape(-1).index_select(0, self.rows * self.shape[1] + self.cols)

    def latent_major(self) -> tuple[Tensor, Tensor, Tensor]:
        """(order, crow, rows): the permutation that sorts the entries by latent (rows ascending
        within one: a stable sort of block-major entries), the [C + 1] row pointer of Zᵀ in CSR, and
        its column indices (the entries' rows in that order)."""
        if self._latent_major is None:
            order = torch.sort(self.cols.int(), stable=True).indices  # int32 keys: half the time of int64
            counts = torch.bincount(self.cols, minlength=self.shape[1])
            crow = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
            self._latent_major = order, crow, self.rows.index_select(0, order)
        return self._latent_major

    def t_mm(self, vals: Tensor, G: Tensor) -> Tensor:
        """Zᵀ G [C, m] for the code Z with values `vals` at the entries and G [B, m]."""
        order, crow, rows = self.latent_major()
        Zt = csr(crow, rows, vals.index_select(0, order), (self.shape[1], self.shape[0]))
        out = G.new_empty(self.shape[1], G.shape[1], dtype=vals.dtype)  # into `out`, β = 0: no zero-fill
        return torch.addmm(out, Zt, G.to(vals.dtype), beta=0, out=out)  # and no copy (22 → 11 ms at 5 %)

    def block_csr(self, vals: Tensor) -> list[tuple[int, Tensor]]:
        """(first latent, Z[:, block] as CSR [B, width]) for each block."""
        B, C = self.shape
        return [
            (c0, csr(crow, local, vals[e0:e1], (B, min(C - c0, self.block))))
            for c0, e0, e1, crow, local in self.blocks
        ]


def latent_block(n_latents: int, d_out: int, itemsize: int) -> int:
    return max(1, min(n_latents, DECODER_BLOCK_BYTES // (d_out * itemsize)))


def code_entries(pre: Tensor, bound: Tensor | float, limit: float, block: int) -> tuple[SparseCode, Tensor] | None:
    """(entries, mask) of pre [B, C] > bound, or None when more than `limit` entries are; the count
    is first estimated on 64 rows (0.5 ms), so a dense step skips listing them."""
    if int(torch.count_nonzero(pre[:64] > bound)) * pre.shape[0] > limit * min(64, pre.shape[0]):
        return None
    on = pre > bound
    code = SparseCode(on, block)
    return None if len(code) > limit else (code, on)


class _CodeDecode(torch.autograd.Function):
    """base [B, d] + Z W_dec for the code Z with values `vals` at `code`'s entries, block by block
    (module docstring); backward: ∂vals by a sampled product per block, ∂W_dec = Zᵀ ∂ŷ latent-major."""

    @staticmethod
    def forward(ctx: Any, base: Tensor, vals: Tensor, W_dec: Tensor, code: SparseCode) -> Tensor:
        ctx.save_for_backward(vals, W_dec)
        ctx.code = code
        y = base.contiguous().clone()
        for c0, Z in code.block_csr(vals):
            y.addmm_(Z, W_dec[c0 : c0 + code.block])
        return y

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:
        vals, W_dec = ctx.saved_tensors
        code: SparseCode = ctx.code
        g = g.contiguous()
        grad_vals = grad_W = None
        if ctx.needs_input_grad[1]:  # ∂z[b, c] = ∂ŷ[b] · W_dec[c]: the product sampled at the entries
            parts = [
                torch.sparse.sampled_addmm(Z, g, W_dec[c0 : c0 + code.block].t(), beta=0).values()
                for c0, Z in code.block_csr(vals.detach())
            ]
            grad_vals = torch.cat(parts) if parts else vals.new_zeros(0)
        if ctx.needs_input_grad[2]:
            grad_W = code.t_mm(vals, g)
        return g, grad_vals, grad_W, None


def code_decode(base: Tensor, vals: Tensor, W_dec: Tensor, code: SparseCode) -> Tensor:
    """ŷ = base + Z W_dec, Z the sparse code with values `vals` [entries] at `code`'s entries."""
    out: Tensor = _CodeDecode.apply(base, vals, W_dec, code)
    return out
