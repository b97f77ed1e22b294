"""One cell: resolve a (task, method, seed) request, make the target, fit, score, write a run dir.

`mechscope decompose` runs one cell; `mechscope bench` runs a grid of them. Both go through

    request = CellRequest("tms-5-2", "oracle", seed=0, sets=("target_seed=3",))
    cell = resolve(request)               # validates everything; raises ConfigError, does no work
    metrics = run_cell(cell, run_dir)      # trains/loads the target, fits, scores, writes run_dir

A run directory holds `config.yaml` (the full resolved config), `decomposition/`, `tensors.safetensors`
(`Score.tensors`, the method's `extra_tensors`, and the directions the report draws),
`matches.json`, `figures/` and — written last, atomically, so its presence marks a finished cell —
`metrics.json`. A task × method pair that makes no sense gets a run dir whose metrics.json has
`status: "n/a"` and the reason; the bench turns it into an `n/a` row.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import save_file
from torch import Tensor

from mechscope.config import Config, ConfigError, config_hash, split_overrides, with_overrides
from mechscope.core import Task
from mechscope.decompose.registry import METHODS, FitContext, MethodSpec, fit_blind, get_method
from mechscope.zoo import TASKS, get_task

FIXED_POINTS = "fixed-points"
"""The bench's name for the fixed-point analysis: the one 'method' of dynamics tasks."""

StageProgress = Callable[[str, int, int], None]
"""`progress(stage, done, total)`; stage is "target", "fit" or "score"."""


def no_stage_progress(stage: str, done: int, total: int) -> None:
    """Silent progress."""


@dataclass(frozen=True)
class CellRequest:
    """What the user asked for: names and raw `--set KEY=VALUE` strings, not yet validated."""

    task: str
    method: str
    seed: int = 0
    sets: tuple[str, ...] = ()
    steps: int | None = None
    device: str = "cpu"
    preset_sets: tuple[str, ...] = ()
    """Soft `task.KEY=VALUE` / `method.KEY=VALUE` settings from a bench preset: each applies only
    where that config has the field; `sets` win over them."""


@dataclass
class Cell:
    """A resolved cell: configs validated, target seed settled, hash computed."""

    task: Task
    method: str
    spec: MethodSpec | None
    """None for `fixed-points` (the dynamics analysis is not a registered decomposition method)."""
    method_config: Config
    """The method's config; for `fixed-points`, the finder's (`FinderConfig`)."""
    seed: int
    target_seed: int
    device: str
    na_reason: str | None = None
    config_hash: str = ""

    @property
    def task_name(self) -> str:
        return self.task.name

    def resolved_config(self) -> dict[str, Any]:
        """The full resolved config, as written to config.yaml and hashed into `config_hash`."""
        return {
            "task": self.task.name,
            "method": self.method,
            "seed": self.seed,
            "target_seed": self.target_seed,
            "task_config": self.task.config.model_dump(mode="json"),
            "method_config": self.method_config.model_dump(mode="json"),
        }


def method_names() -> list[str]:
    """Every method the bench knows: the registered decomposition methods plus `fixed-points`."""
    import mechscope.decompose  # noqa: F401  (fills the registry)

    return [*sorted(METHODS), FIXED_POINTS]


def check_task(name: str) -> None:
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; available: {', '.join(TASKS)}")


def check_method(name: str) -> None:
    names = method_names()
    if name not in names:
        raise ConfigError(f"unknown method {name!r}; available: {', '.join(names)}")


def resolve(request: CellRequest) -> Cell:
    """Validate a request into a Cell. Every user error is a one-line `ConfigError`; no work is done."""
    check_task(request.task)
    check_method(request.method)
    if request.seed < 0:
        raise ConfigError(f"--seed must be ≥ 0, got {request.seed}")
    task = get_task(request.task)
    task_fields = set(type(task.config).model_fields)
    spec: MethodSpec | None = None
    if request.method == FIXED_POINTS:
        from mechscope.dynamics.finder import FinderConfig

        method_config: Config = FinderConfig()
    else:
        spec = get_method(request.method)
        method_config = spec.Cfg()
    method_fields = set(type(method_config).model_fields)
    soft = [p for p in request.preset_sets if _has_field(p, task_fields, method_fields)]
    task_sets, method_sets, run_sets = split_overrides([*soft, *request.sets], task_fields, method_fields)
    if request.steps is not None:
        if request.steps <= 0:
            raise ConfigError(f"--steps must be > 0, got {request.steps}")
        if "steps" not in method_fields:
            raise ConfigError(f"method {request.method!r} has no 'steps' setting; allowed: {', '.join(sorted(method_fields))}")
        method_sets["steps"] = str(request.steps)
    task = with_task_config(task, with_overrides(task.config, task_sets, f"task {task.name!r}"))
    method_config = with_overrides(method_config, method_sets, f"method {request.method!r}")
    target_seed = request.seed
    if "target_seed" in run_sets:
        raw = run_sets["target_seed"]
        if not raw.strip().isdigit():
            raise ConfigError(f"bad value for target_seed: {raw!r} (expected an integer ≥ 0)")
        target_seed = int(raw)
    cell = Cell(task, request.method, spec, method_config, request.seed, target_seed, request.device)
    cell.na_reason = not_applicable(cell)
    cell.config_hash = config_hash(cell.resolved_config())
    return cell


