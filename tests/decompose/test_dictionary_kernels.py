"""The fast paths of the sparse coder compute the slow paths' losses and gradients.

ReLU / JumpReLU: the sparse-entry step (below `SPARSE_BELOW` density) against the dense step, in both
JumpReLU phases; BatchTopK: the per-row-candidate selection against the full top-k·B, including a
batch where one row overflows its candidates."""

from __future__ import annotations

from functools import partial

import pytest
import torch

import mechscope.decompose.dictionary as dictionary
import mechscope.decompose.dictionary_kernels as kernels
import mechscope.decompose.sparse_code as sparse_code
from mechscope.decompose.dictionary import JumpReLUOptions, ReLUOptions, SparseCoder
from mechscope.decompose.dictionary_kernels import ThetaBand, batch_topk_select, sparse_decode
from mechscope.decompose.sparse_code import SparseCode, code_decode


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _step(c: SparseCoder, x: torch.Tensor, cfg: ReLUOptions | JumpReLUOptions, sparse_below: float,
          monkeypatch: pytest.MonkeyPatch) -> tuple[torch.Tensor, float, torch.Tensor, list[torch.Tensor]]:  # fmt: skip
    monkeypatch.setattr(dictionary, "SPARSE_BELOW", sparse_below)
    params = [c.W_enc, c.b_enc, c.W_dec, c.b_dec] + ([c.log_threshold] if c.activation == "jumprelu" else [])
    out = c.train_step(x, x, cfg, torch.zeros(c.n_latents, dtype=torch.bool))
    return out.loss, out.l0, out.fired, list(torch.autograd.grad(out.loss, params))


class _Spy:
    """Stands in for an autograd Function and records that it was applied."""

    def __init__(self, fn: type, seen: list[object]) -> None:
        self.fn, self.seen = fn, seen

    def apply(self, *args: object) -> torch.Tensor:
        self.seen.append(args)
        return self.fn.apply(*args)  # type: ignore[attr-defined,no-any-return]


