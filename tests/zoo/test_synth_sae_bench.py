"""SynthSAEBench recipe: Zipf marginals, hierarchy gating and exclusion, low-rank correlation, magnitudes."""

from __future__ import annotations

import math
import time

import pytest
import torch
from torch import Tensor

from mechscope.zoo import get_task
from mechscope.zoo.stress import StressModel
from mechscope.zoo.synth_sae_bench import SynthConfig, SynthSAEBenchTask, mean_max_abs_cos

SMALL = SynthConfig(n_features=256, d=32, roots=2)  # 2 trees × 85 nodes = 170 features in trees
N = 40_000


pytestmark = pytest.mark.usefixtures("private_cache")


def small(**fields: object) -> SynthSAEBenchTask:
    return SynthSAEBenchTask(SMALL.model_copy(update=fields), "synth-test")


@pytest.fixture(scope="module")
def drawn() -> tuple[SynthSAEBenchTask, Tensor]:
    task = small()
    return task, task.sample(N, torch.Generator().manual_seed(0))


def test_zipf_probabilities() -> None:
    p = small().zipf_probs()
    assert math.isclose(float(p[0]), 0.4) and math.isclose(float(p[-1]), 5e-4)
    raw = torch.arange(1, 257, dtype=torch.float64) ** -0.5  # p is an affine image of (i + 1)^−0.5
    assert torch.allclose((p - p[-1]) / (p[0] - p[-1]), (raw - raw[-1]) / (raw[0] - raw[-1]))


def test_free_features_and_roots_fire_at_their_zipf_probability(
    drawn: tuple[SynthSAEBenchTask, Tensor],
) -> None:
    task, x = drawn
    p = task.zipf_probs().float()
    free = torch.cat([torch.arange(2), torch.arange(170, 256)])  # roots and features outside trees
    freq = (x[:, free] > 0).float().mean(0)
    sigma = (p[free] * (1 - p[free]) / N).sqrt()
    assert bool(((freq - p[free]).abs() < 5 * sigma + 1e-4).all())  # the copula keeps marginals


def test_children_fire_only_with_their_parent_and_alone_among_siblings(
    drawn: tuple[SynthSAEBenchTask, Tensor],
) -> None:
    task, x = drawn
    on = x > 0
    pairs = task.hierarchy()
    assert len(pairs) == 2 * (4 + 16 + 64) and pairs[0] == (0, 2) and pairs[4] == (1, 6)
    parents = torch.tensor([p for p, _ in pairs])
    children = torch.tensor([c for _, c in pairs])
    assert not bool((on[:, children] & ~on[:, parents]).any())  # child on ⇒ parent on
    siblings = on[:, children].view(N, -1, 4)  # children of one parent are consecutive
    assert int(siblings.sum(-1).max()) == 1  # mutually exclusive
    assert bool(siblings.any(-1).float().mean(0).gt(0).all())  # and every group does fire


def test_compensation_raises_children_by_the_recipe_formula(drawn: tuple[SynthSAEBenchTask, Tensor]) -> None:
    task, x = drawn
    p, q = task.zipf_probs(), task.draw_probs().double()
    # child 2 of root 0 (siblings 2–5): p_c / p_parent · (1 + Σ_rivals p / p_parent), capped at 1
    want = p[2] / p[0] * (1 + (p[3:6].sum()) / p[0])
    assert math.isclose(float(q[2]), min(float(want), 1.0), rel_tol=1e-5)
    assert torch.equal(q[:2], p[:2].float().double()) and torch.equal(q[170:], p[170:].float().double())
    kids = torch.arange(2, 42)
    plain = small(compensate=False).sample(N, torch.Generator().manual_seed(0))
    fired, fired_plain = (x[:, kids] > 0).float().mean(0).sum(), (plain[:, kids] > 0).float().mean(0).sum()
    assert float(fired) > 1.5 * float(fired_plain)  # gating and exclusion are partly offset…
    assert float(fired) < float(p[kids].sum())  # …not fully (as in SAELens: the formula uses base p)


@pytest.mark.slow
def test_16k_mean_l0_matches_the_published_benchmark() -> None:
    """SynthSAEBench-16k reports an average L0 of ≈ 34 (sampling only; the dictionary is not built)."""
    task = get_task("synth-sae-bench-16k")
    x = task.sample(2_000, torch.Generator().manual_seed(0))
    assert 32 < float((x > 0).sum(1).float().mean()) < 37  # measured 34.4


