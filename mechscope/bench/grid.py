"""The grid runner: tasks × methods × seeds into one bench directory, resumable.

    bench = plan_bench("runs/bench", preset="quick", tasks=["tms-5-2"], methods=None, seeds=None)
    run_bench(bench, workers=2)           # trains each target once, then runs the missing cells

Layout of a bench directory: `runs/<task>/<method>/seed-<n>/` (one run dir per cell, as
`mechscope decompose` writes; `runs/<task>/<method>@k=4/seed-<n>/` for a cell of a preset's knob
sweep), `results.parquet` (one row per cell) and `report.html`. A cell is keyed by
(task, method, seed, knob), the knob "" where the preset does not sweep one.

Resume: a cell is finished when its row in `results.parquet` — or, after a kill between a cell
finishing and the table being rewritten, its run dir's `metrics.json` — carries the resolved
config's `config_hash` and status `ok` or `n/a`. Finished cells are never redone; `failed` ones are
retried. Workers pin torch to `threads` threads and every fit is seeded, so a resumed bench
computes the same numbers as an uninterrupted one; they exit when the bench process dies.

One writer at a time: `run_bench` holds a lock on `--out` (`.mechscope-bench.lock`, which names
the holder's pid; the OS drops it when the holder dies), and rows of cells outside its grid that
are already in the table are kept (merged, never overwritten).
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import multiprocessing as mp
import os
import queue as queue_mod
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

from mechscope.bench.budget import budget_sets
from mechscope.bench.convergence import mark_converged
from mechscope.bench.presets import Knob, Preset, get_preset
from mechscope.bench.progress import BenchProgress
from mechscope.bench.results import RESULTS, make_row, method_columns, read_results, write_results
from mechscope.bench.run import (
    Cell,
    CellRequest,
    check_method,
    check_task,
    configs_of,
    finished_metrics,
    make_target,
    method_names,
    resolve,
    run_cell_safely,
)
from mechscope.config import ConfigError, Setting, parse_sets
from mechscope.decompose.registry import is_peer
from mechscope.zoo import TASKS

Key = tuple[str, str, int, str]
"""(task, method, seed, knob label)."""


@dataclass
class PlannedCell:
    request: CellRequest
    cell: Cell
    run_dir: Path
    knob: Knob = field(default_factory=Knob)

    @property
    def key(self) -> Key:
        return (self.request.task, self.request.method, self.request.seed, self.knob.label)

    @property
    def label(self) -> str:
        knob = f" @ {self.knob.label}" if self.knob.label else ""
        return f"{self.request.task} · {self.request.method}{knob} · seed {self.request.seed}"

    def row(self, metrics: dict[str, Any]) -> dict[str, Any]:
        return make_row(metrics, self.cell.config_hash, knob=self.knob.label, knob_default=self.knob.default,
                        method=method_columns(self.cell.method, self.cell.method_config))


@dataclass
class Bench:
    """A validated plan: every cell resolved (so bad arguments fail before any work)."""

    out: Path
    cells: list[PlannedCell]
    threads: int = 1
    rows: dict[Key, dict[str, Any]] = field(default_factory=dict)
    """Finished rows, by cell key (filled from disk by `plan_bench` when resuming)."""
    other_rows: list[dict[str, Any]] = field(default_factory=list)
    """Rows already in the table for cells outside this grid: kept, after the grid's rows."""

    @property
    def pending(self) -> list[PlannedCell]:
        return [c for c in self.cells if c.key not in self.rows]

    def table_rows(self) -> list[dict[str, Any]]:
        """The grid's rows in grid order, then the kept ones; `converged` filled from all of them."""
        return mark_converged([self.rows[c.key] for c in self.cells if c.key in self.rows] + self.other_rows)


def parse_list(value: str | None, what: str) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise ConfigError(f"--{what} needs a comma-separated list, got {value!r}")
    return list(dict.fromkeys(items))  # a name given twice is one grid axis entry


