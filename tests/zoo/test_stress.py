"""Stress tasks: each generator has the statistics it claims; targets and controls are exact."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError
from torch import Tensor, nn

from mechscope.bench.run import with_task_config
from mechscope.config import ConfigError
from mechscope.zoo import TASKS, get_task
from mechscope.zoo.stress import ControlTask, StressConfig, StressModel, StressTask, max_abs_cos
from mechscope.zoo.tms import TMSConfig, TMSModel, TMSTask

N = 40_000


pytestmark = pytest.mark.usefixtures("private_cache")


def stress(name: str) -> StressTask:
    task = get_task(name)
    assert isinstance(task, StressTask)
    return task


def weight(model: nn.Module) -> Tensor:
    assert isinstance(model, StressModel)
    return model.W.weight.detach()


def draw(task: StressTask, n: int = N, seed: int = 0) -> Tensor:
    return task.sample(n, torch.Generator().manual_seed(seed))


def assert_marginals(on: Tensor, probs: Tensor) -> None:
    """Per-feature firing frequencies within 5 binomial standard errors (+ a float floor)."""
    freq = on.float().mean(dim=0)
    sigma = (probs * (1 - probs) / on.shape[0]).sqrt()
    assert bool(((freq - probs).abs() <= 5 * sigma + 1e-6).all()), (freq - probs).abs().max()


def indicator_corr(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation of boolean columns a[:, j] and b[:, j]."""
    a, b = a.double(), b.double()
    cov = (a * b).mean(0) - a.mean(0) * b.mean(0)
    return cov / (a.var(0, correction=0) * b.var(0, correction=0)).sqrt()


def test_iid_marginals_and_magnitudes() -> None:
    task = stress("stress-iid")
    x = draw(task)
    assert x.shape == (N, 40) and torch.equal(x, draw(task))
    assert torch.allclose(task.feature_probs(), torch.full((40,), 0.05))
    assert_marginals(x > 0, task.feature_probs())
    on = x[x > 0]
    assert float(on.max()) <= 1 and abs(float(on.mean()) - 0.5) < 5 * math.sqrt(1 / 12 / on.numel())
    off_pairs = indicator_corr((x > 0)[:, 0::2], (x > 0)[:, 1::2])
    assert float(off_pairs.abs().max()) < 5 / math.sqrt(N)  # independent


def test_correlated_pairs_have_the_set_indicator_correlation() -> None:
    task = stress("stress-correlated")
    on = draw(task) > 0
    assert_marginals(on, task.feature_probs())
    rho = indicator_corr(on[:, 0::2], on[:, 1::2])  # (20,) one per pair (2j, 2j+1)
    assert float((rho - 0.8).abs().max()) < 0.03, rho  # σ(ρ̂) ≈ (1 − ρ²)/√N ≈ 0.002
    across = indicator_corr(on[:, 1:-1:2], on[:, 2::2])  # (2j+1, 2j+2): different pairs
    assert float(across.abs().max()) < 5 / math.sqrt(N)
    joint = task.pair_joint()[0]  # P(both) = p² + ρ p (1 − p)
    assert math.isclose(float(joint[0]), 0.05**2 + 0.8 * 0.05 * 0.95, rel_tol=1e-5)


def test_anticorrelated_pairs_never_cooccur() -> None:
    task = stress("stress-anticorrelated")
    on = draw(task) > 0
    assert_marginals(on, task.feature_probs())
    assert not bool((on[:, 0::2] & on[:, 1::2]).any())
    assert float((on[:, 0::2] | on[:, 1::2]).float().mean()) > 0.09  # each pair is on ≈ 2p of the time


def test_hierarchical_parents_contain_their_children() -> None:
    task = stress("stress-hierarchical")
    pairs = task.hierarchy()
    assert len(pairs) == 30 and pairs[:3] == [(0, 1), (0, 2), (0, 3)] and (36, 39) in pairs
    on = draw(task) > 0
    for parent, child in pairs:
        assert bool((on[:, parent] | ~on[:, child]).all())  # child on ⇒ parent on
    parent_p = 1 - 0.95**4  # alone (0.05) or any of 3 children (0.05 each)
    probs = task.feature_probs()
    assert math.isclose(float(probs[0]), parent_p, rel_tol=1e-6) and math.isclose(
        float(probs[1]), 0.05, rel_tol=1e-6
    )
    assert_marginals(on, probs)
    alone = on[:, 0] & ~on[:, 1:4].any(dim=1)
    assert abs(float(alone.float().mean()) - 0.05 * 0.95**3) < 5 * math.sqrt(0.05 / N)
    truth = task.ground_truth(task.make_target(0))
    assert truth.hierarchy == pairs


def test_zipf_probabilities_and_norm_spread() -> None:
    task = stress("stress-zipf")
    probs = task.feature_probs()
    assert math.isclose(float(probs[0]), 0.3, rel_tol=1e-6) and math.isclose(
        float(probs[-1]), 0.002, rel_tol=1e-5
    )
    ranks = torch.arange(1, 41, dtype=torch.float64)
    slope = torch.diff(probs.double().log()) / torch.diff(ranks.log())  # a power law: constant log-log slope
    assert torch.allclose(slope, slope[0].expand_as(slope), atol=1e-4)
    assert_marginals(draw(task, 80_000) > 0, probs)
    norms = weight(task.make_target(0)).norm(dim=0)
    assert math.isclose(float(norms.min()), 0.3, rel_tol=1e-5) and math.isclose(
        float(norms.max()), 1.0, rel_tol=1e-5
    )
    assert len(set(norms.argsort().tolist()[:5]) & set(range(35, 40))) < 5  # norms are not sorted by rank


