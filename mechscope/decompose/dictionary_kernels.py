"""The sparse coder's activation functions with hand-written backwards (see dictionary.py).

Each keeps its backward as sparse as its output: TopK and BatchTopK build W_enc's gradient from
the kept entries alone, JumpReLU passes the step's gradient to its threshold through a
rectangle-kernel pseudo-derivative."""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mechscope.decompose.sparse_code import SparseCode, code_entries


def _encoder_grads(x: Tensor, rows: Tensor, cols: Tensor, g: Tensor, n_latents: int) -> tuple[Tensor, Tensor]:
    """(∂W_enc, ∂b) of pre = x W_encᵀ + b from the gradient g at the entries (rows, cols) alone:
    a sparse × dense product, O(entries · d_in) instead of the dense O(B · C · d_in). Gᵀ [C, B] as
    CSR (entries sorted by latent): 10.6 / 40 ms at 0.6 / 5 % of B = 1024 × C = 8192, d = 512, where
    the COO product took 17.4 / 69 ms (1 thread; the same sums)."""
    order = torch.argsort(cols, stable=True)
    counts = torch.bincount(cols, minlength=n_latents)
    crow = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    with warnings.catch_warnings():  # "sparse CSR support is in beta": CSR × dense is what we use
        warnings.simplefilter("ignore", UserWarning)
        G = torch.sparse_csr_tensor(crow, rows[order], g[order], (n_latents, x.shape[0]), check_invariants=False)
    return G @ x.to(g.dtype), counts.new_zeros(n_latents, dtype=g.dtype).index_add_(0, cols, g)


class _TopKEncode(torch.autograd.Function):
    """(vals, idx) = topk(ReLU(x W_encᵀ + b), k), with a *sparse* backward.

    Autograd would scatter the [B, k] gradient into a dense [B, C] matrix and multiply it by x —
    as costly as the forward. Only B·k entries are non-zero, so W_enc's gradient is built from
    those rows alone (a sparse × dense product)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, W_enc: Tensor, b: Tensor, k: int, pre: Tensor | None = None) -> tuple[Tensor, Tensor]:
        pre = torch.addmm(b, x, W_enc.t()) if pre is None else pre  # (B, C); `pre`: computed already
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
        rows = torch.arange(B, device=idx.device).repeat_interleave(k)
        grad_W, grad_b = _encoder_grads(x, rows, idx.flatten(), g, ctx.n_latents)
        return None, grad_W, grad_b, None, None


def batch_topk_select(pre: Tensor, n_kept: int, n_candidates: int) -> tuple[Tensor, bool]:
    """Flat indices (row-major, ascending) of the n_kept largest entries of pre [B, C], and whether
    the n_candidates-per-row shortcut overflowed (then the full selection ran; ask for more next time).

    The global top-n_kept over B·C is found among each row's top-n_candidates: an entry outside
    its row's candidates lies below all of them, so it can be kept only if every candidate of that
    row is kept. If no row has all its candidates kept, the shortcut's choice is the exact one
    (ties aside, the same values); otherwise it falls back to the top-n_kept of all B·C entries.
    Measured at B = 1024, C = 8192, k·B = 32k, 1 thread: 31 ms (64 per row) vs 104 ms for the full one."""
    B, C = pre.shape
    overflow = n_candidates >= C
    if not overflow:
        cand_vals, cand_idx = pre.topk(n_candidates, dim=-1, sorted=False)  # (B, n_candidates)
        _, j = cand_vals.flatten().topk(n_kept, sorted=False)
        row = j // n_candidates
        overflow = bool(torch.bincount(row, minlength=B).max() >= n_candidates)
        flat = row * C + cand_idx.flatten()[j]
    if overflow:
        flat = pre.flatten().topk(n_kept, sorted=False)[1]
    return flat.sort().values, overflow and n_candidates < C


class _BatchTopKEncode(torch.autograd.Function):
    """(vals, rows, cols): the k·B largest of ReLU(x W_encᵀ + b) over the whole batch, as sparse
    entries sorted by row (`batch_topk_select`), with the sparse backward of `_TopKEncode` (only
    the kept entries carry gradient). `state["candidates"]` (per-row shortcut width) doubles when
    the shortcut overflows."""

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, W_enc: Tensor, b: Tensor, n_kept: int, state: dict[str, int], pre: Tensor | None = None
    ) -> tuple[Tensor, ...]:  # fmt: skip
        pre = torch.addmm(b, x, W_enc.t()) if pre is None else pre  # (B, C); `pre`: computed already
        C = W_enc.shape[0]
        flat_idx, overflow = batch_topk_select(pre, n_kept, state["candidates"])
        if overflow:
            state["candidates"] = min(C, 2 * state["candidates"])
        rows, cols = flat_idx // C, flat_idx % C
        vals = pre.flatten()[flat_idx].relu()
        ctx.save_for_backward(x, rows, cols, vals)
        ctx.n_latents = C
        ctx.mark_non_differentiable(rows, cols)
        return vals, rows, cols

    @staticmethod
    def backward(ctx: Any, g_vals: Tensor, _g_rows: Tensor, _g_cols: Tensor) -> tuple[Tensor | None, ...]:
        x, rows, cols, vals = ctx.saved_tensors
        grad_W, grad_b = _encoder_grads(x, rows, cols, g_vals * (vals > 0), ctx.n_latents)
        return None, grad_W, grad_b, None, None, None


class _Encode(torch.autograd.Function):
    """pre = x W_encᵀ + b from xw = x W_encᵀ already computed without a graph (+ b in place), with
    the linear's backward: the dense step, once the density check on xw said dense."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, W_enc: Tensor, b: Tensor, xw: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        ctx.mark_dirty(xw)
        return xw.add_(b)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:
        (x,) = ctx.saved_tensors
        return None, g.t() @ x.to(g.dtype), g.sum(0), None


