"""Blind defaults: no method reads the ground truth while fitting; sizing=oracle reads it openly."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from torch import nn

from mechscope.core import GroundTruth
from mechscope.decompose import METHODS, FitContext, get_method
from mechscope.decompose.activation_buffer import tensor_source
from mechscope.decompose.base import load_decomposition
from mechscope.decompose.dictionary import (
    JumpReLUOptions,
    ReLUOptions,
    TopKOptions,
    default_batch_size,
    resolve_l1_price,
    train_coder,
)
from mechscope.decompose.dictionary_sizing import blind_sizes, site_width
from mechscope.decompose.registry import fit_blind
from mechscope.decompose.sparsity_rules import l1_price, sparsity_estimate
from mechscope.zoo.resid_mlp import ResidMLPConfig, ResidMLPTask

SMALL = {"steps": 12, "batch_size": 64, "buffer_size": 512, "checkpoint_every": 6}


class TruthlessTask(ResidMLPTask):
    """A small residual MLP whose ground truth raises on access (and counts the attempts)."""

    reads = 0

    def ground_truth(self, target: nn.Module) -> GroundTruth:
        TruthlessTask.reads += 1
        raise AssertionError("a blind fit read the ground truth")


class CountingTask(ResidMLPTask):
    reads = 0

    def ground_truth(self, target: nn.Module) -> GroundTruth:
        CountingTask.reads += 1
        return super().ground_truth(target)


CFG = ResidMLPConfig(n_features=12, d_embed=32, d_mlp=6, n_layers=1, feature_prob=0.1)


def small_config(name: str, **extra: Any) -> Any:
    Cfg = get_method(name).Cfg
    return Cfg(**{k: v for k, v in {**SMALL, **extra}.items() if k in Cfg.model_fields})


@pytest.mark.parametrize("name", sorted(n for n, s in METHODS.items() if s.family not in ("calibration", "dynamics")))
def test_every_method_fits_blind(name: str) -> None:
    task = TruthlessTask(CFG, "resid-truthless")
    target = task.build(0).eval()
    spec = get_method(name)
    config = small_config(name)
    assert not spec.reads_truth(config), f"{name} reads the truth at its defaults"
    reads = TruthlessTask.reads
    dec = fit_blind(spec, target, task, config, FitContext(seed=0))
    assert TruthlessTask.reads == reads
    assert dec.sites and all(dec.n_components(s) > 0 for s in dec.sites)


def test_sizing_oracle_reads_the_truth_and_records_it() -> None:
    task = CountingTask(CFG, "resid-counting")
    target = task.build(0).eval()
    spec = get_method("sae-topk")
    config = small_config("sae-topk", sizing="oracle")
    assert spec.reads_truth(config) and config.model_dump()["sizing"] == "oracle"
    before = CountingTask.reads
    dec = fit_blind(spec, target, task, config, FitContext(seed=0))
    assert CountingTask.reads == before + 1
    assert dec.n_components("embed") == 2 * 24 and dec.coder("embed").k == 1  # 24 signed directions, L0 1.2
    with pytest.raises(RuntimeError, match="sizing=oracle needs the ground truth"):
        spec.fit(target, task, config, FitContext(seed=0))  # bypassing fit_blind: no truth handed over


def test_a_blind_fit_records_the_sizes_it_resolved(tmp_path: Any) -> None:
    """config.yaml keeps n_latents / k / batch_size as null (sized at fit time); the saved
    decomposition records what ran, and where each size came from."""
    task = TruthlessTask(CFG, "resid-truthless")
    target = task.build(0).eval()
    spec = get_method("sae-topk")
    config = small_config("sae-topk", batch_size=None)
    dec = fit_blind(spec, target, task, config, FitContext(seed=0))
    coder = dec.coder("embed")
    dec.save(tmp_path)
    saved = json.loads((tmp_path / "decomposition.json").read_text())["config"]["embed"]["trained"]
    batch = default_batch_size(coder.d_in, coder.d_out)
    assert saved == {"n_latents": coder.n_latents, "n_latents_from": "blind", "k": coder.k, "k_from": "blind",
                     "batch_size": batch, "steps": 12, "samples_seen": 12 * batch}  # fmt: skip
    assert load_decomposition(tmp_path, target).coder("embed").trained == saved
    set_k = fit_blind(spec, target, task, small_config("sae-topk", k=3, n_latents=40), FitContext(seed=0))
    assert set_k.coder("embed").trained["n_latents_from"] == "setting" == set_k.coder("embed").trained["k_from"]


def test_blind_sizes_read_width_and_sparsity_from_the_data() -> None:
    g = torch.Generator().manual_seed(0)
    n, d, D = 60, 20, 200
    dirs = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1)
    embed = torch.linalg.qr(torch.randn(D, d, generator=g))[0]  # (D, d): data spans d of D dims
    for l0 in (1, 3):
        on = torch.rand(20_000, n, generator=g) < l0 / n
        feats = on * torch.rand(20_000, n, generator=g)
        x = feats @ dirs @ embed.T  # (N, D)
        assert site_width(x) == d
        est = sparsity_estimate(x, g)
        assert 0.7 * l0 < est < 1.5 * l0, (l0, est)
        assert blind_sizes(TopKOptions(), x, g) == (8 * d, int(est))
    dense = torch.randn(8_000, d, generator=g)
    assert sparsity_estimate(dense, g) > 50  # Gaussian data: no sparse structure, k capped at width / 2
    assert blind_sizes(TopKOptions(expansion=2), dense, g) == (2 * d, d // 2)


def test_fixed_point_analysis_fits_blind() -> None:
    """The dynamics family gets the same blind view: the finder sees the RNN and its inputs only."""
    from mechscope.zoo import get_task

    task = get_task("linear-rnn")
    spec = get_method("fixed-points")
    analysis = fit_blind(spec, task.make_target(0), task, spec.Cfg(), FitContext(seed=0))
    assert analysis is not None


def test_the_l1_price_falls_as_one_over_root_l0() -> None:
    assert l1_price(1.0, 0.5) == pytest.approx(1.0)
    assert l1_price(4.0, 0.5) == pytest.approx(0.5)  # one feature's RMS amplitude halves
    assert l1_price(4.0, 1.0) == pytest.approx(1.0)
    cfg = resolve_l1_price(ReLUOptions(l1_rule="amplitude"), sparse_sums(8_192, n_dirs=256, d=64, per_input=8))
    assert isinstance(cfg, ReLUOptions) and cfg.l1_coef is not None and 0.15 < cfg.l1_coef < 0.5  # true L0 8
    assert resolve_l1_price(ReLUOptions(l1_coef=2.0), torch.randn(64, 8)) == ReLUOptions(l1_coef=2.0)  # set: kept


def test_the_interference_rule_prices_the_site_width_not_the_l0() -> None:
    """λ = 2σ/√d: the same price at L0 2 and 8 on a 64-d site; a 1000-d stream whose data span 100
    dims is priced at its width 100."""
    rule = ReLUOptions()  # sae-relu's default rule
    for per_input in (2, 8):
        cfg = resolve_l1_price(rule, sparse_sums(8_192, n_dirs=256, d=64, per_input=per_input))
        assert isinstance(cfg, ReLUOptions) and cfg.l1_coef == pytest.approx(2 / 8)
    embedded = sparse_sums(8_192, n_dirs=100, d=100, per_input=2) @ torch.linalg.qr(torch.randn(1000, 100))[0].T
    cfg = resolve_l1_price(rule.model_copy(update={"l1_noise_frac": 0.5}), embedded)
    assert isinstance(cfg, ReLUOptions) and cfg.l1_coef == pytest.approx(1 / 10)
    warm = resolve_l1_price(JumpReLUOptions(l1_rule="interference", l1_warmup_frac=0.5), sparse_sums(4_096, 64, 16, 2))
    assert isinstance(warm, JumpReLUOptions) and warm.warmup_l1_coef == pytest.approx(2 / 4)


def sparse_sums(n: int, n_dirs: int, d: int, per_input: int, seed: int = 0) -> torch.Tensor:
    """[n, d] sums of `per_input` of `n_dirs` random unit directions with U(0, 1) magnitudes."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.nn.functional.normalize(torch.randn(n_dirs, d, generator=g), dim=1)
    idx = torch.randint(0, n_dirs, (n, per_input), generator=g)
    return torch.einsum("nk,nkd->nd", torch.rand(n, per_input, generator=g), dirs[idx])


