"""Recurrent zoo tasks: data and targets are right; trained targets have the known structure.

The slow tier trains each target (cached afterwards) and checks the fixed-point structure the
literature predicts: 8 stable points for the 3-bit flip-flop with every cell type, an oscillatory
unstable point per sine frequency, a line of slow points for the integrator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mechscope.config import ConfigError, with_overrides
from mechscope.dynamics.command import run_fixed_points
from mechscope.zoo import TASKS, get_task
from mechscope.zoo.cache import target_path
from mechscope.zoo.rnn_tasks import FlipFlopConfig, FlipFlopTask, IntegratorTask, RecurrentModel, SineTask


def test_flipflop_targets_hold_the_last_pulse() -> None:
    u = torch.zeros(1, 6, 3)
    u[0, 0] = torch.tensor([1.0, -1.0, 1.0])
    u[0, 3, 0] = -1.0
    u[0, 4, 2] = -1.0
    y = FlipFlopTask().targets(u)[0]
    assert y[:, 0].tolist() == [1, 1, 1, -1, -1, -1]
    assert y[:, 1].tolist() == [-1] * 6
    assert y[:, 2].tolist() == [1, 1, 1, 1, -1, -1]


def test_flipflop_samples_and_memories() -> None:
    task = FlipFlopTask()
    u = task.sample(16, torch.Generator().manual_seed(0))
    assert u.shape == (16, task.config.seq_len, 3)
    assert bool((u[:, 0] != 0).all())  # every memory defined from t = 0
    assert set(u.unique().tolist()) <= {-1.0, 0.0, 1.0}
    mem = task.memories()
    assert mem.shape == (8, 3) and len({tuple(r) for r in mem.tolist()}) == 8


@pytest.mark.parametrize("n", [1, 4, 6])
def test_flipflop_n_bits_sets_inputs_outputs_and_memories(n: int) -> None:
    task = get_task("flipflop")
    task.config = with_overrides(task.config, {"n_bits": str(n)}, "task")
    u = task.sample(4, torch.Generator().manual_seed(0))
    assert u.shape == (4, task.config.seq_len, n)
    assert task.targets(u).shape == u.shape
    mem = task.memories()  # type: ignore[attr-defined]
    assert mem.shape == (2**n, n) and len({tuple(r) for r in mem.tolist()}) == 2**n
    model = task.build()  # type: ignore[attr-defined]
    assert model(u).shape == u.shape  # input_size follows n_bits (it was fixed at 3)


def test_flipflop_presets_and_recipe_scaling() -> None:
    for n in (2, 3, 4, 5):
        task = get_task(f"flipflop-{n}bit")
        assert task.config.n_bits == n and f"{2**n} stable" in task.summary  # type: ignore[attr-defined]
    assert "flipflop" in TASKS and "n_bits" in TASKS["flipflop"]().summary
    assert FlipFlopConfig(n_bits=3).width() == 32 and FlipFlopConfig(n_bits=5).width() == 64
    assert FlipFlopConfig(n_bits=5).n_steps() > FlipFlopConfig(n_bits=3).n_steps()
    assert FlipFlopConfig(n_bits=5, hidden_size=20).width() == 20


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("n_bits", "0", "'n_bits': '0' (Input should be greater than or equal to 1)"),
        ("n_bits", "7", "'n_bits': '7' (Input should be less than or equal to 6)"),
        ("cell", "mamba", "'cell': 'mamba' (Input should be 'rnn', 'gru', 'lstm', 'ssm' or 'deltanet')"),
        ("n_layers", "0", "'n_layers': '0'"),
    ],
)
def test_bad_flipflop_settings_are_one_line_errors(key: str, value: str, says: str) -> None:
    task = get_task("flipflop")
    with pytest.raises(ConfigError) as err:
        with_overrides(task.config, {key: value}, "task")
    assert says in str(err.value) and "\n" not in str(err.value)


def test_a_preset_name_keeps_its_bit_count() -> None:
    with pytest.raises(ConfigError, match=r"'flipflop-3bit' has n_bits=3, got n_bits=4; use 'flipflop --set n_bits=4'"):
        run_fixed_points("flipflop-3bit", 0, None, ["n_bits=4"], None)


def test_sine_and_integrator_data() -> None:
    sine = SineTask()
    u = sine.sample(8, torch.Generator().manual_seed(0))
    y = sine.targets(u)
    j = (u[:, 0, 0, None].double() - sine.levels()).abs().argmin(-1)
    assert torch.allclose(y[:, 0, 0].double(), torch.sin(sine.omegas()[j]), atol=1e-6)
    assert [float(v) for v in sine.analysis_inputs()[0]] == [0.25]
    integ = IntegratorTask()
    u = integ.sample(4, torch.Generator().manual_seed(0))
    assert torch.allclose(integ.targets(u)[:, -1], u.sum(1))


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_state_noise_forward_matches_the_fused_layer_without_noise(cell: str) -> None:
    torch.manual_seed(0)
    model = RecurrentModel(cell, 3, 5, 3)  # type: ignore[arg-type]
    u = torch.randn(2, 7, 3)
    assert torch.allclose(model(u), model(u, state_noise=1e-12), atol=1e-6)


def test_training_is_cached_and_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path))
    task = FlipFlopTask(FlipFlopConfig(cell="rnn", hidden_size=8, steps=3, max_attempts=2, hold_steps=5))
    model = task.make_target(0)
    info = (target_path(task.name, task.config, 0) / "info.json").read_text()
    assert '"ok": false' in info and '"attempt": 1' in info  # 3 steps cannot pass; retried once
    assert "memory_lambda_max" in info  # the attractor check ran and is recorded
    assert [r["train_seed"] for r in json.loads(info)["rejected"]] == [0, 7919]  # each failed attempt, and why
    again = task.make_target(0)
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True)
    )


def test_dynamics_kind_and_family() -> None:
    for name, family in (
        ("flipflop-3bit", "rnn"),
        ("sine-generator", "rnn"),
        ("linear-rnn", "linear-dynamics"),
    ):
        task = get_task(name)
        assert task.kind == "dynamics" and task.family == family


@pytest.mark.slow
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_flipflop_has_eight_matched_stable_points(cell: str) -> None:
    m = run_fixed_points("flipflop-3bit", 0, None, [f"cell={cell}", "n_starts=512"], None)
    assert m["n_stable"] == 8 and m["n_matched"] == 8
    assert m["stable_precision"] == 1.0 and m["stable_recall"] == 1.0
    assert m["n_saddle"] >= 1


@pytest.mark.slow
@pytest.mark.parametrize("n", [2, 4, 5])
def test_gru_flipflop_with_more_bits_has_every_memory(n: int) -> None:
    """2^n stable points, each a distinct memory (issue 16: n = 2…5 on GRU; seed 0, whose init is
    seeded since 84193c2 — RESULTS.md has the 3-seed table; n = 5 takes ~100 CPU s)."""
    m = run_fixed_points("flipflop", 0, None, [f"n_bits={n}"], None)
    assert m["n_stable"] == m["n_matched"] == 2**n
    assert m["stable_precision"] == 1.0 and m["stable_recall"] == 1.0


def test_a_rejected_target_is_retrained_from_derived_seeds() -> None:
    """Every attempt that misses the acceptance bar is recorded with why, and the next trains from
    the derived seed (seed + 7919 · attempt). One training step cannot hold a memory, so both
    attempts are rejected on any machine."""
    task = get_task("flipflop")
    task.config = with_overrides(task.config, {"n_bits": "1", "steps": "1", "max_attempts": "2"}, "task")
    task.make_target(5)
    info = json.loads((target_path(task.name, task.config, 5) / "info.json").read_text())
    assert not info["ok"] and [r["train_seed"] for r in info["rejected"]] == [5, 5 + 7919]
    assert all(not r["ok"] and r["bit_accuracy"] < 0.99 for r in info["rejected"])


@pytest.mark.slow
def test_a_seed_whose_memories_are_slow_attractors_is_retrained() -> None:
    """4-bit GRU seed 2's first training (on the box of issue 16) holds every memory for 500 steps,
    but 8 of its 16 are slow attractors (|λ|max 0.99907–0.99995) the finder rightly calls marginal:
    8 / 16 found. The acceptance bar rejects it for that alone and retrains; the accepted target
    scores 16 / 16 (three trainings of 3000 steps and the finder: 246 CPU s). Which first training
    falls short is a detail of the CPU's arithmetic — on an AVX-512 EPYC seed 2's first training
    passed the bar — so the rejection is checked where it happened; the accepted target's 16
    attractors and the finder's 16 / 16 everywhere (the retrain loop itself: the test above; the
    slow-attractor check: tests/dynamics/test_attractors.py)."""
    m = run_fixed_points("flipflop", 2, None, ["n_bits=4"], None)
    task = get_task("flipflop")
    task.config = with_overrides(task.config, {"n_bits": "4"}, "task")
    info = json.loads((target_path(task.name, task.config, 2) / "info.json").read_text())
    for rejected in info["rejected"]:
        assert not rejected["ok"]
        if rejected["memories_held"] and rejected["bit_accuracy"] >= 0.99:  # rejected for its attractors alone
            assert not rejected["attractors_ok"] and rejected["worst_lambda_max"] > 1 - 1e-3
    assert info["ok"] and max(info["memory_lambda_max"]) < 1 - 1e-3
    assert m["n_stable"] == m["n_matched"] == 16
    assert m["stable_precision"] == 1.0 and m["stable_recall"] == 1.0


@pytest.mark.slow
def test_held_out_bit_count_through_set() -> None:
    """n = 1 is in no preset: the generic task trains and scores it from `--set n_bits=1`."""
    m = run_fixed_points("flipflop", 0, None, ["n_bits=1"], None)
    assert m["n_matched"] == 2 and m["stable_recall"] == 1.0 and m["stable_precision"] == 1.0


@pytest.mark.slow
def test_sine_generator_has_an_oscillatory_point_per_frequency() -> None:
    m = run_fixed_points("sine-generator", 0, None, ["n_starts=256"], None)
    assert m["n_matched"] == len(m["inputs"]) == 4
    assert m["max_angle_rel_error"] <= 0.15


@pytest.mark.slow
def test_integrator_has_a_line_of_slow_points() -> None:
    m = run_fixed_points("integrator", 0, None, ["n_starts=512"], None)
    assert m["n_matched"] == 1
    assert m["line_fraction"] >= 0.9
    assert m["lead_eig_median_abs_err"] <= 0.02
    assert m["eigvec_alignment_median"] >= 0.9
