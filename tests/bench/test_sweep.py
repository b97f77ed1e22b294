"""The knob-sweep axis: cell expansion, the `knob` columns, resume of swept cells, the stress preset."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mechscope.bench.grid import plan_bench, run_bench
from mechscope.bench.presets import PRESETS, Preset, Sweep
from mechscope.bench.results import RESULTS, read_results, write_results
from mechscope.config import config_hash

SWEPT = Preset("swept", "test", ("stress-iid", "stress-iid-control"), seeds=2,
               sets=(("*", "*", ("method.steps=30",)),),
               sweeps=(Sweep("*", "sae-topk", "method.k", ("1", "2", "4"), default="2"),),
               default_knob_only=("*-control",))


def test_sweep_expands_cells_per_knob_value(tmp_path: Path) -> None:
    plan = plan_bench(tmp_path, SWEPT, methods=["oracle", "sae-topk"])
    keys = [c.key for c in plan.cells]
    assert keys == [
        ("stress-iid", "oracle", 0, ""), ("stress-iid", "oracle", 1, ""),
        *[("stress-iid", "sae-topk", s, f"k={k}") for k in (1, 2, 4) for s in (0, 1)],
        ("stress-iid-control", "oracle", 0, ""), ("stress-iid-control", "oracle", 1, ""),
        ("stress-iid-control", "sae-topk", 0, "k=2"), ("stress-iid-control", "sae-topk", 1, "k=2"),
    ]
    by_key = {c.key: c for c in plan.cells}
    four = by_key[("stress-iid", "sae-topk", 1, "k=4")]
    assert four.run_dir == tmp_path / "runs" / "stress-iid" / "sae-topk@k=4" / "seed-1"
    assert four.cell.method_config.k == 4  # type: ignore[attr-defined]
    assert four.knob.default is False and by_key[("stress-iid", "sae-topk", 1, "k=2")].knob.default is True
    assert by_key[("stress-iid", "oracle", 0, "")].run_dir == tmp_path / "runs" / "stress-iid" / "oracle" / "seed-0"
    # The knob is part of the resolved config, so each knob value has its own hash.
    hashes = {by_key[("stress-iid", "sae-topk", 0, f"k={k}")].cell.config_hash for k in (1, 2, 4)}
    assert len(hashes) == 3
    assert "sae-topk@k=4" in four.label or "k=4" in four.label


def test_presets_without_sweeps_keep_their_cells(tmp_path: Path) -> None:
    plan = plan_bench(tmp_path, "quick", tasks=["tms-5-2", "linear-rnn"], methods=["oracle", "sae-topk"], seeds=1)
    assert [c.key[3] for c in plan.cells] == [""] * 4
    for c in plan.cells:
        assert c.run_dir == tmp_path / "runs" / c.key[0] / c.key[1] / "seed-0"
        assert c.cell.config_hash == config_hash(c.cell.resolved_config())
        assert c.row({"task": c.key[0], "method": c.key[1], "seed": 0, "target_seed": 0})["knob"] == ""


def test_stress_preset_plans_the_issue9_grid(tmp_path: Path) -> None:
    preset = PRESETS["stress"]
    plan = plan_bench(tmp_path, "stress")
    tasks = list(dict.fromkeys(c.key[0] for c in plan.cells))
    assert "synth-sae-bench-16k" not in tasks
    for t in [t for t in tasks if t.startswith("stress-") and not t.endswith("-control")]:
        assert f"{t}-control" in tasks
    for c in plan.cells:
        assert c.key[2] < preset.seeds
        if c.key[0].endswith("-control"):
            assert c.knob.label == "" or c.knob.default, c.key  # controls: the default knob only
        if c.key[0].startswith("stress-overcomplete") and c.cell.na_reason is None:
            size = getattr(c.cell.method_config, "n_latents", None) or getattr(c.cell.method_config, "C", None)
            assert c.key[1] in ("oracle", "random") or (size is not None and size < 80), c.key
    swept = {(c.key[0], c.key[1]) for c in plan.cells if c.knob.label and not c.knob.default}
    for method in ("sae-topk", "sae-batchtopk", "sae-relu", "sae-jumprelu", "spd"):
        assert ("stress-iid", method) in swept
    assert {c.key[1] for c in plan.cells if c.cell.na_reason is not None} >= {"fixed-points", "transcoder-topk"}


def test_knob_columns_and_resume_of_a_swept_cell(tmp_path: Path) -> None:
    preset = Preset("two", "test", ("stress-iid",), seeds=1, sets=(("*", "*", ("method.steps=30",)),),
                    sweeps=(Sweep("*", "sae-topk", "method.k", ("1", "2"), default="2"),))
    plan = plan_bench(tmp_path, preset, methods=["sae-topk"])
    run_bench(plan, workers=1, show=False)
    table = pq.read_table(tmp_path / RESULTS)
    assert table.column_names[6:8] == ["knob", "knob_default"]
    assert table.column("knob").to_pylist() == ["k=1", "k=2"]
    assert table.column("knob_default").to_pylist() == [False, True]
    rows = read_results(tmp_path / RESULTS)
    assert rows[0]["mmcs"] != rows[1]["mmcs"]

    # Killed after k=1's run dir finished but before the table got its row: found from the run dir.
    write_results(tmp_path / RESULTS, rows[1:])
    again = plan_bench(tmp_path, preset, methods=["sae-topk"])
    assert again.pending == []
    assert again.table_rows() == rows

    # k=1 unfinished: only that cell reruns, k=2's run dir is untouched, the numbers are the same.
    k2 = tmp_path / "runs" / "stress-iid" / "sae-topk@k=2" / "seed-0" / "metrics.json"
    stamp = k2.stat().st_mtime_ns
    (tmp_path / "runs" / "stress-iid" / "sae-topk@k=1" / "seed-0" / "metrics.json").unlink()
    again = plan_bench(tmp_path, preset, methods=["sae-topk"])
    assert [c.key for c in again.pending] == [("stress-iid", "sae-topk", 0, "k=1")]
    run_bench(again, workers=1, show=False)
    assert k2.stat().st_mtime_ns == stamp
    rerun = read_results(tmp_path / RESULTS)
    drop = ("wall_s", "peak_mem_mb")
    assert [{k: v for k, v in r.items() if k not in drop} for r in rerun] == \
        [{k: v for k, v in r.items() if k not in drop} for r in rows]


def test_sweep_default_must_be_one_of_its_values() -> None:
    with pytest.raises(ValueError, match="default"):
        Sweep("*", "sae-topk", "method.k", ("1", "2"), default="3")