def _has_field(pair: str, task_fields: set[str], method_fields: set[str]) -> bool:
    key = pair.split("=", 1)[0].strip()
    if key == "target_seed":
        return True
    scope, _, name = key.partition(".")
    return (scope == "task" and name in task_fields) or (scope == "method" and name in method_fields)


def with_task_config(task: Task, config: Config) -> Task:
    """The same task with another config: tasks read `self.config` lazily, so a copy suffices."""
    if config == task.config:
        return task
    new = type(task).__new__(type(task))
    new.__dict__.update(task.__dict__)
    new.config = config
    return new


def not_applicable(cell: Cell) -> str | None:
    """Why the pair makes no sense (the cell is `n/a`), or None."""
    if cell.method == FIXED_POINTS:
        return None if cell.task.kind == "dynamics" else "fixed-point analysis needs a recurrent (dynamics) task"
    if cell.task.kind == "dynamics":
        return "a decomposition method does not apply to a fixed-point (dynamics) task"
    assert cell.spec is not None
    return cell.spec.applies_to(cell.task)


# --- running -------------------------------------------------------------------------------


def make_target(cell: Cell, progress: StageProgress = no_stage_progress) -> torch.nn.Module:
    """Train (or load from the cache) the cell's target; seeded so a resumed bench is identical."""
    torch.manual_seed(cell.target_seed)
    return cell.task.make_target(cell.target_seed, lambda d, t: progress("target", d, t))


def run_cell(cell: Cell, run_dir: str | Path, progress: StageProgress = no_stage_progress) -> dict[str, Any]:
    """Run one cell into `run_dir` and return its metrics.json body."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _atomic_text(run_dir / "config.yaml", yaml.safe_dump({**cell.resolved_config(), "config_hash": cell.config_hash,
                                                           "device": cell.device}, sort_keys=False))
    head = {"task": cell.task.name, "method": cell.method, "seed": cell.seed, "target_seed": cell.target_seed}
    if cell.na_reason is not None:
        metrics = {**head, "status": "n/a", "reason": cell.na_reason}
        _atomic_text(run_dir / "metrics.json", json.dumps(metrics, indent=2))
        return metrics
    target = make_target(cell, progress)
    if cell.method == FIXED_POINTS:
        body, wall, peak = _run_fixed_points(cell, target, run_dir, progress)
        tensors: dict[str, Tensor] = {}
    else:
        body, tensors, wall, peak = _run_decomposition(cell, target, run_dir, progress)
    metrics = {**head, "status": "ok", **body, "wall_s": wall, "peak_mem_mb": peak}
    if tensors:
        save_file({k: v.detach().float().contiguous().cpu() for k, v in tensors.items()},
                  str(run_dir / "tensors.safetensors"))
        from mechscope.report.figures import run_figures

        run_figures(tensors, run_dir / "figures")
    _atomic_text(run_dir / "metrics.json", json.dumps(plain(metrics), indent=2))
    return plain(metrics)


def _run_decomposition(
    cell: Cell, target: torch.nn.Module, run_dir: Path, progress: StageProgress
) -> tuple[dict[str, Any], dict[str, Tensor], float, float]:
    from mechscope.metrics import score

    assert cell.spec is not None and cell.method_config is not None
    target = target.to(cell.device)
    ctx = FitContext(seed=cell.seed, device=cell.device, progress=lambda d, t: progress("fit", d, t),
                     checkpoint_dir=str(run_dir / "checkpoints"))
    torch.manual_seed(cell.seed)
    with PeakMemory(cell.device) as mem:
        start = time.perf_counter()
        decomposition = fit_blind(cell.spec, target, cell.task, cell.method_config, ctx)
        wall = time.perf_counter() - start
    decomposition.save(run_dir / "decomposition")
    progress("score", 0, 1)
    truth = cell.task.ground_truth(target)
    result = score(decomposition, cell.task, truth)
    body = dict(result.metrics)
    tensors = dict(result.tensors)
    if hasattr(decomposition, "extra_metrics"):
        body.update(decomposition.extra_metrics(cell.task, truth))
    if hasattr(decomposition, "extra_tensors"):
        takes_truth = len(inspect.signature(decomposition.extra_tensors).parameters) >= 2
        extra = decomposition.extra_tensors(cell.task, truth) if takes_truth else decomposition.extra_tensors(cell.task)
        tensors.update(extra)
    tensors.update(report_tensors(decomposition, truth))
    matches = [m.__dict__ for m in result.matches]
    mechanisms = [{"name": m.name, "space": m.space, "site": m.site, "rank": m.rank, "rule": m.rule,
                   "feature": m.feature} for m in truth.mechanisms]
    _atomic_text(run_dir / "matches.json", json.dumps(
        {"fire_threshold": decomposition.fire_threshold, "n_features": truth.n_features,
         "represented": truth.represented, "mechanisms": mechanisms, "matches": plain(matches)}, indent=2))
    progress("score", 1, 1)
    return body, tensors, wall, mem.peak_mb


def report_tensors(decomposition: Any, truth: Any, max_numel: int = 2_000_000) -> dict[str, Tensor]:
    """Activation-space directions of the truth and the method, kept for the report's figures."""
    out: dict[str, Tensor] = {}
    for site in truth.sites("activation"):
        mechs = truth.in_space("activation", site)
        if site not in decomposition.sites or not mechs:
            continue
        found = decomposition.directions(site, "activation")
        if found is None or found.numel() > max_numel:
            continue
        out[f"true_directions.activation.{site}"] = torch.stack([m.direction for m in mechs])
        out[f"directions.activation.{site}"] = found
    return out


