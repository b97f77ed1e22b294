from __future__ import annotations

import pytest
import torch

from mechscope.decompose.registry import FitContext, get_method
from mechscope.metrics import score
from mechscope.real.planted import FAST_SETTINGS, PlantedConfig, PlantedTask


@pytest.fixture(scope="module")
def task() -> PlantedTask:
    return PlantedTask(PlantedConfig(n_features=4))


def test_planted_rule_reads_exactly_the_features(task: PlantedTask) -> None:
    target = task.make_target(0)
    x = task.sample(64, torch.Generator().manual_seed(0))
    h = target.base + x @ target.D
    torch.testing.assert_close(target.planted.read(h), x, atol=1e-4, rtol=1e-4)
    truth = task.ground_truth(target)
    assert len(truth.in_space("parameter")) == 8 and len(truth.in_space("activation")) == 4
    # The planted mechanism matters for the output: switching feature 0 on moves it.
    e0 = torch.zeros(1, 4)
    e0[0, 0] = 1.0
    assert (target(e0) - target(torch.zeros(1, 4))).norm() > 0.1 * target(torch.zeros(1, 4)).norm()


def test_random_control_keeps_the_planted_truth_but_not_the_weights(task: PlantedTask) -> None:
    control = PlantedTask(PlantedConfig(n_features=4, random_init=True))
    a, b = task.make_target(0), control.make_target(0)
    torch.testing.assert_close(a.true_read, b.true_read)
    assert not torch.allclose(a.planted.read.weight, b.planted.read.weight)
    assert not torch.allclose(a.intermediate.dense.weight, b.intermediate.dense.weight)
    assert control.ground_truth(b).notes


@pytest.mark.slow
def test_topk_sae_finds_the_planted_features_and_not_in_the_control(task: PlantedTask) -> None:
    spec = get_method("sae-topk")
    cfg = spec.Cfg.model_validate(FAST_SETTINGS["sae-topk"])
    found = score(spec.fit(task.make_target(0), task, cfg, FitContext(seed=0)), task).metrics
    control = PlantedTask(PlantedConfig(n_features=4, random_init=True))
    chance = score(spec.fit(control.make_target(0), control, cfg, FitContext(seed=0)), control).metrics
    assert found["mmcs"] > 0.95 and found["coverage"] == 1.0
    assert chance["mmcs"] < 0.5