@pytest.mark.parametrize("method", ["relu", "jumprelu"])
def test_the_blind_l1_price_keeps_a_high_l0_code_alive(method: str) -> None:
    """L0 8 in 64 dims: the fixed price 1.2 (the old default), charged in full from the start,
    silences every latent within a few hundred steps; the rule's price (relu 0.25, jumprelu's
    warm-up ≈ 0.22 here) keeps the code firing — both checked here."""
    x = sparse_sums(16_384, n_dirs=256, d=64, per_input=8)
    make = ReLUOptions if method == "relu" else JumpReLUOptions
    warmup = {"l1_warmup_frac": 1.0} if method == "jumprelu" else {}  # JumpReLU: the whole run its L1 phase

    def l0(**price: float) -> float:
        cfg = make(n_latents=256, steps=300, batch_size=256, buffer_size=8_192, **warmup, **price)
        coder = train_coder(tensor_source(x), cfg, 256, None, True, torch.Generator().manual_seed(0))
        with torch.no_grad():
            return float((coder.encode(x[:2_048]) > 0).sum(-1).float().mean())

    fixed = {"l1_coef": 1.2, "l1_ramp_samples": 0} if method == "relu" else {"warmup_l1_coef": 1.2}
    silenced = l0(**fixed)
    assert silenced < 0.5
    assert l0() > 4
    if method == "relu":  # the ramp charges a share of the price early on: the code dies later, if at all
        assert l0(l1_coef=1.2) > silenced + 0.1
