"""`mechscope bench --backend ray`: the same cells, run as Ray tasks (for users who outgrow one machine).

Connects to the cluster named by `RAY_ADDRESS` (or starts a local Ray instance). Each cell runs in a
scratch folder on whichever node gets it; its files come back to the driver, which writes the run
directory and the results table — so no shared file system is needed. Targets are trained first,
one Ray task per distinct target; a node that lacks one in its own cache retrains it (same seed,
same weights). Ray is an optional extra: `pip install 'mechscope[ray]'`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mechscope.config import ConfigError

if TYPE_CHECKING:
    from mechscope.bench.grid import Bench
    from mechscope.bench.progress import BenchProgress
    from mechscope.bench.run import CellRequest


def check_ray() -> None:
    """One-line error when Ray is not installed."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ConfigError("--backend ray needs Ray, which is not installed: pip install 'mechscope[ray]'") from None


def _train_target(request: CellRequest, threads: int) -> None:
    import torch

    from mechscope.bench.run import make_target, resolve

    torch.set_num_threads(threads)
    make_target(resolve(request))


def _run_cell(request: CellRequest, threads: int) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Run one cell in a scratch dir; return its metrics and its files (relative path → bytes)."""
    import torch

    from mechscope.bench.run import resolve, run_cell_safely

    torch.set_num_threads(threads)
    scratch = Path(tempfile.mkdtemp(prefix="mechscope-cell-"))
    try:
        metrics = run_cell_safely(resolve(request), scratch)
        files = {str(p.relative_to(scratch)): p.read_bytes() for p in scratch.rglob("*") if p.is_file()}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return metrics, files


def run_with_ray(bench: Bench, progress: BenchProgress) -> None:
    import ray

    from mechscope.bench.grid import record, targets_to_train

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    cells = [c for c in bench.pending if c.cell.na_reason is None]
    train = ray.remote(num_cpus=bench.threads)(_train_target)
    run = ray.remote(num_cpus=bench.threads)(_run_cell)
    progress.start(0, f"training {len(targets_to_train(cells))} targets on Ray")
    ray.get([train.remote(r, bench.threads) for r in targets_to_train(cells)])
    progress.stop(0)
    pending = {run.remote(c.request, bench.threads): c for c in cells}
    progress.start(0, f"{len(pending)} cells running on Ray")
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            cell = pending.pop(ref)
            metrics, files = ray.get(ref)
            _write_unit(cell.run_dir, files)
            record(bench, cell, metrics)
            progress.cell_done()
    progress.stop(0)


def _write_unit(run_dir: Path, files: dict[str, bytes]) -> None:
    """A worker's run dir lands as a unit: rebuilt beside it, then renamed into place."""
    from mechscope.bench.run import move_into_place

    work = run_dir.parent / f".{run_dir.name}.partial"
    shutil.rmtree(work, ignore_errors=True)
    for rel, data in files.items():
        path = work / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    move_into_place(work, run_dir)
