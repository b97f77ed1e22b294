"""TMS tasks: deterministic training, restarts, sampling, ground truth, and (slow) the published regime."""

from __future__ import annotations

import math

import pytest
import torch

from mechscope.zoo import get_task
from mechscope.zoo.tms import REPRESENTED_NORM, RESTART_SEED_STRIDE, TMSConfig, TMSModel, TMSTask, train_tms


def _train(cfg: TMSConfig, seed: int) -> tuple[TMSModel, dict[str, object]]:
    task = TMSTask(cfg, "tms-test")
    model = task.build()
    info = train_tms(model, task, seed, lambda done, total: None)
    return model, info


def test_same_seed_same_weights() -> None:
    cfg = TMSConfig(steps=50)
    (a, _), (b, _), (c, _) = _train(cfg, 3), _train(cfg, 3), _train(cfg, 4)
    assert torch.equal(a.W.weight, b.W.weight) and torch.equal(a.b_final, b.b_final)
    assert not torch.equal(a.W.weight, c.W.weight)


def test_identity_variant_trains_exactly_like_the_plain_one() -> None:
    # The +ID layer is an exact, frozen identity, so W follows the same trajectory bit for bit:
    # seed tables of tms-5-2 hold for tms-5-2-id (benchmarks/tms_seeds.py).
    (a, _), (b, _) = _train(TMSConfig(steps=50), 1), _train(TMSConfig(steps=50, identity=True), 1)
    assert b.identity is not None and torch.equal(b.identity.weight, torch.eye(2))
    assert torch.equal(a.W.weight, b.W.weight) and torch.equal(a.b_final, b.b_final)


@pytest.mark.parametrize("init", ["xavier", "reference"])
def test_init_is_a_function_of_the_seed(init: str) -> None:
    cfg = TMSConfig(init=init).model_copy(update={"steps": 0})  # type: ignore[arg-type]  # no training: the init alone (a user cannot ask for 0 steps)
    (a, _), (b, _) = _train(cfg, 7), _train(cfg, 7)
    assert torch.equal(a.W.weight, b.W.weight)
    if init == "reference":  # nn.Linear's default bound 1/√fan_in
        assert float(a.W.weight.detach().abs().max()) <= 1 / math.sqrt(5)
        assert float(a.b_final.detach().abs().max()) <= 1 / math.sqrt(2)
    else:
        assert torch.count_nonzero(a.b_final) == 0


def test_restarts_keep_the_best_attempt_and_record_every_one() -> None:
    # 1 step of training leaves ‖W[:, i]‖ at its random init, so some attempts miss features.
    cfg = TMSConfig(steps=1, restarts=5)
    model, info = _train(cfg, 0)
    attempts = info["attempts"]
    assert isinstance(attempts, list) and 1 <= len(attempts) <= 6
    assert [a["seed"] for a in attempts] == [k * RESTART_SEED_STRIDE for k in range(len(attempts))]
    n_reps = [a["n_represented"] for a in attempts]
    assert info["n_represented"] == max(n_reps)
    assert len(attempts) == 6 or n_reps[-1] == 5  # stops as soon as every feature is represented
    norms = model.W.weight.norm(dim=0)
    assert int((norms > REPRESENTED_NORM).sum()) == info["n_represented"]
    chosen = attempts[int(info["attempt"])]  # type: ignore[call-overload]
    assert chosen["n_represented"] == info["n_represented"]


def test_sample_statistics() -> None:
    task = get_task("tms-40-10")
    x = task.sample(50_000, torch.Generator().manual_seed(0))
    assert x.shape == (50_000, 40)
    p = 0.05
    frac = float((x != 0).float().mean())
    sigma = math.sqrt(p * (1 - p) / x.numel())
    assert abs(frac - p) < 5 * sigma
    on = x[x != 0]
    assert float(on.min()) >= 0 and float(on.max()) <= 1
    assert abs(float(on.mean()) - 0.5) < 5 * math.sqrt(1 / 12 / on.numel())
    again = task.sample(50_000, torch.Generator().manual_seed(0))
    assert torch.equal(x, again)


def _pentagon(identity: bool, drop: int | None = None) -> tuple[TMSTask, TMSModel]:
    task = TMSTask(TMSConfig(identity=identity), "tms-test")
    model = task.build()
    angles = torch.arange(5) * 2 * math.pi / 5
    W = 1.1 * torch.stack([angles.cos(), angles.sin()])  # (2, 5)
    if drop is not None:
        W[:, drop] = 0.01
    model.W.weight.data.copy_(W)
    return task, model


@pytest.mark.parametrize("identity", [False, True])
def test_ground_truth_shapes(identity: bool) -> None:
    task, model = _pentagon(identity)
    truth = task.ground_truth(model)
    assert truth.represented == [0, 1, 2, 3, 4] and truth.output_kind == "mse"
    params = truth.in_space("parameter", "W")
    assert len(params) == 5 and all(m.direction.shape == (2, 5) and m.rank == 1 for m in params)
    assert torch.allclose(sum(m.direction for m in params), model.W.weight)  # type: ignore[arg-type]
    acts = truth.in_space("activation")
    assert len(acts) == 5 and all(m.direction.shape == (2,) for m in acts)
    dense = truth.in_space("parameter", "identity")
    assert len(dense) == (1 if identity else 0)
    if identity:
        assert dense[0].rank == 2 and dense[0].rule == "dense"
    assert task.onehot().shape == (5, 5) and task.mlp_sites() == []
    x = torch.tensor([[0.0, 0.3, 0.0, 0.0, 0.0], [0.0] * 5])
    active = truth.active(x, "parameter")
    assert active[0].tolist() == [False, True, False, False, False] + ([True] if identity else [])
    assert not active[1].any()


def test_unrepresented_feature_is_not_scored() -> None:
    task, model = _pentagon(False, drop=3)
    truth = task.ground_truth(model)
    assert truth.represented == [0, 1, 2, 4]
    assert all(m.feature != 3 for m in truth.mechanisms)
    assert truth.notes


@pytest.mark.slow
def test_default_tms_5_2_targets_represent_every_feature(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registered recipe: every seed learns the pentagon, in the published loss regime."""
    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path))
    torch.set_num_threads(1)
    task = get_task("tms-5-2")
    for seed in range(3):
        model = task.make_target(seed)
        assert isinstance(model, TMSModel)
        norms = model.W.weight.detach().norm(dim=0)
        assert bool((norms > 0.95).all() and (norms < 1.3).all()), norms
        truth = task.ground_truth(model)
        assert truth.represented == [0, 1, 2, 3, 4]
        x = task.sample(65_536, torch.Generator().manual_seed(1))
        with torch.no_grad():
            loss = float(torch.nn.functional.mse_loss(model(x), x))
        assert loss < 2.2e-3, loss  # a 4-feature solution sits at ≈ 3.7e-3, all-zero at 1.67e-2