def _run_fixed_points(
    cell: Cell, target: torch.nn.Module, run_dir: Path, progress: StageProgress
) -> tuple[dict[str, Any], float, float]:
    """The dynamics engineer's `run_fixed_points`, handed the fully resolved configs as settings.

    It writes its own run files; they go to a scratch folder and are moved in (its tensors, its
    figure, its config as `fixed_points.yaml`) so that our `config.yaml`/`metrics.json` stay the
    bench's completion marks."""
    from mechscope.dynamics.command import run_fixed_points

    sets = [f"task.{k}={json.dumps(v)}" for k, v in cell.task.config.model_dump(mode="json").items()]
    sets += [f"method.{k}={json.dumps(v)}" for k, v in cell.method_config.model_dump(mode="json").items()]
    sets.append(f"target_seed={cell.target_seed}")
    scratch = Path(tempfile.mkdtemp(dir=run_dir, prefix=".fixed-points."))
    torch.manual_seed(cell.seed)
    progress("fit", 0, 1)
    with PeakMemory(cell.device) as mem:
        start = time.perf_counter()
        body = run_fixed_points(cell.task.name, seed=cell.seed, overrides=sets, out=scratch)
        wall = time.perf_counter() - start
    progress("fit", 1, 1)
    (run_dir / "figures").mkdir(exist_ok=True)
    moves = {"fixed_points.safetensors": run_dir / "fixed_points.safetensors",
             "fixed_points.png": run_dir / "figures" / "fixed_points.png",
             "config.yaml": run_dir / "fixed_points.yaml"}
    for name, dest in moves.items():
        if (scratch / name).exists():
            os.replace(scratch / name, dest)
    shutil.rmtree(scratch, ignore_errors=True)
    body = {k: v for k, v in body.items() if k not in ("task", "method", "seed", "target_seed", "wall_s")}
    return body, wall, mem.peak_mb


def run_cell_safely(cell: Cell, run_dir: str | Path, progress: StageProgress = no_stage_progress) -> dict[str, Any]:
    """`run_cell`, but a crash becomes a `failed` metrics body (traceback kept in run_dir/error.txt)."""
    try:
        return run_cell(cell, run_dir, progress)
    except Exception as err:  # a bench keeps going when one cell breaks
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "error.txt").write_text(traceback.format_exc())
        return {"task": cell.task.name, "method": cell.method, "seed": cell.seed,
                "target_seed": cell.target_seed, "status": "failed",
                "error": f"{type(err).__name__}: {err}".splitlines()[0][:300]}


# --- helpers ---------------------------------------------------------------------------------


class PeakMemory:
    """Peak memory of a block: CUDA's allocator peak on a GPU, else the process RSS sampled at 20 ms."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.startswith("cuda"):
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
            return
        self._stop.set()
        assert self._thread is not None
        self._thread.join()

    def _sample(self) -> None:
        while True:
            self.peak_mb = max(self.peak_mb, _rss_mb())
            if self._stop.wait(0.02):
                return


def _rss_mb() -> float:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def plain(value: Any) -> Any:
    """JSON-able copy: tensors and numpy scalars become Python numbers/lists; NaN stays NaN."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, Tensor):
        return plain(value.tolist()) if value.numel() != 1 else plain(value.item())
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value


def _atomic_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
