"""Re-score a bench's finished cells from their saved decompositions, without refitting.

A fix to the scorer or to a task's evaluation sets (synth-sae-bench's `onehot` set, the sign-aware
activation matching) makes every stored number stale but no fit: `mechscope bench --rescore`
re-scores each finished cell's `decomposition/` with the current scorer and rewrites its
metrics.json (the fit's own keys — samples_seen, wall_s, peak_mem_mb, config_hash — kept, and
`rescored` set to true), matches.json, tensors, figures and its row of the table. Cells that were
not finished are left for a normal run; analyses without a decomposition (the dynamics family) are
kept as they are.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from mechscope.bench.grid import Bench, bench_lock, record
from mechscope.bench.progress import BenchProgress
from mechscope.bench.results import RESULTS, write_results
from mechscope.bench.run import (
    Cell,
    finish_run_dir,
    finished_metrics,
    make_target,
    plain,
    score_decomposition,
)
from mechscope.decompose.base import load_decomposition

FIT_KEYS = ("samples_seen", "wall_s", "peak_mem_mb", "config_hash")
"""What the fit measured: kept from the stored metrics.json, whatever the scorer says now."""


def rescore_run_dir(cell: Cell, run_dir: Path) -> dict[str, Any] | None:
    """The cell's new metrics.json body after re-scoring its saved decomposition in place, or
    None when there is nothing to re-score (unfinished, n/a, or no decomposition was saved)."""
    stored = finished_metrics(run_dir, cell.config_hash)
    if stored is None or stored.get("status") != "ok" or not (run_dir / "decomposition").is_dir():
        return None
    target = make_target(cell).to(cell.device)
    decomposition = load_decomposition(run_dir / "decomposition", target)
    work = run_dir.parent / f".{run_dir.name}.rescore"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(run_dir, work)
    body, tensors = score_decomposition(cell, target, decomposition, work)
    head = {k: stored[k] for k in ("task", "method", "seed", "target_seed") if k in stored}
    metrics = plain({**head, "status": "ok", **body, **{k: stored[k] for k in FIT_KEYS if k in stored},
                     "rescored": True})
    finish_run_dir(work, run_dir, metrics, tensors)
    return metrics


def rescore_bench(bench: Bench, show: bool = True) -> Path:
    """Re-score every finished cell of the plan (one process: scoring is cheap next to a fit)."""
    finished = [c for c in bench.cells if c.key in bench.rows]
    progress = BenchProgress(total=len(finished), done=0, show=show)
    with bench_lock(bench.out), progress, torch.no_grad():
        for cell in finished:
            progress.start(0, f"rescore {cell.label}")
            metrics = rescore_run_dir(cell.cell, cell.run_dir)
            if metrics is not None:
                record(bench, cell, metrics)
            progress.cell_done()
        write_results(bench.out / RESULTS, bench.table_rows())
    return bench.out / RESULTS