class _EncodeAt(torch.autograd.Function):
    """pre at `code`'s entries of pre = x W_encᵀ + b_enc − W_enc b_dec (an SAE; a transcoder: b_dec None),
    from xw = x W_encᵀ already computed (no graph) and b = b_enc − W_enc b_dec, added at the entries
    only; with the sparse backward: ReLU's and JumpReLU's gradients vanish off their firing entries,
    so W_enc's gradient needs only those (`SparseCode.t_mm`), b_dec's term folded in as x − b_dec (no
    [C, d] outer product), b_dec's own gradient −W_encᵀ ∂b_enc."""

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, W_enc: Tensor, b_enc: Tensor, b_dec: Tensor | None, b: Tensor, xw: Tensor,
        code: SparseCode,
    ) -> Tensor:  # fmt: skip
        ctx.save_for_backward(x if b_dec is None else x - b_dec, W_enc)
        ctx.with_b_dec, ctx.code = b_dec is not None, code
        return code.gather(xw) + b.index_select(0, code.cols)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:
        xc, W_enc = ctx.saved_tensors
        code: SparseCode = ctx.code
        g = g.contiguous()  # Gᵀ x latent-major, the decoder's sort reused (sparse_code.py)
        grad_W, grad_b = code.t_mm(g, xc), g.new_zeros(W_enc.shape[0]).index_add_(0, code.cols, g)
        grad_b_dec = -(W_enc.t() @ grad_b) if ctx.with_b_dec else None
        return None, grad_W, grad_b, grad_b_dec, None, None, None


def sparse_decode(base: Tensor, rows: Tensor, cols: Tensor, vals: Tensor, W_dec: Tensor) -> Tensor:
    """base [B, d] + Σ over entries (row, col, val) of val · W_dec[col] added to that row: the
    decoder on a sparse code, O(entries · d) instead of the dense O(B · C · d). `rows` must be
    ascending (entries grouped by row): one fused `embedding_bag` — 17 ms fwd+bwd at 32k entries,
    d = 512, where gathering W_dec[cols] and `index_add` took 187 ms (1 thread)."""
    counts = torch.bincount(rows, minlength=base.shape[0])
    offsets = counts.cumsum(0) - counts
    return base + F.embedding_bag(cols, W_dec, offsets, per_sample_weights=vals, mode="sum")


