"""`--backend ray` on a local Ray instance gives the same table as the local backend."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mechscope.bench.grid import plan_bench, run_bench
from mechscope.bench.results import RESULTS


def _plan(out: Path):  # type: ignore[no-untyped-def]
    return plan_bench(out, tasks=["tms-5-2"], methods=["oracle", "random"], seeds=2, sets=["task.steps=100"])


@pytest.mark.slow  # starting Ray takes ~10-30 s
def test_ray_backend_matches_local(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    run_bench(_plan(tmp_path / "local"), workers=1, show=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        run_bench(_plan(tmp_path / "ray"), backend="ray", show=False)
    finally:
        ray.shutdown()
    local = pq.read_table(tmp_path / "local" / RESULTS).drop_columns(["wall_s", "peak_mem_mb"])
    remote = pq.read_table(tmp_path / "ray" / RESULTS).drop_columns(["wall_s", "peak_mem_mb"])
    assert remote.to_pylist() == local.to_pylist()
    assert (tmp_path / "ray" / "runs" / "tms-5-2" / "oracle" / "seed-1" / "metrics.json").exists()