def plan_bench(
    out: str | Path,
    preset: str | Preset = "quick",
    tasks: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
    seeds: int | None = None,
    resume: bool = True,
    device: str = "cpu",
    threads: int = 1,
    sets: Sequence[str] = (),
) -> Bench:
    """Resolve the whole grid; raise `ConfigError` (one line) on any bad argument, before any work."""
    spec = preset if isinstance(preset, Preset) else get_preset(preset)
    if seeds is not None and seeds <= 0:
        raise ConfigError(f"--seeds must be a positive number of seeds (0 … N−1), got {seeds}")
    for name in tasks or ():
        check_task(name)
    for name in methods or ():
        check_method(name)
    task_list = list(dict.fromkeys(tasks)) if tasks else [t for t in spec.tasks if t in TASKS]
    # peers (other libraries' trainers) run only when named: --methods saelens-topk,…
    if methods:
        method_list = list(dict.fromkeys(methods))
    elif spec.methods:
        method_list = [m for m in spec.methods if m in method_names()]
    else:
        method_list = [m for m in method_names() if not is_peer(m)]
    user = parse_sets(sets)
    user_sets = tuple(s.text for s in user)
    out = Path(out)
    cells = []
    for task in task_list:
        for method in method_list:
            for knob in spec.knobs_for(task, method):
                hard = (knob.setting,) if knob.setting else ()
                soft = cell_sets(spec, task, method, hard, user_sets, device)
                folder = f"{method}@{knob.label}" if knob.label else method
                for seed in range(seeds if seeds is not None else spec.seeds_for(task)):
                    request = CellRequest(task, method, seed, sets=hard, device=device, preset_sets=soft)
                    run_dir = out / "runs" / task / folder / f"seed-{seed}"
                    cells.append(PlannedCell(request, resolve(request), run_dir, knob))
    _check_sets_used(user, cells)
    _check_writable(out)
    bench = Bench(out, cells, threads=threads)
    if resume:
        _load_finished(bench)
    return bench


def preset_sets(preset: Preset, task: str, method: str) -> tuple[str, ...]:
    return tuple(s for t, m, sets in preset.sets if fnmatch.fnmatch(task, t) and fnmatch.fnmatch(method, m)
                 for s in sets)


def cell_sets(preset: Preset, task: str, method: str, hard: tuple[str, ...], user_sets: tuple[str, ...],
              device: str = "cpu") -> tuple[str, ...]:
    """A cell's soft settings: the preset's rules, its budget in samples (steps from the batch the
    cell resolves to, `budget.py`), then the user's `--set`s (which win over both)."""
    soft = (*preset_sets(preset, task, method), *user_sets)
    budget = preset.budget_for(task, method)
    if budget is None:
        return soft
    probe = resolve(CellRequest(task, method, 0, sets=hard, device=device, preset_sets=soft))
    return (*preset_sets(preset, task, method), *budget_sets(budget, probe.method_config), *user_sets)


def _check_sets_used(user: tuple[Setting, ...], cells: list[PlannedCell]) -> None:
    """A bench `--set` applies to each cell whose configs have its key; it must apply to some cell."""
    for setting in user:
        hit = False
        for c in cells:
            configs = configs_of(c.cell.task, c.cell.spec)
            scopes = [setting.scope] if setting.scope else list(configs)
            hit = any(sc in configs and setting.key in configs[sc].model_fields for sc in scopes)
            if hit:
                break
        if not hit:
            known = sorted({f"{sc}.{k}" for c in cells for sc, cls in configs_of(c.cell.task, c.cell.spec).items()
                            for k in cls.model_fields})
            raise ConfigError(f"unknown setting {setting.text.split('=', 1)[0]!r} for the tasks and methods of "
                              f"this bench; allowed: {', '.join(known)}")


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        # A name of its own: two runs started at once in one parent directory must not race on it.
        with tempfile.NamedTemporaryFile(dir=out, prefix=".mechscope-write-test-"):
            pass
    except OSError as err:
        raise ConfigError(f"--out {str(out)!r} is not a writable directory ({err.strerror})") from None


