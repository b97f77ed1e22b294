"""The sparse coder's activation functions with hand-written backwards (see dictionary.py).

Each keeps its backward as sparse as its output: TopK and BatchTopK build W_enc's gradient from
the kept entries alone, JumpReLU passes the step's gradient to its threshold through a
rectangle-kernel pseudo-derivative."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class _TopKEncode(torch.autograd.Function):
    """(vals, idx) = topk(ReLU(x W_encᵀ + b), k), with a *sparse* backward.

    Autograd would scatter the [B, k] gradient into a dense [B, C] matrix and multiply it by x —
    as costly as the forward. Only B·k entries are non-zero, so W_enc's gradient is built from
    those rows alone (a sparse × dense product)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, W_enc: Tensor, b: Tensor, k: int) -> tuple[Tensor, Tensor]:
        pre = torch.addmm(b, x, W_enc.t())  # (B, C)
        vals, idx = pre.topk(k, dim=-1, sorted=False)  # (B, k)
        vals = vals.relu()
        ctx.save_for_backward(x, idx, vals)
        ctx.n_latents = W_enc.shape[0]
        ctx.mark_non_differentiable(idx)
        return vals, idx

    @staticmethod
    def backward(ctx: Any, g_vals: Tensor, _g_idx: Tensor) -> tuple[Tensor | None, ...]:
        x, idx, vals = ctx.saved_tensors
        B, k = idx.shape
        g = (g_vals * (vals > 0)).flatten()  # (B·k,) ReLU gate
        flat_idx = idx.flatten()
        grad_b = torch.zeros(ctx.n_latents, dtype=g.dtype, device=g.device).index_add_(0, flat_idx, g)
        rows = torch.arange(B, device=idx.device).repeat_interleave(k)
        G = torch.sparse_coo_tensor(torch.stack([flat_idx, rows]), g, (ctx.n_latents, B), check_invariants=False)
        grad_W = torch.sparse.mm(G, x)  # (C, d_in)
        return None, grad_W, grad_b, None


class _BatchTopKEncode(torch.autograd.Function):
    """(vals, rows, cols): the k·B largest of ReLU(x W_encᵀ + b) over the whole batch, as sparse
    entries, with the sparse backward of `_TopKEncode` (only the kept entries carry gradient)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, W_enc: Tensor, b: Tensor, n_kept: int) -> tuple[Tensor, Tensor, Tensor]:
        pre = torch.addmm(b, x, W_enc.t())  # (B, C)
        vals, flat_idx = pre.flatten().topk(n_kept, sorted=False)  # (k·B,)
        vals = vals.relu()
        C = W_enc.shape[0]
        rows, cols = flat_idx // C, flat_idx % C
        ctx.save_for_backward(x, rows, cols, vals)
        ctx.n_latents = C
        ctx.mark_non_differentiable(rows, cols)
        return vals, rows, cols

    @staticmethod
    def backward(ctx: Any, g_vals: Tensor, _g_rows: Tensor, _g_cols: Tensor) -> tuple[Tensor | None, ...]:
        x, rows, cols, vals = ctx.saved_tensors
        g = g_vals * (vals > 0)
        grad_b = torch.zeros(ctx.n_latents, dtype=g.dtype, device=g.device).index_add_(0, cols, g)
        G = torch.sparse_coo_tensor(torch.stack([cols, rows]), g, (ctx.n_latents, x.shape[0]), check_invariants=False)
        return None, torch.sparse.mm(G, x), grad_b, None


def sparse_decode(base: Tensor, rows: Tensor, cols: Tensor, vals: Tensor, W_dec: Tensor) -> Tensor:
    """base [B, d] + Σ over entries (row, col, val) of val · W_dec[col] added to that row: the
    decoder on a sparse code, O(entries · d) instead of the dense O(B · C · d)."""
    return base.index_add(0, rows, vals[:, None] * W_dec[cols])


class _JumpReLU(torch.autograd.Function):
    """z = pre · H(pre − θ); ∂z/∂θ = −(θ/ε) K((pre − θ)/ε), K the unit rectangle."""

    @staticmethod
    def forward(ctx: Any, pre: Tensor, theta: Tensor, eps: float) -> Tensor:
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return pre * (pre > theta)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:
        pre, theta = ctx.saved_tensors
        near = ((pre - theta).abs() < ctx.eps / 2).to(g.dtype)
        grad_theta = (g * -(theta / ctx.eps) * near).sum(0)
        return g * (pre > theta), grad_theta, None


class _Step(torch.autograd.Function):
    """H(pre − θ) (the L0 count); ∂/∂θ = −(1/ε) K((pre − θ)/ε), and ∂/∂pre = +(1/ε) K(·) when
    `to_pre` (the encoder too is pushed away from firing near θ; off in the original paper)."""

    @staticmethod
    def forward(ctx: Any, pre: Tensor, theta: Tensor, eps: float, to_pre: bool) -> Tensor:
        ctx.save_for_backward(pre, theta)
        ctx.eps, ctx.to_pre = eps, to_pre
        return (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:
        pre, theta = ctx.saved_tensors
        kernel = g * ((pre - theta).abs() < ctx.eps / 2).to(g.dtype) / ctx.eps
        return (kernel if ctx.to_pre else None), -kernel.sum(0), None, None
