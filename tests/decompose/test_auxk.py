"""AuxK's sparse form (a wide dictionary with many dead latents) is the dense form's loss and gradients."""

from __future__ import annotations

import pytest
import torch

from mechscope.decompose import auxk, dictionary
from mechscope.decompose.auxk import dense_aux_loss, sparse_aux_loss, uses_sparse_aux
from mechscope.decompose.dictionary import BatchTopKOptions, SparseCoder, TopKOptions
from mechscope.decompose.sae_matryoshka import MatryoshkaCoder


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def grads_of(loss: torch.Tensor, c: SparseCoder) -> list[torch.Tensor]:
    params = [c.W_enc, c.b_enc, c.W_dec] + ([c.b_dec] if c.sae else [])
    return list(torch.autograd.grad(loss, params, allow_unused=False))


@pytest.mark.parametrize("sae", [True, False])
@pytest.mark.parametrize("b_enc_shift", [0.0, -0.3, -50.0])  # every entry live; some ≤ 0 (dropped); none (empty)
def test_sparse_aux_loss_equals_the_dense_one(sae: bool, b_enc_shift: float) -> None:
    d_in, d_out, C, B, k_aux = 24, 16 if not sae else 24, 1024, 48, 12
    c = SparseCoder(d_in, d_out, C, "topk", 4, sae, gen(0))
    with torch.no_grad():
        c.b_dec.normal_(generator=gen(1))
        c.b_enc.normal_(0.0, 0.1, generator=gen(2)).add_(b_enc_shift)
    x, residual = torch.randn(B, d_in, generator=gen(3)), torch.randn(B, d_out, generator=gen(4))
    dead = torch.rand(C, generator=gen(5)) < 0.6
    dense = dense_aux_loss(x, c.W_enc, c._enc_bias(), c.W_dec, residual, dead, k_aux)
    pre = c._kept_pre_acts(x, c._enc_bias())
    assert pre is not None and not pre.requires_grad
    sparse = sparse_aux_loss(x, c.W_enc, c.b_enc, c.b_dec if sae else None, c.W_dec, residual, dead, k_aux, pre)
    torch.testing.assert_close(sparse, dense)
    for g_sparse, g_dense in zip(grads_of(sparse, c), grads_of(dense, c), strict=True):
        torch.testing.assert_close(g_sparse, g_dense, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("activation", ["topk", "batchtopk", "matryoshka"])
def test_a_wide_step_takes_the_sparse_aux_and_keeps_its_gradients(activation: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through `train_step`: 1,500 of 2,048 latents dead, k_aux 8 — the sparse form; the same step
    with the sparse form switched off gives the same loss and gradients."""
    d, C, B = 16, 2048, 64
    cfg = TopKOptions(k=4) if activation == "topk" else BatchTopKOptions(k=4)
    dead = torch.zeros(C, dtype=torch.bool)
    dead[torch.randperm(C, generator=gen(6))[:1500]] = True
    assert uses_sparse_aux(torch.zeros(1, 1), 1500, d // 2)
    x = torch.randn(B, d, generator=gen(7))

    def step() -> tuple[torch.Tensor, list[torch.Tensor]]:
        if activation == "matryoshka":
            c: SparseCoder = MatryoshkaCoder(d, d, C, "batchtopk", 4, True, gen(0), levels=3)
        else:
            c = SparseCoder(d, d, C, activation, 4, True, gen(0))  # type: ignore[arg-type]
        c.per_row = False
        out = c.train_step(x, x, cfg, dead)
        return out.loss.detach(), grads_of(out.loss, c)

    calls: list[int] = []

    def counted(*args: object) -> torch.Tensor:
        calls.append(1)
        return sparse_aux_loss(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(dictionary, "sparse_aux_loss", counted)
    loss_sparse, grads_sparse = step()
    monkeypatch.setattr(auxk, "AUX_SPARSE_MIN_DEAD", 10**9)
    loss_dense, grads_dense = step()
    assert calls == [1], "the wide step should have taken the sparse AuxK once, the reference none"
    torch.testing.assert_close(loss_sparse, loss_dense)
    for g_sparse, g_dense in zip(grads_sparse, grads_dense, strict=True):
        torch.testing.assert_close(g_sparse, g_dense, rtol=1e-5, atol=1e-6)


def test_a_toy_keeps_the_dense_aux() -> None:
    """A 10-d toy (k_aux 5 of at most tens of dead latents) and a wide site with few dead stay dense."""
    pre = torch.zeros(1, 1)
    assert not uses_sparse_aux(pre, 60, 5)
    assert not uses_sparse_aux(pre, 1_500, 256)
    assert uses_sparse_aux(pre, 6_000, 256)
    assert not uses_sparse_aux(None, 6_000, 256)