def _load_finished(bench: Bench) -> None:
    stored = read_results(bench.out / RESULTS)
    wanted = {c.key: c for c in bench.cells}
    for row in stored:
        key = (row["task"], row["method"], int(row["seed"]), row.get("knob") or "")
        cell = wanted.get(key)
        if cell is None:
            bench.other_rows.append(row)
        elif row["config_hash"] == cell.cell.config_hash and row["status"] in ("ok", "n/a"):
            # tables from before knobs / method columns: what the plan knows about the cell
            bench.rows[key] = {**row, "knob": key[3], "knob_default": cell.knob.default,
                               **method_columns(cell.cell.method, cell.cell.method_config)}
    for cell in bench.cells:
        if cell.key not in bench.rows:
            found = row_from_run_dir(cell)
            if found is not None and found["status"] in ("ok", "n/a"):
                bench.rows[cell.key] = found


def row_from_run_dir(cell: PlannedCell) -> dict[str, Any] | None:
    """The row of the cell's run dir if its metrics.json is complete and carries the cell's hash."""
    metrics = finished_metrics(cell.run_dir, cell.cell.config_hash)
    return cell.row(metrics) if metrics is not None else None


LOCK = ".mechscope-bench.lock"


@contextmanager
def bench_lock(out: Path) -> Iterator[None]:
    """Hold the bench directory's writer lock; a second writer gets a one-line error naming us."""
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise ConfigError(f"bench directory {str(out)!r} is in use by another bench (pid {holder}); "
                              "wait for it or use another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing drops the lock


def _refresh_other_rows(bench: Bench) -> None:
    """Rows another bench added since we planned: keep every row of a cell outside our grid."""
    mine = {c.key for c in bench.cells}
    bench.other_rows = [r for r in read_results(bench.out / RESULTS)
                        if (r["task"], r["method"], int(r["seed"]), r.get("knob") or "") not in mine]


# --- execution --------------------------------------------------------------------------------

def run_bench(bench: Bench, workers: int = 1, backend: str = "local", show: bool = True) -> Path:
    """Run every pending cell; rewrite results.parquet after each. Returns the table's path."""
    progress = BenchProgress(total=len(bench.cells), done=len(bench.cells) - len(bench.pending), show=show)
    with bench_lock(bench.out), progress:
        _refresh_other_rows(bench)
        _finish_na_cells(bench, progress)
        if backend == "ray":
            from mechscope.bench.ray_backend import run_with_ray

            run_with_ray(bench, progress)
        elif workers <= 1 or len(_work_cells(bench)) <= 1:
            _run_inline(bench, progress)
        else:
            _run_pool(bench, workers, progress)
        write_results(bench.out / RESULTS, bench.table_rows())
    return bench.out / RESULTS


def record(bench: Bench, cell: PlannedCell, metrics: dict[str, Any]) -> None:
    """Store a finished cell's row and rewrite the table (atomically)."""
    bench.rows[cell.key] = cell.row(metrics)
    write_results(bench.out / RESULTS, bench.table_rows())


def _finish_na_cells(bench: Bench, progress: BenchProgress) -> None:
    for cell in bench.pending:
        if cell.cell.na_reason is not None:
            metrics = run_cell_safely(cell.cell, cell.run_dir)
            bench.rows[cell.key] = cell.row(metrics)
            progress.cell_done()
    write_results(bench.out / RESULTS, bench.table_rows())


def _work_cells(bench: Bench) -> list[PlannedCell]:
    return [c for c in bench.pending if c.cell.na_reason is None]


def targets_to_train(cells: Sequence[PlannedCell]) -> list[CellRequest]:
    """One request per distinct (task, task config, target seed): targets are trained once, shared."""
    seen: dict[tuple[str, str, int], CellRequest] = {}
    for c in cells:
        key = (c.cell.task.name, c.cell.task.config.model_dump_json(), c.cell.target_seed)
        seen.setdefault(key, c.request)
    return list(seen.values())


@contextmanager
def pinned_threads(threads: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _run_inline(bench: Bench, progress: BenchProgress) -> None:
    cells = _work_cells(bench)
    with pinned_threads(bench.threads):
        for request in targets_to_train(cells):
            progress.start(0, f"target {request.task} (seed {resolve(request).target_seed})")
            # A failure is left for its cells to report, one `failed` row each.
            with contextlib.suppress(Exception):
                make_target(resolve(request), lambda s, d, t: progress.update(0, s, d, t))
        for cell in cells:
            progress.start(0, cell.label)
            metrics = run_cell_safely(cell.cell, cell.run_dir, lambda s, d, t: progress.update(0, s, d, t))
            record(bench, cell, metrics)
            progress.cell_done()
    progress.stop(0)


# Worker processes: spawned (never forked: torch's thread pools do not survive a fork), each pinned
# to `threads` torch threads; progress events go back through one queue.
_QUEUE: Any = None


def _init_worker(events: Any, threads: int, parent: int) -> None:
    global _QUEUE
    _QUEUE = events
    torch.set_num_threads(threads)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    """A worker whose bench died (even by SIGKILL) is re-parented: then it exits at once."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _worker_progress(slot: int) -> Callable[[str, int, int], None]:
    def report(stage: str, done: int, total: int) -> None:
        _QUEUE.put((slot, stage, done, total))

    return report


def _target_job(request: CellRequest, slot: int) -> str | None:
    """Train one target; a failure is left for its cells to report (each as a `failed` row)."""
    try:
        make_target(resolve(request), _worker_progress(slot))
    except Exception as err:
        return f"{type(err).__name__}: {err}"
    return None


def _cell_job(request: CellRequest, run_dir: str, slot: int) -> dict[str, Any]:
    return run_cell_safely(resolve(request), run_dir, _worker_progress(slot))


Job = tuple[str, Callable[[int], "Future[Any]"], PlannedCell | None]
"""(progress label, submit(slot) -> future, the cell it finishes or None for a target)."""


def _run_pool(bench: Bench, workers: int, progress: BenchProgress) -> None:
    cells = _work_cells(bench)
    workers = max(1, min(workers, os.cpu_count() or 1, len(cells)))
    ctx = mp.get_context("spawn")
    events = ctx.Queue()
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(events, bench.threads, os.getpid())) as pool:
        # Phase 1: each distinct target once (cells would otherwise race to train it).
        targets: list[Job] = [
            (f"target {r.task} (seed {resolve(r).target_seed})",
             partial(_submit, pool, _target_job, r), None)
            for r in targets_to_train(cells)
        ]
        _drive(targets, workers, events, progress, bench)
        # Phase 2: the cells.
        jobs: list[Job] = [
            (c.label, partial(_submit, pool, _cell_job, c.request, str(c.run_dir)), c)
            for c in cells
        ]
        _drive(jobs, workers, events, progress, bench)


def _submit(pool: ProcessPoolExecutor, fn: Callable[..., Any], *args: Any) -> Future[Any]:
    """Submit fn(*args, slot): the slot (last argument) tells the worker which progress bar is its own."""
    return pool.submit(fn, *args)


def _drive(todo: list[Job], workers: int, events: Any, progress: BenchProgress, bench: Bench) -> None:
    """Keep each worker slot busy with the next job; draw progress; record finished cells."""
    running: dict[Future[Any], tuple[int, PlannedCell | None]] = {}
    free = list(range(workers))
    todo = list(todo)
    while todo or running:
        while todo and free:
            label, submit, cell = todo.pop(0)
            slot = free.pop(0)
            running[submit(slot)] = (slot, cell)
            progress.start(slot, label)
        done, _ = wait(list(running), timeout=0.2, return_when=FIRST_COMPLETED)
        _drain(events, progress)
        for fut in done:
            slot, cell = running.pop(fut)
            free.append(slot)
            progress.stop(slot)
            result = fut.result()
            if cell is not None:
                record(bench, cell, result)
                progress.cell_done()


def _drain(events: Any, progress: BenchProgress) -> None:
    while True:
        try:
            slot, stage, done, total = events.get_nowait()
        except queue_mod.Empty:
            return
        progress.update(slot, stage, done, total)


__all__ = ["Bench", "PlannedCell", "parse_list", "plan_bench", "run_bench"]
