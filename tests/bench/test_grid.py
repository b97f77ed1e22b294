"""The grid runner: kill/resume equality, n/a rows, targets trained once, argument errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mechscope.bench.grid import plan_bench, run_bench
from mechscope.bench.results import RESULTS, read_results
from mechscope.config import ConfigError

# A tiny grid: TMS 40-10 targets trained for 200 steps; oracle and random score in ~1 s per cell.
GRID = ["--tasks", "tms-40-10", "--methods", "oracle,random", "--seeds", "3",
        "--set", "task.steps=200", "--set", "task.batch_size=512", "--workers", "1"]
N_CELLS = 6


def _bench(out: Path) -> list[str]:
    return [sys.executable, "-m", "mechscope.cli", "bench", *GRID, "--out", str(out)]


def _table(path: Path) -> list[dict[str, object]]:
    """The table without the cost columns (timings differ between runs; numbers must not)."""
    rows = pq.read_table(path).drop_columns(["wall_s", "peak_mem_mb"]).to_pylist()
    return rows


@pytest.mark.slow  # three bench subprocesses: ~30 s on an idle 2-core machine
def test_sigkill_then_resume_equals_uninterrupted(tmp_path: Path) -> None:
    env = {**os.environ, "MECHSCOPE_TEST_THREADS": "1"}
    full = tmp_path / "full"
    subprocess.run(_bench(full), env=env, check=True, capture_output=True, timeout=600)

    broken = tmp_path / "broken"
    proc = subprocess.Popen(_bench(broken), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        rows = [r for r in _safe_rows(broken / RESULTS) if r["status"] == "ok"]
        if rows:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = {(r["task"], r["method"], r["seed"]) for r in read_results(broken / RESULTS) if r["status"] == "ok"}
    assert 1 <= len(done_before) < N_CELLS, "the kill must land mid-bench"
    stamps = {k: _metrics_file(broken, k).stat().st_mtime_ns for k in done_before}

    rerun = subprocess.run(_bench(broken), env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    # Finished cells were not redone; the final table equals the uninterrupted one.
    assert {k: _metrics_file(broken, k).stat().st_mtime_ns for k in done_before} == stamps
    assert _table(broken / RESULTS) == _table(full / RESULTS)
    assert len(_table(full / RESULTS)) == N_CELLS


def _safe_rows(path: Path) -> list[dict[str, object]]:
    return read_results(path)  # atomic writes: never a half-written file to choke on


def _metrics_file(bench: Path, key: tuple[object, ...]) -> Path:
    task, method, seed = key
    return bench / "runs" / str(task) / str(method) / f"seed-{seed}" / "metrics.json"


def test_incompatible_pairs_are_na_rows_and_targets_are_shared(tmp_path: Path) -> None:
    plan = plan_bench(tmp_path, tasks=["tms-5-2", "linear-rnn"], methods=["oracle", "fixed-points"], seeds=1,
                      sets=["task.steps=100", "method.n_starts=64"])
    run_bench(plan, workers=2, show=False)  # two spawned worker processes
    rows = {(r["task"], r["method"]): r for r in read_results(tmp_path / RESULTS)}
    assert rows[("tms-5-2", "fixed-points")]["status"] == "n/a"
    assert rows[("linear-rnn", "oracle")]["status"] == "n/a"
    assert rows[("tms-5-2", "oracle")]["status"] == "ok"
    assert rows[("tms-5-2", "oracle")]["mmcs"] == pytest.approx(1.0)
    assert rows[("tms-5-2", "fixed-points")]["mmcs"] is None  # absent, never zero
    assert rows[("linear-rnn", "fixed-points")]["status"] == "ok"
    assert rows[("linear-rnn", "fixed-points")]["stable_recall"] == 1.0
    # Resuming finds everything finished: nothing runs, the table is unchanged.
    again = plan_bench(tmp_path, tasks=["tms-5-2", "linear-rnn"], methods=["oracle", "fixed-points"], seeds=1,
                       sets=["task.steps=100", "method.n_starts=64"])
    assert again.pending == []


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"tasks": ["tms-9-9"]}, "unknown task 'tms-9-9'; available: "),
        ({"methods": ["sae-magic"]}, "unknown method 'sae-magic'; available: "),
        ({"seeds": 0}, "--seeds must be a positive number"),
        ({"preset": "huge"}, "unknown preset 'huge'; available: quick, full, stress"),
        ({"sets": ["nonsense_key=1"], "tasks": ["tms-5-2"]}, "unknown setting 'nonsense_key'"),
        ({"sets": ["task.steps=many"], "tasks": ["tms-5-2"], "methods": ["oracle"]}, "bad value for task"),
    ],
)
def test_bad_grid_arguments_fail_before_any_work(tmp_path: Path, kwargs: dict[str, object], needle: str) -> None:
    out = tmp_path / "bench"
    with pytest.raises(ConfigError) as err:
        plan_bench(out, **kwargs)  # type: ignore[arg-type]
    assert needle in str(err.value)
    assert "\n" not in str(err.value)
    assert not out.exists()
