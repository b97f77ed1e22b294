"""The `mechscope` command: listings, `decompose` run dirs and `--json`, one-line user errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from mechscope.cli import app

NullPaths = Callable[[object], list[str]]


@pytest.fixture(autouse=True)
def _private_cache(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path_factory.getbasetemp() / "cli-cache"))


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        app(args)
    out, err = capsys.readouterr()
    code = exit_.value.code
    return (code if isinstance(code, int) else 1), out, err


def test_tasks_and_methods_list_one_line_each(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["tasks"], capsys)
    assert code == 0
    assert any(line.startswith("tms-5-2 ") for line in out.splitlines())
    code, out, _ = run(["methods"], capsys)
    names = [line.split()[0] for line in out.splitlines()]
    assert code == 0 and {"oracle", "random", "fixed-points"} <= set(names)


def test_decompose_json_and_run_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "run"
    code, out, _ = run(["decompose", "tms-5-2", "oracle", "--seed", "1", "--set", "task.steps=100",
                        "--set", "target_seed=2", "--out", str(out_dir), "--json"], capsys)
    assert code == 0
    metrics = json.loads(out)  # stdout holds the metrics JSON and nothing else
    assert (metrics["task"], metrics["method"], metrics["seed"], metrics["target_seed"]) == ("tms-5-2", "oracle", 1, 2)
    assert metrics["mmcs"] == pytest.approx(1.0)
    assert metrics["wall_s"] >= 0 and metrics["peak_mem_mb"] > 0
    assert json.loads((out_dir / "metrics.json").read_text()) == metrics
    config = yaml.safe_load((out_dir / "config.yaml").read_text())
    assert config["task_config"]["steps"] == 100 and config["target_seed"] == 2
    assert (out_dir / "decomposition" / "components.safetensors").exists()
    assert (out_dir / "tensors.safetensors").exists()
    assert list((out_dir / "figures").glob("*.png"))


def test_fixed_points_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["fixed-points", "linear-rnn", "--set", "n_starts=64", "--out", str(tmp_path / "fp"), "--json"],
                       capsys)
    assert code == 0
    metrics = json.loads(out)
    # A stable linear RNN has exactly one fixed point per input, found to float64 precision.
    assert metrics["n_stable"] == metrics["n_matched"] and metrics["stable_recall"] == 1.0
    assert metrics["max_rel_error"] < 1e-8
    assert (tmp_path / "fp" / "metrics.json").exists()


def test_config_reruns_a_run_bit_identically(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], null_paths: NullPaths
) -> None:
    first, again = tmp_path / "a", tmp_path / "b"
    code, out, _ = run(["decompose", "tms-5-2", "spd", "--seed", "1", "--set", "task.steps=100", "--set",
                        "method.steps=40", "--set", "target_seed=2", "--out", str(first), "--json"], capsys)
    assert code == 0
    a = json.loads(out)
    config = yaml.safe_load((first / "config.yaml").read_text())
    assert null_paths(config) == []  # every setting resolved: what ran, not what a preset would fill in
    assert config["method_config"]["C"] == 20 and config["method_config"]["init"] == "data"
    assert config["config_hash"] == a["config_hash"]
    code, out, _ = run(["decompose", "--config", str(first / "config.yaml"), "--out", str(again), "--json"], capsys)
    assert code == 0
    b = json.loads(out)
    cost = ("wall_s", "peak_mem_mb")
    assert {k: v for k, v in a.items() if k not in cost} == {k: v for k, v in b.items() if k not in cost}
    assert yaml.safe_load((again / "config.yaml").read_text()) == config


def test_out_refuses_a_foreign_directory_unless_forced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "metrics.json").write_text('{"my": "numbers"}')
    (mine / "notes.txt").write_text("keep me")
    args = ["decompose", "tms-5-2", "oracle", "--set", "task.steps=100", "--out", str(mine)]
    code, _, err = run(args, capsys)
    assert code == 2 and "is a non-empty directory that is not a mechscope run dir" in err
    assert (mine / "metrics.json").read_text() == '{"my": "numbers"}'
    code, _, _ = run([*args, "--force"], capsys)
    assert code == 0 and (mine / "notes.txt").read_text() == "keep me"
    assert "config_hash" in json.loads((mine / "metrics.json").read_text())
    code, _, _ = run(args, capsys)  # now a run dir of ours: replaced as a unit
    assert code == 0 and not list(tmp_path.glob(".mine.*"))


def test_decompose_pins_torch_threads(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    import mechscope.bench.run as run_mod

    seen: list[int] = []
    real = run_mod.run_cell

    def spy(*args: object, **kwargs: object) -> dict[str, object]:
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(run_mod, "run_cell", spy)
    code, _, _ = run(["decompose", "tms-5-2", "oracle", "--set", "task.steps=100", "--out", str(tmp_path / "r")],
                     capsys)
    assert code == 0 and seen == [1]


def test_fixed_points_errors_go_through_the_guard(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    code, _, err = run(["fixed-points", str(tmp_path / "junk.pt")], capsys)
    assert code == 2 and err.count("\n") == 1 and "cannot load checkpoint" in err
    code, _, err = run(["fixed-points", "linear-rnn", "--set", "n_starts=8", "--set", "max_iters=5",
                        "--set", "q_slow=0"], capsys)
    assert code == 1 and err.count("\n") == 1 and "no fixed or slow points found" in err
    code, _, err = run(["fixed-points", "nope-task"], capsys)
    assert code == 2 and "unknown task or checkpoint 'nope-task'" in err


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["decompose", "tms-9-9", "oracle"], "unknown task 'tms-9-9'; available: tms-5-2"),
        (["decompose", "tms-5-2", "nope"], "unknown method 'nope'; available: "),
        (["decompose", "tms-5-2", "oracle", "--set", "lr=fast"], "bad value for task 'tms-5-2' setting 'lr'"),
        (["decompose", "tms-5-2", "oracle", "--set", "bogus=1"], "unknown setting 'bogus'; allowed: "),
        (["decompose", "tms-5-2", "oracle", "--steps", "10"], "has no 'steps' setting"),
        (["decompose", "tms-5-2", "oracle", "--device", "tpu9"], "unknown device 'tpu9'"),
        (["decompose", "tms-5-2", "oracle", "--out", "/proc/nope/run"], "is not a writable directory"),
        (["decompose", "linear-rnn", "oracle"], "does not apply to task 'linear-rnn'"),
        (["bench", "--preset", "huge"], "unknown preset 'huge'; available: quick, full, stress"),
        (["bench", "--seeds", "0"], "--seeds must be a positive number"),
        (["bench", "--methods", "oracle,bogus"], "unknown method 'bogus'"),
        (["bench", "--backend", "slurm"], "unknown backend 'slurm'; available: local, ray"),
        (["report", "/nonexistent-bench"], "no results.parquet in '/nonexistent-bench'"),
        (["decompose", "tms-5-2"], "decompose needs TASK and METHOD"),
        (["fixed-points", "tms-5-2"], "task 'tms-5-2' is not recurrent"),
        (["fixed-points", "linear-rnn", "--input", "1,x"], "--input expects comma-separated numbers"),
        (["fixed-points", "linear-rnn", "--set", "n_starts=lots"], "bad value for method 'fixed-points' setting 'n_starts'"),
    ],
)
def test_user_errors_are_one_line_exit_2(args: list[str], needle: str, capsys: pytest.CaptureFixture[str],
                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, _out, err = run(args, capsys)
    assert code == 2
    assert needle in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "mechscope-bench").exists() and not (tmp_path / "mechscope-runs").exists()