class _RowNorms(torch.autograd.Function):
    """‖W[c]‖ of each row (the L1 price's decoder norms); backward W[c] · g_c / ‖W[c]‖ in one
    product, where autograd's norm backward divides, multiplies and masks: 14 → 3 ms at 8192 × 512."""

    @staticmethod
    def forward(ctx: Any, W: Tensor) -> Tensor:
        norms = W.norm(dim=1)
        ctx.save_for_backward(W, norms)
        return norms

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> Tensor:
        W, norms = ctx.saved_tensors
        return W * (g / norms.clamp_min(torch.finfo(norms.dtype).tiny)).unsqueeze(1)  # a zero row: 0


def row_norms(W: Tensor) -> Tensor:
    out: Tensor = _RowNorms.apply(W)
    return out


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
        grad_theta = _to_theta(g * -(theta / ctx.eps) * near, theta)
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
        return (kernel if ctx.to_pre else None), _to_theta(-kernel, theta), None, None


def _to_theta(grad: Tensor, theta: Tensor) -> Tensor:
    """θ's gradient: summed over the batch when θ [C] broadcasts over pre [B, C]; as is when θ is
    gathered per entry (the sparse path: θ[cols] beside pre[rows, cols], summed by the gather)."""
    return grad if grad.shape == theta.shape else grad.sum(0)


BAND_SPARSE_BELOW = 0.05
"""`ThetaBand` lists its band-only entries below this fraction of [B, C] (or lists the rest above
1 − it): its CSR products cost the dense one at ≈ 5 % (1 thread; RESULTS.md)."""


def jumprelu_entries(pre: Tensor, theta: Tensor, eps: float, limit: float, block: int) -> Entries | None:
    """JumpReLU's `_gradient_entries`: the entries within or above the band (pre > θ − ε/2, widened
    by 0.1 % of ε against rounding) when at most `limit` are; else the firing ones (pre > θ) and
    the band-only rest as a `ThetaBand` (None if empty); else None (dense)."""
    found = code_entries(pre, theta - 0.5005 * eps, limit, block)  # the band too is sparse: list it
    if found is not None:
        return found[0], None
    found = code_entries(pre, theta, limit, block)
    if found is None:
        return None
    band = ThetaBand(pre, theta, eps, found[1], BAND_SPARSE_BELOW)
    return found[0], band if bool(band.counts.any()) else None


Entries = tuple[SparseCode, "ThetaBand | None"]
"""A sparse code's entries and JumpReLU's band-only entries (`_gradient_entries`)."""


class ThetaBand:
    """JumpReLU's band-only entries M₀ [B, C]: within the kernel's ε/2 of θ but not firing
    (θ − ε/2 < pre ≤ θ, the very comparisons `_JumpReLU` and `_Step` make). There z = 0 and z's
    own gradient is 0, yet θ (and, with `to_pre`, the encoder) gets a pseudo-gradient. At d = 512
    almost every entry is in the band, so listing them (the sparse path) costs the dense step;
    their gradients need only Mᵀ G products, `t_mm`, which `kind` makes cheap at either extreme:
    `sparse` (few band entries: a sparse product over them), `complement` (almost all: Σ_b G minus a
    sparse product over the rest), `dense` (between: one [C, B] × [B, m] product)."""

    def __init__(
        self, pre: Tensor, theta: Tensor, eps: float, fire: Tensor, sparse_below: float, kind: str | None = None
    ) -> None:  # fmt: skip
        # `_JumpReLU`'s |pre − θ| < ε/2 and not pre > θ (`fire`), in two passes: for d = fl(pre − θ) ≤ 0,
        # |d| < ε/2 ⟺ d > −ε/2 exactly, and every firing entry has d > 0, so XOR removes just those
        mask = ((pre - theta) > -eps / 2) ^ fire
        self.shape, self.eps = mask.shape, eps
        n = int(torch.count_nonzero(mask))
        self.kind = kind or (
            "sparse" if n <= sparse_below * mask.numel() else "complement" if n >= (1 - sparse_below) * mask.numel()
            else "dense"
        )  # fmt: skip
        C = self.shape[1]
        if self.kind == "dense":
            self.dense = mask.to(pre.dtype)
            self.counts = self.dense.sum(0, dtype=theta.dtype)  # n₀_c: band-only entries of latent c
        else:
            self.rows, self.cols = (mask if self.kind == "sparse" else ~mask).nonzero().unbind(1)
            k = torch.bincount(self.cols, minlength=C).to(theta.dtype)
            self.counts = k if self.kind == "sparse" else self.shape[0] - k

    def t_mm(self, G: Tensor) -> Tensor:
        """M₀ᵀ G [C, m] for G [B, m]."""
        if self.kind == "dense":
            return self.dense.to(G.dtype).t() @ G
        ones = torch.ones(self.rows.shape[0], dtype=G.dtype, device=G.device)
        part = _encoder_grads(G, self.rows, self.cols, ones, self.shape[1])[0]
        return part if self.kind == "sparse" else G.sum(0).expand(self.shape[1], -1) - part