def test_low_rank_correlation_of_firings() -> None:
    task = small(roots=0, corr_rank=2, corr_scale=0.5)  # no hierarchy: firings are the copula alone
    on = (task.sample(N, torch.Generator().manual_seed(1)) > 0).double()[:, :24]  # frequent ones
    F = task.structure()[0][:24].double()
    predicted = F @ F.T  # latent correlation of the copula
    cov = on.T @ on / N - on.mean(0)[:, None] * on.mean(0)[None, :]
    measured = cov / (on.var(0, correction=0)[:, None] * on.var(0, correction=0)[None, :]).sqrt()
    iu = torch.triu_indices(24, 24, 1)
    pr, ms = predicted[iu[0], iu[1]], measured[iu[0], iu[1]]
    assert float(torch.corrcoef(torch.stack([pr, ms]))[0, 1]) > 0.9  # firings follow F Fᵀ
    assert bool((torch.sign(ms[pr.abs() > 0.2]) == torch.sign(pr[pr.abs() > 0.2])).all())
    independent = (small(roots=0, corr_rank=0).sample(N, torch.Generator().manual_seed(1)) > 0).double()[
        :, :24
    ]
    cov0 = independent.T @ independent / N - independent.mean(0)[:, None] * independent.mean(0)[None, :]
    assert float(cov0[iu[0], iu[1]].abs().max()) < 0.01


def test_magnitudes_follow_the_linear_mean(drawn: tuple[SynthSAEBenchTask, Tensor]) -> None:
    task, x = drawn
    _, _, sigma, mu = task.structure()
    assert math.isclose(float(mu[0]), 5.0) and math.isclose(float(mu[-1]), 4.0)
    assert float(x.min()) >= 0 and bool((sigma >= 0).all())
    for i in (0, 1, 180, 200):  # a root and free features: magnitudes are ReLU(μ_i + σ_i ξ)
        vals = x[:, i][x[:, i] > 0]
        assert abs(float(vals.mean()) - float(mu[i])) < 5 * float(sigma[i]) / math.sqrt(vals.numel()) + 0.02
        assert abs(float(vals.std()) - float(sigma[i])) < 0.1 * float(sigma[i]) + 0.02


def test_onehot_puts_each_feature_at_the_75th_percentile_of_its_firings(
    drawn: tuple[SynthSAEBenchTask, Tensor],
) -> None:
    """The SPD tasks' 0.75 is that percentile of U(0, 1); here a feature fires at 4–5, and a lone
    feature at 0.75 is an input the data rarely holds."""
    task, x = drawn
    oh = task.onehot()
    assert oh.shape == (256, 256) and bool((oh == torch.diag(oh.diagonal())).all())
    for i in (0, 1, 180, 200):
        vals = x[:, i][x[:, i] > 0]
        below = float((vals < oh[i, i]).float().mean())
        assert abs(below - 0.75) < 4 * math.sqrt(0.75 * 0.25 / vals.numel()) + 0.01, (i, below)
        assert float((vals < 0.75).float().mean()) < 0.01  # the SPD tasks' value: a rare firing here
    assert torch.equal(task.onehot(0.5), torch.eye(256) * 0.5)


def test_target_is_a_near_orthogonal_unit_dictionary_from_the_seed() -> None:
    task = small()
    target, again, other = task.make_target(0), task.build(0), task.build(1)
    assert isinstance(target, StressModel)
    W = target.W.weight.detach()
    assert torch.equal(W, again.W.weight) and not torch.equal(W, other.W.weight)
    assert torch.allclose(W.norm(dim=0), torch.ones(256), atol=1e-5)
    gaussian = torch.randn(32, 256, generator=torch.Generator().manual_seed(0))
    assert mean_max_abs_cos(W) < mean_max_abs_cos(gaussian)  # the frame potential pushed overlaps down
    cached = task.make_target(0)  # from the cache
    assert isinstance(cached, StressModel) and torch.equal(cached.W.weight, W)
    truth = task.ground_truth(target)
    assert truth.hierarchy == task.hierarchy() and truth.represented == list(range(256))
    assert len(truth.in_space("parameter")) == 256 and task.activation_sites() == ["W"]


def test_registered_sizes_and_sampling_speed() -> None:
    task = get_task("synth-sae-bench")
    assert isinstance(task, SynthSAEBenchTask) and task.n_features == 1024 and task.config.d == 128
    big = get_task("synth-sae-bench-16k")  # registered; its dictionary is never built here
    assert isinstance(big, SynthSAEBenchTask) and (big.n_features, big.config.d) == (16_384, 768)
    assert len(big.hierarchy()) == 128 * (4 + 16 + 64)
    task.sample(64, torch.Generator().manual_seed(0))  # warm the cached structure
    start = time.process_time()
    x = task.sample(20_000, torch.Generator().manual_seed(0))
    rate = 20_000 / max(time.process_time() - start, 1e-9)
    assert x.shape == (20_000, 1024) and rate > 2_000, rate  # measured ≈ 20k samples/s on one CPU thread
    assert 5 < float((x > 0).sum(1).float().mean()) < 10  # L0 ≈ 7.2 (16k: ≈ 34, as published)