@pytest.mark.parametrize(
    ("activation", "l1_phase", "bias", "band_kind", "sae"),
    [("relu", False, -0.8, None, True), ("relu", False, 0.5, None, True), ("relu", False, -0.8, None, False),
     ("jumprelu", False, -0.3, "dense", False)]
    + [("jumprelu", l1, b, kind, True) for l1, b in ((True, -0.3), (False, -0.3), (False, 0.5), (True, 0.5))
       for kind in (None, "sparse", "complement", "dense")],
)  # fmt: skip
@pytest.mark.parametrize("block", [64, 20])
def test_sparse_step_equals_the_dense_step(
    activation: str, l1_phase: bool, bias: float, band_kind: str | None, sae: bool, block: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Forced sparse (threshold 1) and forced dense (threshold 0): the same loss, L0, fired set and
    gradient of every parameter (θ included), on a sparse code (bias −0.8 / −0.3) and a dense one.
    JumpReLU: the band listed with the firing entries (`band_kind` None), or its band-only entries
    (θ's pseudo-gradient) through each of `ThetaBand`'s products — forced by a sparsity limit
    between the firing and the firing-or-band densities. `sae` False: a transcoder (no b_dec in the encoder).
    `block`: latents per decoder block (`sparse_code.py`) — one block, or three and a partial one."""
    monkeypatch.setattr(sparse_code, "DECODER_BLOCK_BYTES", block * 12 * 8)  # d_out 12, float64
    c = SparseCoder(12, 12, 64, activation, sae=sae, generator=gen(0)).double()  # type: ignore[arg-type]
    with torch.no_grad():
        c.b_enc.copy_(bias + 0.3 * torch.randn(64, generator=gen(1), dtype=torch.float64))
        c.b_dec.copy_(0.1 * torch.randn(12, generator=gen(2), dtype=torch.float64))
        c.W_dec.mul_(1 + torch.rand(64, 1, generator=gen(3), dtype=torch.float64))  # free norms: L1 weights them
        c.log_threshold.copy_((0.2 + 0.2 * torch.rand(64, generator=gen(4), dtype=torch.float64)).log())
    c.l1_phase = l1_phase
    x = torch.randn(40, 12, generator=gen(5), dtype=torch.float64) / 12**0.5
    cfg = ReLUOptions(l1_coef=1.2) if activation == "relu" else JumpReLUOptions(bandwidth=0.2, warmup_l1_coef=1.2)
    pre = c.pre_acts(x)
    limit = 1.0
    if band_kind is not None:
        monkeypatch.setattr(kernels, "ThetaBand", partial(ThetaBand, kind=band_kind))
        th = c.log_threshold.exp()
        fire, wide = float((pre > th).double().mean()), float((pre > th - 0.5005 * 0.2).double().mean())
        assert fire < wide
        limit = (fire + wide) / 2
    dense = _step(c, x, cfg, 0.0, monkeypatch)
    seen: list[object] = []
    monkeypatch.setattr(dictionary, "_BandPrice", _Spy(dictionary._BandPrice, seen))
    sparse = _step(c, x, cfg, limit, monkeypatch)
    assert len(seen) == (band_kind is not None)  # the band path ran exactly when forced
    on = pre > (0 if activation == "relu" else c.log_threshold.exp())
    assert 0 < float(on.double().mean()) < 0.9  # a real mixture of on and off entries
    torch.testing.assert_close(sparse[0], dense[0])
    assert sparse[1] == pytest.approx(dense[1]) and torch.equal(sparse[2], dense[2])
    for g_sparse, g_dense in zip(sparse[3], dense[3], strict=True):
        torch.testing.assert_close(g_sparse, g_dense)
    if activation == "jumprelu":  # the θ band reached entries that do not fire
        assert float(dense[3][-1].abs().sum()) > 0
        th = c.log_threshold.exp()
        assert bool((((pre - th).abs() < 0.1) & (pre <= th)).any())


@pytest.mark.parametrize("kind", ["sparse", "complement", "dense"])
def test_theta_band_product_is_the_masked_product(kind: str) -> None:
    pre = torch.randn(30, 50, generator=gen(10), dtype=torch.float64)
    theta = 0.3 * torch.rand(50, generator=gen(11), dtype=torch.float64)
    band = ThetaBand(pre, theta, 0.8, pre > theta, 0.05, kind)
    mask = ((pre - theta).abs() < 0.4) & (pre <= theta)
    assert 0 < int(mask.sum()) < mask.numel() and band.kind == kind
    G = torch.randn(30, 7, generator=gen(12), dtype=torch.float64)
    torch.testing.assert_close(band.t_mm(G), mask.double().t() @ G)
    torch.testing.assert_close(band.counts, mask.double().sum(0))
    assert ThetaBand(pre, theta, 0.8, pre > theta, 0.05).kind == "dense"  # ~15 % of entries: neither extreme


def test_density_picks_the_path(monkeypatch: pytest.MonkeyPatch) -> None:
    c = SparseCoder(8, 8, 32, "relu", sae=True, generator=gen(0))
    pre = torch.randn(16, 32, generator=gen(1))
    assert c._gradient_entries(pre, ReLUOptions()) is None  # half the entries on: dense
    code, _ = c._gradient_entries(pre - 2.5, ReLUOptions())  # type: ignore[misc]  # ~0.6 % on: sparse
    assert torch.equal(torch.stack([code.rows, code.cols], 1), (pre > 2.5).nonzero())  # one block: row-major


@pytest.mark.parametrize("candidates", [3, 8, 200])
def test_batch_topk_select_is_the_full_selection(candidates: int) -> None:
    """Row 0 holds far more than its share of the batch's largest values: with few candidates it
    overflows (exact fallback, asks for more), with enough it does not; the kept values are always
    the k·B largest."""
    pre = torch.randn(16, 200, generator=gen(6))
    pre[0] += 3.0
    flat, overflow = batch_topk_select(pre, 3 * 16, candidates)
    assert torch.equal(flat, flat.sort().values)
    torch.testing.assert_close(pre.flatten()[flat].sort().values, pre.flatten().topk(48).values.sort().values)
    assert overflow == (candidates < int((pre.flatten() >= pre.flatten().topk(48).values[-1]).view(16, 200)[0].sum()) + 1)
    assert not batch_topk_select(pre, 48, 200)[1]


def test_batchtopk_coder_raises_its_candidates_on_overflow() -> None:
    c = SparseCoder(8, 8, 64, "batchtopk", 2, sae=True, generator=gen(0))
    with torch.no_grad():
        c.b_enc.copy_(torch.randn(64, generator=gen(1)))
    x = torch.randn(16, 8, generator=gen(2))
    x[0] *= 20  # one row holds most of the batch's largest pre-activations
    from mechscope.decompose.dictionary import BatchTopKOptions

    vals, _, _ = c.batchtopk_entries(x, BatchTopKOptions(k=2))
    assert c.batch_select["candidates"] > 4 and vals.numel() == 32
    ref = c.pre_acts(x).flatten().topk(32).values.relu().sort().values
    torch.testing.assert_close(vals.detach().sort().values, ref)


def test_sparse_decode_equals_the_dense_product() -> None:
    W = torch.randn(10, 4, generator=gen(7))
    z = torch.randn(6, 10, generator=gen(8)) * (torch.rand(6, 10, generator=gen(9)) < 0.3)
    z[2] = 0  # an empty row
    rows, cols = z.nonzero().unbind(1)
    out = sparse_decode(torch.ones(6, 4), rows, cols, z[rows, cols], W)
    torch.testing.assert_close(out, z @ W + 1)


@pytest.mark.parametrize("block", [3, 4, 10])
def test_blockwise_decode_equals_the_dense_product(block: int) -> None:
    """ŷ = base + Z W_dec and its gradients (∂base, ∂z at the entries, ∂W_dec) from the block-major
    entries, against autograd through the dense product: blocks that divide C, one that leaves a
    partial block, one block; an empty row and an empty block of latents."""
    W = torch.randn(10, 4, generator=gen(7), dtype=torch.float64, requires_grad=True)
    z = torch.randn(6, 10, generator=gen(8), dtype=torch.float64) * (torch.rand(6, 10, generator=gen(9)) < 0.4)
    z[2], z[:, 4:6] = 0, 0  # an empty row; with block 4, latents 4–5 of the second block never fire
    code = SparseCode(z != 0, block)
    assert len(code) == int((z != 0).sum()) and torch.equal(code.latent_major()[1][-1], torch.tensor(len(code)))
    assert sorted(zip(code.rows.tolist(), code.cols.tolist(), strict=True)) == [tuple(e) for e in (z != 0).nonzero().tolist()]
    vals = z[code.rows, code.cols].clone().requires_grad_(True)
    base = torch.randn(4, generator=gen(10), dtype=torch.float64, requires_grad=True)
    out = code_decode(base.expand(6, -1), vals, W, code)
    G = torch.randn(6, 4, generator=gen(11), dtype=torch.float64)
    grads = torch.autograd.grad((out * G).sum(), [base, vals, W])
    z_dense = z.clone().requires_grad_(True)
    ref = z_dense @ W + base
    torch.testing.assert_close(out, ref)
    ref_grads = torch.autograd.grad((ref * G).sum(), [base, z_dense, W])
    torch.testing.assert_close(grads[0], ref_grads[0])
    torch.testing.assert_close(grads[1], ref_grads[1][code.rows, code.cols])
    torch.testing.assert_close(grads[2], ref_grads[2])


def test_blockwise_decode_of_an_empty_code() -> None:
    """No entry fires: ŷ is the base, ∂W_dec is 0 (not the uninitialised output buffer), ∂z empty."""
    code = SparseCode(torch.zeros(6, 10, dtype=torch.bool), 4)
    W = torch.randn(10, 4, generator=gen(12), requires_grad=True)
    vals = torch.zeros(0, requires_grad=True)
    base = torch.randn(4, generator=gen(13), requires_grad=True)
    out = code_decode(base.expand(6, -1), vals, W, code)
    g_base, g_vals, g_W = torch.autograd.grad(out.sum(), [base, vals, W])
    torch.testing.assert_close(out, base.expand(6, -1))
    assert torch.equal(g_W, torch.zeros_like(W)) and g_vals.shape == (0,) and torch.equal(g_base, torch.full((4,), 6.0))
    assert torch.equal(code.t_mm(torch.zeros(0), torch.full((6, 3), float("nan"))), torch.zeros(10, 3))