class _BandDecoderTap(torch.autograd.Function):
    """ŷ as is; backward adds θ's kernel pseudo-gradient of the band-only entries through the
    decoder: Σ_b M₀[b,c] ∂ŷ_b·W_dec[c] · (−θ_c/ε) = −(θ_c/ε) W_dec[c]·(M₀ᵀ ∂ŷ)[c] — one M₀ᵀ product
    where `_JumpReLU` on those entries would need ∂z at each of them."""

    @staticmethod
    def forward(ctx: Any, y_hat: Tensor, theta: Tensor, W_dec: Tensor, band: ThetaBand) -> Tensor:
        ctx.save_for_backward(theta, W_dec)
        ctx.band = band
        return y_hat.clone()

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:
        theta, W_dec = ctx.saved_tensors
        P = ctx.band.t_mm(g.contiguous())  # (C, d_out)
        return g, -(theta / ctx.band.eps) * (W_dec * P).sum(1), None, None


class _BandPrice(torch.autograd.Function):
    """0, whose backward adds the sparsity price's pseudo-gradients at the band-only entries.

    L1 phase (`l1_price` λ set): ∂L/∂z = λ‖W_dec[c]‖/B there, so θ_c gets −(θ_c/ε)·λ‖W_dec[c]‖·n₀_c/B.
    L0 phase (λ None; `cfg`: JumpReLUOptions): the step's kernel gives θ_c −l0_coef·n₀_c/(Bε) and, with
    `l0_grad_to_encoder`, each band-only pre-activation +l0_coef/(Bε): W_enc's gradient
    l0_coef/(Bε)·M₀ᵀx, the bias's that × n₀."""

    @staticmethod
    def forward(
        ctx: Any, theta: Tensor, W_enc: Tensor, bias: Tensor, x: Tensor, W_dec: Tensor, band: ThetaBand,
        l1_price: float | None, cfg: Any,
    ) -> Tensor:  # fmt: skip
        ctx.save_for_backward(theta, x, W_dec)
        ctx.band, ctx.l1_price, ctx.l0_coef, ctx.to_pre = band, l1_price, cfg.l0_coef, cfg.l0_grad_to_encoder
        return theta.new_zeros(())

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:
        theta, x, W_dec = ctx.saved_tensors
        band: ThetaBand = ctx.band
        B, eps, n0 = band.shape[0], band.eps, band.counts
        grad_theta = torch.zeros_like(theta)
        grad_W = grad_b = None
        if ctx.l1_price is not None:
            grad_theta = grad_theta - (theta / eps) * (g * ctx.l1_price / B) * W_dec.norm(dim=1) * n0
        else:
            k = g * ctx.l0_coef / (B * eps)
            grad_theta = grad_theta - k * n0
            if ctx.to_pre:
                grad_W, grad_b = k * band.t_mm(x), k * n0
        return grad_theta, grad_W, grad_b, None, None, None, None, None
