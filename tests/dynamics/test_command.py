"""`run_fixed_points`: the run directory, DESIGN.md's keys, and one-line user errors."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from torch import nn

from mechscope.config import ConfigError
from mechscope.dynamics.command import run_fixed_points
from mechscope.dynamics.finder import NoFixedPointsError

FAST = ["n_starts=32", "max_iters=50"]


def test_run_directory_and_keys(tmp_path: Path) -> None:
    m = run_fixed_points("linear-rnn", seed=2, input=[0.5, -1.0, 2.0], overrides=FAST, out=tmp_path)
    for key in ("n_stable", "n_saddle", "n_unstable", "n_marginal", "n_matched"):
        assert isinstance(m[key], int), key
    for key in ("stable_precision", "stable_recall", "best_q", "max_rel_error"):
        assert isinstance(m[key], float), key
    assert (m["task"], m["method"], m["seed"], m["target_seed"]) == ("linear-rnn", "fixed-points", 2, 2)
    assert m["max_rel_error"] <= 1e-6
    assert json.loads((tmp_path / "metrics.json").read_text()) == m
    cfg = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert cfg["method_config"]["inputs"] == [[0.5, -1.0, 2.0]] and cfg["method_config"]["n_starts"] == 32
    assert cfg["config_hash"] == m["config_hash"]
    tensors = load_file(str(tmp_path / "tensors.safetensors"))
    assert tensors["input0.points"].shape == (1, 16)
    assert (tmp_path / "figures" / "fixed_points.png").stat().st_size > 1000


def test_target_seed_is_set_on_its_own() -> None:
    m = run_fixed_points("linear-rnn", 0, None, [*FAST, "target_seed=3"], None)
    assert (m["seed"], m["target_seed"]) == (0, 3)


def test_a_saved_recurrent_module_is_a_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = nn.GRU(2, 4, batch_first=True)
    torch.save(net, tmp_path / "gru.pt")
    m = run_fixed_points(str(tmp_path / "gru.pt"), 0, None, FAST, None)
    assert m["n_stable"] + m["n_saddle"] + m["n_unstable"] + m["n_marginal"] >= 1
    assert "stable_precision" not in m


def test_user_errors_are_one_line(tmp_path: Path) -> None:
    torch.save(nn.Sequential(nn.Linear(3, 3)), tmp_path / "mlp.pt")
    cases: list[tuple[type[Exception], str, dict[str, object]]] = [
        (ValueError, "not recurrent", {"task_name_or_checkpoint": str(tmp_path / "mlp.pt")}),
        (ValueError, "not recurrent", {"task_name_or_checkpoint": "tms-5-2"}),
        (KeyError, "unknown task or checkpoint", {"task_name_or_checkpoint": "no-such-task"}),
        (ValueError, "inputs of size 3", {"task_name_or_checkpoint": "linear-rnn", "input": [1.0]}),
        (ConfigError, "unknown setting", {"task_name_or_checkpoint": "linear-rnn", "overrides": ["bogus=1"]}),
    ]
    for exc, text, kwargs in cases:
        with pytest.raises(exc, match=text) as info:
            run_fixed_points(**{"seed": 0, "input": None, "overrides": FAST, "out": None, **kwargs})  # type: ignore[arg-type]
        assert "\n" not in str(info.value)


def test_nothing_found_says_so_with_the_best_q() -> None:
    with pytest.raises(NoFixedPointsError, match=r"no fixed or slow points found .* best q reached") as info:
        run_fixed_points("linear-rnn", 0, None, [*FAST, "q_slow=0"], None)
    assert "\n" not in str(info.value)


def test_a_cached_target_directory_is_a_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mechscope.zoo.cache import target_path
    from mechscope.zoo.rnn_tasks import FlipFlopConfig, FlipFlopTask

    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path))
    task = FlipFlopTask(FlipFlopConfig(cell="lstm", hidden_size=4, steps=2, max_attempts=1, hold_steps=2))
    task.make_target(0)
    m = run_fixed_points(str(target_path(task.name, task.config, 0)), 0, None, FAST, None)
    assert m["task"] == "flipflop-3bit"
    assert 0.0 <= m["stable_recall"] <= 1.0
