"""Issue 18 on the run path: no stale resume, one writer per bench dir, merged rows, no orphans,
damaged tables as one-line errors, plain progress off a terminal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from mechscope.bench.grid import bench_lock, parse_list, plan_bench, run_bench
from mechscope.bench.progress import BenchProgress
from mechscope.bench.results import RESULTS, read_results
from mechscope.config import ConfigError

SMALL = ["task.steps=200", "task.batch_size=512", "method.steps=300"]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "mechscope.cli", *args]


def _sets(*extra: str) -> list[str]:
    return [a for s in (*SMALL, *extra) for a in ("--set", s)]


def _app(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """The CLI in-process: (exit code, stderr)."""
    from mechscope.cli import app

    with pytest.raises(SystemExit) as exit_:
        app(args)
    code = exit_.value.code
    return (code if isinstance(code, int) else 1), capsys.readouterr().err


def _numbers(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in ("wall_s", "peak_mem_mb")}


def _wait_for(check: Any, timeout: float = 300.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and not check():
        time.sleep(0.02)


@pytest.mark.slow  # a bench subprocess killed mid-cell, then three short in-process benches: ~40 s
def test_a_killed_rerun_never_pairs_a_new_config_with_old_numbers(tmp_path: Path) -> None:
    out, clean = tmp_path / "b", tmp_path / "clean"
    grid = {"tasks": ["tms-40-10"], "methods": ["sae-topk"], "seeds": 1}
    run_bench(plan_bench(out, **grid, sets=[*SMALL, "method.k=3"]), show=False)  # type: ignore[arg-type]
    k3 = read_results(out / RESULTS)[0]
    # The same bench with k=8, SIGKILLed while its cell is being built, then rerun.
    proc = subprocess.Popen(_cli("bench", "--tasks", "tms-40-10", "--methods", "sae-topk", "--seeds", "1",
                                 *_sets("method.k=8"), "--workers", "1", "--out", str(out)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = out / "runs" / "tms-40-10" / "sae-topk" / ".seed-0.partial"
    _wait_for(lambda: partial.exists() or proc.poll() is not None)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_bench(plan_bench(out, **grid, sets=[*SMALL, "method.k=8"]), show=False)  # type: ignore[arg-type]
    k8 = read_results(out / RESULTS)[0]
    run_bench(plan_bench(clean, **grid, sets=[*SMALL, "method.k=8"]), show=False)  # type: ignore[arg-type]
    want = read_results(clean / RESULTS)[0]
    assert k8["config_hash"] != k3["config_hash"] and k8["l0"] != k3["l0"]
    assert _numbers(k8) == _numbers(want)
    assert k3["l0"] <= 3.0 < k8["l0"]


def test_a_stale_run_dir_is_not_trusted(tmp_path: Path) -> None:
    """A run dir whose metrics.json lacks (or has another) config hash is redone, not reused."""
    plan = plan_bench(tmp_path, tasks=["tms-5-2"], methods=["oracle"], seeds=1, sets=["task.steps=100"])
    run_bench(plan, show=False)
    metrics = plan.cells[0].run_dir / "metrics.json"
    metrics.write_text(metrics.read_text().replace(plan.cells[0].cell.config_hash, "000000000000"))
    (tmp_path / RESULTS).unlink()
    again = plan_bench(tmp_path, tasks=["tms-5-2"], methods=["oracle"], seeds=1, sets=["task.steps=100"])
    assert len(again.pending) == 1
    run_bench(again, show=False)
    assert plan.cells[0].cell.config_hash in metrics.read_text()


def test_two_grids_on_one_out_merge_sequentially_and_refuse_concurrently(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = {"tasks": ["tms-5-2"], "methods": ["oracle", "random"], "seeds": 1, "sets": ["task.steps=100"]}
    b = {"tasks": ["tms-5-2"], "methods": ["oracle"], "seeds": 2, "sets": ["task.steps=100"]}
    run_bench(plan_bench(tmp_path, **a), show=False)  # type: ignore[arg-type]
    run_bench(plan_bench(tmp_path, **b), show=False)  # type: ignore[arg-type]
    keys = sorted((r["method"], r["seed"]) for r in read_results(tmp_path / RESULTS))
    assert keys == [("oracle", 0), ("oracle", 1), ("random", 0)]  # b's oracle seed 0 is a's cell: one row
    # A second writer while the first holds the lock: a one-line error naming the holder's pid.
    with bench_lock(tmp_path):
        with pytest.raises(ConfigError, match=rf"in use by another bench \(pid {os.getpid()}\)"):
            run_bench(plan_bench(tmp_path, **b), show=False)  # type: ignore[arg-type]
        code, err = _app(["bench", "--tasks", "tms-5-2", "--methods", "oracle", "--seeds", "1",
                          "--set", "task.steps=100", "--out", str(tmp_path)], capsys)
    assert code == 2 and f"pid {os.getpid()}" in err and err.count("\n") == 1
    assert len(read_results(tmp_path / RESULTS)) == 3


@pytest.mark.slow  # two bench subprocesses on one --out at once: ~40 s
def test_concurrent_benches_lose_no_row(tmp_path: Path) -> None:
    first = subprocess.Popen(_cli("bench", "--tasks", "tms-5-2", "--methods", "oracle,sae-topk", "--seeds", "2",
                                  "--set", "task.steps=100", "--set", "method.steps=4000", "--workers", "1",
                                  "--out", str(tmp_path)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lock = tmp_path / ".mechscope-bench.lock"
    _wait_for(lambda: lock.exists() and lock.read_text().strip() == str(first.pid))
    second_args = _cli("bench", "--tasks", "tms-5-2-id", "--methods", "oracle", "--seeds", "1",
                       "--set", "task.steps=100", "--out", str(tmp_path))
    second = subprocess.run(second_args, capture_output=True, text=True, timeout=300)
    assert first.wait(timeout=600) == 0
    if second.returncode != 0:  # it ran while the first held the lock: refused, naming the holder
        assert second.returncode == 2 and f"pid {first.pid}" in second.stderr, second.stderr
        subprocess.run(second_args, check=True, capture_output=True, timeout=300)
    rows = read_results(tmp_path / RESULTS)
    assert sorted((r["task"], r["method"], r["seed"]) for r in rows) == [
        ("tms-5-2", "oracle", 0), ("tms-5-2", "oracle", 1), ("tms-5-2", "sae-topk", 0), ("tms-5-2", "sae-topk", 1),
        ("tms-5-2-id", "oracle", 0)]


def _children(pid: int) -> list[int]:
    kids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                kids.append(int(d.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow  # a bench with two workers, SIGKILLed: ~20 s
def test_workers_die_with_the_bench(tmp_path: Path) -> None:
    proc = subprocess.Popen(_cli("bench", "--tasks", "tms-40-10", "--methods", "sae-topk,sae-relu", "--seeds", "1",
                                 "--set", "task.steps=200", "--set", "method.steps=20000", "--workers", "2",
                                 "--out", str(tmp_path)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(lambda: len(_children(proc.pid)) >= 2, timeout=120)
    workers = _children(proc.pid)
    assert workers
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _wait_for(lambda: not any(_alive(w) for w in workers), timeout=15)
    assert not [w for w in workers if _alive(w)]


def test_duplicates_are_merged_and_damaged_tables_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert parse_list("tms-5-2,tms-5-2,oracle", "tasks") == ["tms-5-2", "oracle"]
    plan = plan_bench(tmp_path, tasks=["tms-5-2", "tms-5-2"], methods=["oracle", "oracle"], seeds=1)
    assert len(plan.cells) == 1
    for data in (b"", b"not parquet at all", b"PAR1" + b"\0" * 40):
        (tmp_path / RESULTS).write_bytes(data)
        with pytest.raises(ConfigError, match="is not a readable results table"):
            plan_bench(tmp_path, tasks=["tms-5-2"], methods=["oracle"], seeds=1)
        for args in (["report", str(tmp_path)],
                     ["bench", "--tasks", "tms-5-2", "--methods", "oracle", "--seeds", "1", "--out", str(tmp_path)]):
            code, err = _app(args, capsys)
            assert code == 2 and err.count("\n") == 1 and "not a readable results table" in err, err


def test_progress_is_plain_lines_off_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    with BenchProgress(total=2) as progress:
        progress.start(0, "tms-5-2 · oracle · seed 0")
        progress.update(0, "fit", 10, 10)
        progress.cell_done()
    err = capsys.readouterr().err
    assert "start tms-5-2 · oracle · seed 0" in err and "bench cells 1/2 done" in err and "fit 10/10" in err
    assert "\x1b[" not in err  # no terminal control codes
