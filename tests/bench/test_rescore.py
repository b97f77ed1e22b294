"""`mechscope bench --rescore`: stale scores are recomputed from the saved decomposition, the fit's
own measurements are kept, and nothing is refitted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mechscope.bench.grid import plan_bench, run_bench
from mechscope.bench.rescore import rescore_bench
from mechscope.bench.results import RESULTS, read_results

GRID = {"tasks": ["tms-5-2"], "methods": ["sae-topk", "oracle"], "seeds": 1,
        "sets": ["task.steps=100", "method.steps=100"]}


def test_rescore_recomputes_stale_scores_and_keeps_the_fit(tmp_path: Path) -> None:
    run_bench(plan_bench(tmp_path, **GRID), show=False)  # type: ignore[arg-type]
    run_dir = tmp_path / "runs" / "tms-5-2" / "sae-topk" / "seed-0"
    fitted = json.loads((run_dir / "metrics.json").read_text())
    weights = (run_dir / "decomposition" / "components.safetensors").read_bytes()
    stale = {**fitted, "mmcs": 0.123, "activity_f1": 0.0}  # as an older scorer might have left it
    (run_dir / "metrics.json").write_text(json.dumps(stale))
    (run_dir / "matches.json").unlink()

    plan = plan_bench(tmp_path, **GRID)  # type: ignore[arg-type]
    assert plan.pending == []  # the stale cell is finished: a normal run would not touch it
    rescore_bench(plan, show=False)

    now = json.loads((run_dir / "metrics.json").read_text())
    assert now["mmcs"] == pytest.approx(fitted["mmcs"]) and now["activity_f1"] == pytest.approx(fitted["activity_f1"])
    for key in ("samples_seen", "wall_s", "peak_mem_mb", "config_hash"):  # the fit's, not a new one's
        assert now[key] == fitted[key]
    assert now["rescored"] is True and (run_dir / "matches.json").is_file()
    assert (run_dir / "decomposition" / "components.safetensors").read_bytes() == weights  # no refit
    rows = {r["method"]: r for r in read_results(tmp_path / RESULTS)}
    assert rows["sae-topk"]["mmcs"] == pytest.approx(fitted["mmcs"])
    assert rows["oracle"]["mmcs"] == pytest.approx(1.0)
