"""The trainer rules that converge every SAE variant on stress-iid (helper sae13): sae-relu's small
initial dictionary and width-scaled lr, BatchTopK's per-row TopK warm-up, JumpReLU's L1 warm-up and
its exact fold to a unit-norm decoder. The slow test scores the variants on stress-iid at the stress
budget with the project's scorer."""

from __future__ import annotations

import math

import pytest
import torch

from mechscope.decompose import FitContext, get_method
from mechscope.decompose.activation_buffer import tensor_source
from mechscope.decompose.dictionary import (
    BatchTopKOptions,
    JumpReLUOptions,
    ReLUOptions,
    SparseCoder,
    TopKOptions,
    resolved_lr,
    train_coder,
)
from mechscope.decompose.sae import SAEJumpReLUConfig


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def sparse_data(n: int = 4_096, d: int = 8, features: int = 16) -> torch.Tensor:
    D = torch.nn.functional.normalize(torch.randn(features, d, generator=gen(1)), dim=1)
    on = torch.rand(n, features, generator=gen(2)) < 0.1
    return (on * torch.rand(n, features, generator=gen(3))) @ D


def test_lr_scales_with_the_input_width() -> None:
    cfg = ReLUOptions(lr_reference_dim=10)
    assert resolved_lr(cfg, 10) == cfg.lr and resolved_lr(cfg, 4) == cfg.lr  # capped at lr
    assert resolved_lr(cfg, 1_000) == pytest.approx(cfg.lr * math.sqrt(10 / 1_000))
    assert resolved_lr(ReLUOptions(), 90) == cfg.lr  # sae-relu's own reference width: 90
    assert resolved_lr(TopKOptions(), 1_000) == TopKOptions().lr  # no reference width: as set


def test_relu_starts_small() -> None:
    # one step at a negligible rate: the trained rows are the initial ones (an SAE's scales cancel)
    cfg = ReLUOptions(steps=1, batch_size=64, buffer_size=256, lr=1e-12)
    c = train_coder(tensor_source(sparse_data()), cfg, 24, None, True, gen(4))
    assert torch.allclose(c.W_enc.norm(dim=1), torch.full((24,), 0.1), atol=1e-6)
    assert torch.allclose(c.W_dec.norm(dim=1), torch.full((24,), 0.1), atol=1e-6)
    assert torch.allclose(c.W_enc, c.W_dec, atol=1e-6)  # W_enc = W_decᵀ at initialisation


def test_fold_decoder_norms_keeps_the_function() -> None:
    c = SparseCoder(8, 8, 32, "jumprelu", sae=True, generator=gen())
    with torch.no_grad():
        c.W_dec.mul_(torch.rand(32, 1, generator=gen(5)) * 3 + 0.1)
        c.log_threshold.fill_(math.log(0.05))
    x = sparse_data(64)
    before = (c.encode(x) @ c.W_dec).detach(), c(x).detach()
    c.fold_decoder_norms()
    assert torch.allclose(c.W_dec.norm(dim=1), torch.ones(32), atol=1e-6)
    assert torch.allclose(c.encode(x) @ c.W_dec, before[0], atol=1e-5)
    assert torch.allclose(c(x), before[1], atol=1e-5)


def test_batchtopk_warms_up_per_row_then_competes_over_the_batch() -> None:
    c = SparseCoder(8, 8, 32, "batchtopk", k=2, sae=True, generator=gen())
    with torch.no_grad():
        c.b_enc.fill_(5.0)
    x = torch.randn(16, 8, generator=gen(6))
    cfg = BatchTopKOptions(k=2)
    c.per_row = True
    vals, rows, _ = c.batchtopk_entries(x, cfg)
    assert torch.equal(torch.bincount(rows, minlength=16), torch.full((16,), 2))  # k in every row
    assert float(c.batch_threshold) == 0.0  # θ is estimated from the batch phase only
    c.per_row = False
    vals, _, _ = c.batchtopk_entries(x, cfg)
    assert vals.numel() == 32 and float(c.batch_threshold) > 0


def test_jumprelu_l1_warmup_then_l0_with_a_unit_decoder() -> None:
    x = sparse_data()
    cfg = JumpReLUOptions(steps=40, batch_size=64, buffer_size=512, l1_warmup_frac=0.5, init_norm=0.1)
    c = train_coder(tensor_source(x), cfg, 24, None, True, gen(7))
    assert torch.allclose(c.W_dec.norm(dim=1), torch.ones(24), atol=1e-4)  # folded, then kept unit
    assert SAEJumpReLUConfig().l1_warmup_frac == 0.7 and JumpReLUOptions().l1_warmup_frac == 0.0  # transcoders: L0 only
    with pytest.raises(ValueError):
        JumpReLUOptions(l1_warmup_frac=1.5)


@pytest.mark.parametrize(("ramp_samples", "ramp_steps"), [(640, 10), (650, 11), (0, 0), (10**6, 20)])
def test_relu_price_ramps_over_a_count_of_samples(ramp_samples: int, ramp_steps: int) -> None:
    """The share of the L1 price a step pays rises linearly to 1 over the first `l1_ramp_samples`
    samples (batches of 64 here: 640 samples = 10 steps, 650 → 11), the whole run at most; 0: none."""
    scales: list[float] = []

    class Recording(SparseCoder):
        def train_step(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            scales.append(self.l1_scale)
            return super().train_step(*args, **kwargs)

    cfg = ReLUOptions(steps=20, batch_size=64, buffer_size=512, l1_ramp_samples=ramp_samples)
    c = train_coder(tensor_source(sparse_data()), cfg, 24, None, True, gen(8), make_coder=Recording)
    expected = [min(1.0, (s + 1) / ramp_steps) if ramp_steps else 1.0 for s in range(20)]
    assert scales == pytest.approx(expected) and c.l1_scale == 1.0 and c._xw is None  # reset, buffer freed


@pytest.mark.slow
@pytest.mark.parametrize("method", ["sae-relu", "sae-batchtopk", "sae-jumprelu"])
def test_converges_on_stress_iid_at_the_stress_budget(method: str) -> None:
    """The convergence gate's bar (mmcs ≥ 0.95 on stress-iid, 1,500 steps × 1,024, blind sizes);
    before these rules: relu 0.870, batchtopk 0.821, jumprelu 0.850 (seed 0)."""
    from mechscope.decompose.registry import fit_blind
    from mechscope.metrics.score import score
    from mechscope.zoo import get_task

    task = get_task("stress-iid")
    torch.manual_seed(0)
    target = task.make_target(0)
    spec = get_method(method)
    torch.manual_seed(0)
    dec = fit_blind(spec, target, task, spec.Cfg(), FitContext(seed=0))
    metrics = score(dec, task, ablation=False).metrics
    assert metrics["mmcs"] >= 0.95, metrics
