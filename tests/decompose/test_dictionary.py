"""The shared sparse coder: each activation's rule, its gradients, scale folding and the buffer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mechscope.config import ConfigError
from mechscope.decompose.activation_buffer import ActivationBuffer, geometric_median, tensor_source
from mechscope.decompose.dictionary import (
    BatchTopKOptions,
    JumpReLUOptions,
    ReLUOptions,
    SparseCoder,
    TopKOptions,
    lr_lambda,
    train_coder,
)
from mechscope.decompose.dictionary_kernels import _TopKEncode
from mechscope.decompose.dictionary_sizing import blind_k, oracle_sizes


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def coder(activation: str, k: float | None = None, C: int = 32, d: int = 8) -> SparseCoder:
    c = SparseCoder(d, d, C, activation, k, sae=True, generator=gen())  # type: ignore[arg-type]
    with torch.no_grad():
        c.b_enc.fill_(5.0)  # every pre-activation positive: the sparsity rule alone decides
    return c


def test_topk_keeps_exactly_k() -> None:
    c = coder("topk", k=3)
    x = torch.randn(16, 8, generator=gen(1))
    z = c.encode(x)
    assert ((z > 0).sum(-1) == 3).all()
    out = c.train_step(x, x, TopKOptions(k=3), torch.zeros(32, dtype=torch.bool))
    assert out.l0 == 3.0


def test_topk_sparse_backward_matches_dense_autograd() -> None:
    x = torch.randn(10, 6, generator=gen(2), dtype=torch.float64)
    W = torch.randn(20, 6, generator=gen(3), dtype=torch.float64, requires_grad=True)
    b = torch.randn(20, generator=gen(4), dtype=torch.float64, requires_grad=True)
    vals, idx = _TopKEncode.apply(x, W, b, 4)
    g = torch.randn_like(vals)
    (vals * g).sum().backward()
    gW, gb = W.grad.clone(), b.grad.clone()  # type: ignore[union-attr]
    W.grad = b.grad = None
    pre = F.linear(x, W, b)
    dense = torch.zeros_like(pre).scatter(-1, idx, pre.gather(-1, idx).relu())
    (dense.gather(-1, idx) * g).sum().backward()
    assert torch.allclose(gW, W.grad) and torch.allclose(gb, b.grad)  # type: ignore[arg-type]


def test_batchtopk_keeps_k_times_batch_and_learns_a_threshold() -> None:
    c = coder("batchtopk", k=2)
    x = torch.randn(16, 8, generator=gen(5))
    out = c.train_step(x, x, BatchTopKOptions(k=2), torch.zeros(32, dtype=torch.bool))
    assert out.l0 * 16 == 2 * 16  # k·B latents over the batch
    assert float(c.batch_threshold) > 0
    z = c.encode(x)  # inference: the threshold, not the batch, decides
    assert torch.equal(z > 0, c.pre_acts(x) > c.batch_threshold)


@pytest.mark.parametrize("levels", [0, 3])  # plain BatchTopK, and Matryoshka's nested prefixes
def test_sparse_batchtopk_step_matches_the_dense_definition(levels: int) -> None:
    """The sparse-entry BatchTopK step (and Matryoshka's on top of it) equals the dense definition
    z = keep the k·B largest ReLU(pre) of the batch, ĥ = z W_dec + b_dec: loss and every gradient."""
    from mechscope.decompose.sae_matryoshka import MatryoshkaCoder

    c: SparseCoder = (MatryoshkaCoder(8, 8, 32, "batchtopk", 3, True, gen(), levels=levels) if levels
                      else SparseCoder(8, 8, 32, "batchtopk", 3, True, gen()))  # fmt: skip
    with torch.no_grad():
        c.b_enc.copy_(0.3 * torch.randn(32, generator=gen(2)))
        c.b_dec.copy_(0.1 * torch.randn(8, generator=gen(3)))
    x = torch.randn(16, 8, generator=gen(5))
    cfg = BatchTopKOptions(k=3, aux_coef=0)
    params = [c.W_enc, c.b_enc, c.W_dec, c.b_dec]
    loss = c.train_step(x, x, cfg, torch.zeros(32, dtype=torch.bool)).loss
    grads = torch.autograd.grad(loss, params)
    flat = c.pre_acts(x).relu().flatten()
    vals, idx = flat.topk(3 * 16)
    z = torch.zeros_like(flat).scatter(0, idx, vals).view(16, 32)
    widths = getattr(c, "widths", [32])
    ref = sum(((z[:, :w] @ c.W_dec[:w] + c.b_dec - x).pow(2).sum(-1).mean() for w in widths), x.new_zeros(()))
    torch.testing.assert_close(loss, ref)
    for g, g_ref in zip(grads, torch.autograd.grad(ref, params), strict=True):
        torch.testing.assert_close(g, g_ref)


def test_jumprelu_threshold_gradient_is_nonzero() -> None:
    c = SparseCoder(8, 8, 32, "jumprelu", sae=True, generator=gen())
    x = torch.randn(64, 8, generator=gen(6))
    with torch.no_grad():
        c.log_threshold.copy_(c.pre_acts(x).median(0).values.clamp_min(1e-3).log())  # many pre-acts near θ
    cfg = JumpReLUOptions(bandwidth=0.5)
    c.train_step(x, x, cfg, torch.zeros(32, dtype=torch.bool)).loss.backward()
    assert c.log_threshold.grad is not None and float(c.log_threshold.grad.abs().sum()) > 0
    z = c.encode(x)
    assert torch.equal(z > 0, c.pre_acts(x) > c.threshold)


def test_relu_l1_weighted_by_decoder_norm() -> None:
    c = coder("relu")
    x = torch.randn(4, 8, generator=gen(7))
    base = c.train_step(x, x, ReLUOptions(l1_coef=0.0), torch.zeros(32, dtype=torch.bool)).loss
    pen = c.train_step(x, x, ReLUOptions(l1_coef=1.0), torch.zeros(32, dtype=torch.bool)).loss
    z = c.encode(x)
    assert torch.allclose(pen - base, (z * c.W_dec.norm(dim=1)).sum(-1).mean())


def test_auxk_revives_dead_latents() -> None:
    c = coder("topk", k=2)
    x = torch.randn(32, 8, generator=gen(8))
    dead = torch.zeros(32, dtype=torch.bool)
    dead[:10] = True
    c.train_step(x, x, TopKOptions(k=2, aux_coef=1.0), dead).loss.backward()
    assert c.W_dec.grad is not None and float(c.W_dec.grad[:10].abs().sum()) > 0


@pytest.mark.parametrize("n_dead", [10, 30])  # the gathered (few dead) and the masked (most dead) paths
def test_auxk_loss_and_gradients_match_the_sparse_reference(n_dead: int) -> None:
    """AuxK: the top-k_aux dead latents' ReLU pre-activations reconstruct the residual — the dense
    product must equal the per-row sum over the chosen latents (the embedding_bag it replaced)."""
    c = coder("topk", k=2)
    with torch.no_grad():
        c.b_enc.copy_(torch.randn(32, generator=gen(3)))
    x, r = torch.randn(16, 8, generator=gen(8)), torch.randn(16, 8, generator=gen(9))
    dead = torch.zeros(32, dtype=torch.bool)
    dead[torch.randperm(32, generator=gen(4))[:n_dead]] = True
    cfg = TopKOptions(k=2, k_aux=6)
    loss = c._aux_loss(x, r, dead, cfg)
    grads = torch.autograd.grad(loss, [c.W_enc, c.W_dec, c.b_enc])
    idx = dead.nonzero().squeeze(1)
    pre = F.linear(x, c.W_enc[idx], c._enc_bias()[idx])
    vals, top = pre.relu().topk(6, dim=-1)
    ref = (F.embedding_bag(top, c.W_dec[idx], per_sample_weights=vals, mode="sum") - r).pow(2).sum(-1).mean()
    ref_grads = torch.autograd.grad(ref, [c.W_enc, c.W_dec, c.b_enc])
    torch.testing.assert_close(loss, ref)
    for g, g_ref in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, g_ref)


def test_errors_k_too_large_and_wrong_shape() -> None:
    with pytest.raises(ConfigError, match="k=40"):
        SparseCoder(8, 8, 32, "topk", k=40)
    with pytest.raises(ConfigError, match="k=9 is larger than the dictionary"):
        oracle_sizes(TopKOptions(k=9, n_latents=8), 4, torch.ones(10))
    with pytest.raises(ConfigError, match="unknown activation"):
        SparseCoder(8, 8, 32, "gelu")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"shape \(4, 7\); the dictionary expects \[batch, 8\]"):
        coder("topk", k=2).encode(torch.randn(4, 7))


def test_oracle_sizes_from_the_task() -> None:
    counts = torch.tensor([0, 1, 1, 2, 2, 2, 3, 3, 4, 4])
    assert oracle_sizes(TopKOptions(), 40, counts) == (80, 2)  # mean 2.2, rounded
    assert oracle_sizes(TopKOptions(), 40, torch.zeros(5)) == (80, 1)  # at least 1
    # BatchTopK's k is a batch mean: below 1 it stays fractional (2 significant digits)
    assert oracle_sizes(BatchTopKOptions(), 40, torch.tensor([0, 0, 0, 1, 0, 0, 1.0])) == (80, 0.29)
    assert oracle_sizes(BatchTopKOptions(), 40, counts) == (80, 2)
    assert oracle_sizes(ReLUOptions(n_latents=10), 40, counts) == (10, None)


def test_blind_k_is_whole_for_topk_and_fractional_below_one_for_batchtopk() -> None:
    assert blind_k(2.79, 10, fractional=False) == 2 and blind_k(2.79, 10, fractional=True) == 2
    assert blind_k(0.58, 2, fractional=False) == 1
    assert blind_k(0.58, 2, fractional=True) == 0.58
    assert blind_k(40.0, 10, fractional=True) == 5  # at most half the width


def test_a_fractional_batchtopk_k_keeps_k_times_batch_entries() -> None:
    c = coder("batchtopk", k=0.25)
    vals, rows, cols = c.batchtopk_entries(torch.randn(64, 8), BatchTopKOptions(k=0.25))
    assert vals.shape == (16,) and rows.shape == cols.shape == (16,)
    c.per_row = True  # the per-row warm-up keeps ⌊k⌋, at least one per row
    assert c.batchtopk_entries(torch.randn(64, 8), BatchTopKOptions(k=0.25))[0].shape == (64,)
    with pytest.raises(ConfigError, match=r"k=0\.5 must be a whole number"):
        SparseCoder(8, 8, 32, "topk", k=0.5)


def test_fold_scales_gives_the_same_function_on_raw_activations() -> None:
    for act, k in (("topk", 2), ("jumprelu", None), ("batchtopk", 2)):
        c = SparseCoder(6, 5, 12, act, k, sae=False, generator=gen())  # type: ignore[arg-type]
        with torch.no_grad():
            c.b_enc.normal_(generator=gen(9))
            c.batch_threshold.fill_(0.3)
        x = torch.randn(7, 6, generator=gen(10)) * 4.0
        s_in, s_out = 4.0, 0.5
        want_z, want_y = c.encode(x / s_in) * s_out, c(x / s_in) * s_out
        c.fold_scales(s_in, s_out)
        assert torch.allclose(c.encode(x), want_z, atol=1e-5) and torch.allclose(c(x), want_y, atol=1e-5)


def test_buffer_serves_shuffled_batches_and_refills() -> None:
    data = torch.arange(100.0).unsqueeze(1)
    buf = ActivationBuffer(tensor_source(data), size=20, batch=5, generator=gen())
    seen = torch.cat([buf.next()[0] for _ in range(8)]).flatten()
    assert seen.unique().numel() > 20  # fresh rows came in after the first half was served
    first = seen[:10]
    assert not torch.equal(first, first.sort().values)  # shuffled
    with pytest.raises(ValueError, match="at least twice"):
        ActivationBuffer(tensor_source(data), size=8, batch=5, generator=gen())


def test_geometric_median_ignores_outliers() -> None:
    pts = torch.cat([torch.zeros(50, 3), torch.full((10, 3), 100.0)])
    assert float(geometric_median(pts).norm()) < 1e-2
    assert float(pts.mean(0).norm()) > 10


def test_lr_schedule_warms_up_and_decays() -> None:
    f = lr_lambda(100, 0.1, 0.2)
    assert f(0) == pytest.approx(0.1) and f(50) == 1.0 and f(90) == pytest.approx(0.5) and f(99) < 0.1


def test_train_coder_recovers_a_planted_dictionary() -> None:
    torch.manual_seed(0)
    d, n = 16, 24
    D = F.normalize(torch.randn(n, d, generator=gen(11)), dim=1)
    on = torch.rand(20_000, n, generator=gen(12)) < 0.08
    x = (on * torch.rand(20_000, n, generator=gen(13))) @ D
    cfg = TopKOptions(steps=400, batch_size=128, buffer_size=2048, lr=5e-3)
    c = train_coder(tensor_source(x), cfg, 48, 4, True, gen(14))
    cos = (F.normalize(c.W_dec.detach(), dim=1) @ D.T).abs().max(0).values
    assert float(cos.mean()) > 0.9