def test_dense_features_next_to_sparse_ones() -> None:
    task = stress("stress-dense")
    on = draw(task) > 0
    want = torch.tensor([0.8] * 4 + [0.05] * 36)
    assert torch.allclose(task.feature_probs(), want)
    assert_marginals(on, want)


def test_overcomplete_shape() -> None:
    task = stress("stress-overcomplete")
    x = draw(task, 20_000)
    assert x.shape == (20_000, 80)
    assert abs(float((x > 0).sum(1).float().mean()) - 2.0) < 0.05  # same mean L0 as stress-iid
    target = task.make_target(0)
    assert isinstance(target, StressModel) and target.W.weight.shape == (10, 80)
    assert max_abs_cos(target.W.weight.detach()) < 0.55


def test_target_is_a_near_orthogonal_function_of_the_seed() -> None:
    task = stress("stress-iid")
    a, b, c = task.build(3), task.build(3), task.build(4)
    W = a.W.weight.detach()
    assert torch.equal(W, b.W.weight) and not torch.equal(W, c.W.weight)
    assert torch.allclose(W.norm(dim=0), torch.ones(40), atol=1e-5)
    assert max_abs_cos(W) < 0.42  # a Gaussian draw has ≈ 0.9; Welch's bound for 40 in 10 is 0.28
    assert torch.equal(weight(task.make_target(3)), W)
    assert torch.equal(weight(task.make_target(3)), W)  # from the cache


def test_truth_is_every_column() -> None:
    task = stress("stress-iid")
    target = task.make_target(0)
    assert isinstance(target, StressModel)
    truth = task.ground_truth(target)
    W = target.W.weight.detach()
    params = truth.in_space("parameter", "W")
    assert truth.represented == list(range(40)) and len(params) == 40 and truth.hierarchy == []
    assert torch.allclose(torch.stack([m.direction for m in params]).sum(0), W)
    acts = truth.in_space("activation", "W")
    assert all(torch.equal(m.direction, W[:, m.feature]) and m.rule == "pos" for m in acts)
    x = draw(task, 256)
    assert torch.allclose(target(x), x @ W.T) and task.activation_sites() == ["W"]


def test_control_has_random_weights_and_the_original_truth() -> None:
    task = get_task("stress-iid-control")
    assert isinstance(task, ControlTask) and task.family == "control" and task.base_name == "stress-iid"
    base = stress("stress-iid")
    original, control = base.make_target(0), task.make_target(0)
    Wo, Wc = weight(original), weight(control)
    assert not torch.allclose(Wo, Wc) and math.isclose(float(Wc.norm()), float(Wo.norm()), rel_tol=1e-5)
    assert float((Wc / Wc.norm(dim=0) * (Wo / Wo.norm(dim=0))).sum(0).abs().mean()) < 0.5  # unrelated columns
    assert torch.equal(weight(task.make_target(0)), Wc)  # deterministic
    t_control, t_orig = task.ground_truth(control), base.ground_truth(original)
    assert len(t_control.mechanisms) == len(t_orig.mechanisms)
    assert all(
        torch.equal(a.direction, b.direction)
        for a, b in zip(t_control.mechanisms, t_orig.mechanisms, strict=True)
    )
    assert t_control.notes and torch.equal(
        task.sample(64, torch.Generator().manual_seed(2)), draw(base, 64, 2)
    )
    with pytest.raises(ConfigError, match="control_seed"):
        task.ground_truth(original)
    assert torch.allclose(task.feature_probs(), base.feature_probs())


def test_control_follows_config_overrides() -> None:
    task = with_task_config(get_task("stress-iid-control"), StressConfig(p=0.2))
    assert float((task.sample(4_000, torch.Generator().manual_seed(0)) > 0).float().mean()) > 0.15


def test_control_of_tms_keeps_frozen_weights_and_ties() -> None:
    base = TMSTask(TMSConfig(steps=20, identity=True), "tms-test")
    task = ControlTask(base, "tms-test-control")
    original, control = base.make_target(1), task.make_target(1)
    assert isinstance(original, TMSModel) and isinstance(control, TMSModel) and control.identity is not None
    assert torch.equal(control.identity.weight, torch.eye(2))  # frozen: left as it is
    assert not torch.allclose(control.W.weight, original.W.weight)
    assert math.isclose(
        float(control.W.weight.detach().norm()), float(original.W.weight.detach().norm()), rel_tol=1e-5
    )
    h = torch.randn(3, 2)
    assert torch.equal(control.W_T(h), h @ control.W.weight)  # the tied second layer follows the new W
    truth = task.ground_truth(control)
    acts = truth.in_space("activation")
    assert acts and all(torch.equal(m.direction, original.W.weight.detach()[:, m.feature]) for m in acts)
    assert "tms-40-10-control" in TASKS


def test_bad_configs_are_one_line_errors() -> None:
    with pytest.raises(ValidationError, match="even n_features"):
        StressConfig(n_features=41, pairs="correlated")
    with pytest.raises(ValidationError, match="multiple of children"):
        StressConfig(children=6)
    with pytest.raises(ConfigError, match=r"pair_corr=-0\.5 is infeasible"):
        StressTask(StressConfig(pairs="correlated", pair_corr=-0.5), "x").pair_joint()
