"""One cell: resolve a (task, method, seed) request, make the target, fit, score, write a run dir.

`mechscope decompose` runs one cell; `mechscope bench` runs a grid of them. Both go through

    request = CellRequest("tms-5-2", "oracle", seed=0, sets=("target_seed=3",))
    cell = resolve(request)               # validates and resolves every setting; does no work
    metrics = run_cell(cell, run_dir)      # trains/loads the target, fits, scores, writes run_dir

Settings are resolved here, once: the task's and the method's class defaults, the method's per-task
table (`Config.task_defaults`), a bench preset's soft rules, a recorded config.yaml (`--config`),
then `--set` — each `--set` value parsed by its config field's own type (`config.assign`). The
result is frozen and complete, so config.yaml records exactly what ran and `config_hash` changes
whenever any setting does.

A run directory holds `config.yaml` (the resolved settings and their hash), `decomposition/`,
`tensors.safetensors` (`Score.tensors`, the method's `extra_tensors`, and the directions the report
draws; a dynamics analysis's points), `matches.json`, `figures/` and `metrics.json` (with `samples_seen`, `budget.py`, and the same
`config_hash`). It is written as a unit: built in `.<name>.partial` beside it (where a long fit's
checkpoints survive a kill), then renamed into place; a cell is finished only when its
metrics.json carries the resolved config's hash. A task × method pair that makes no sense gets a
run dir whose metrics.json has `status: "n/a"` and the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import save_file
from torch import Tensor

from mechscope.bench.budget import samples_seen
from mechscope.config import Config, ConfigError, RunConfig, Scope, assign, config_hash, parse_sets, validated
from mechscope.core import Task
from mechscope.decompose.base import Decomposition
from mechscope.decompose.registry import METHODS, FitContext, MethodSpec, fit_blind, get_method
from mechscope.files import atomic_text
from mechscope.zoo import TASKS, get_task

StageProgress = Callable[[str, int, int], None]
"""`progress(stage, done, total)`; stage is "target", "fit" or "score"."""

MANAGED = ("config.yaml", "metrics.json")
"""A directory holding these (with a `config_hash`) is a mechscope run dir: safe to replace."""


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
    recorded: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Settings read back from a run's config.yaml (`--config`), by scope: above the presets,
    below `sets`."""


@dataclass
class Cell:
    """A resolved cell: every setting validated and resolved, hash computed."""

    task: Task
    method: str
    spec: MethodSpec
    method_config: Config
    seed: int
    run_config: RunConfig
    device: str
    na_reason: str | None = None
    config_hash: str = ""

    @property
    def task_name(self) -> str:
        return self.task.name

    @property
    def target_seed(self) -> int:
        return self.run_config.target_seed

    def resolved_config(self) -> dict[str, Any]:
        """The full resolved config, as written to config.yaml and hashed into `config_hash`."""
        return {
            "task": self.task.name,
            "method": self.method,
            "seed": self.seed,
            "target_seed": self.target_seed,
            **({"pgd_steps": self.run_config.pgd_steps} if "pgd_steps" in self.run_config.model_fields_set else {}),
            "task_config": self.task.config.model_dump(mode="json"),
            "method_config": self.method_config.model_dump(mode="json"),
        }


def method_names() -> list[str]:
    """Every registered method in grid order: by name, the dynamics family's last."""
    import mechscope.decompose  # noqa: F401  (fills the registry)

    return sorted(METHODS, key=lambda n: (METHODS[n].family == "dynamics", n))


def check_task(name: str) -> None:
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; available: {', '.join(TASKS)}")


def check_method(name: str) -> None:
    names = method_names()
    if name not in names:
        raise ConfigError(f"unknown method {name!r}; available: {', '.join(names)}")


def configs_of(task: Task, spec: MethodSpec) -> dict[Scope, type[Config]]:
    """The config classes `--set` keys are looked up in, by scope."""
    return {"task": type(task.config), "method": spec.Cfg, "run": RunConfig}


def resolve(request: CellRequest) -> Cell:
    """Validate a request into a Cell. Every user error is a one-line `ConfigError`; no work is done."""
    check_task(request.task)
    check_method(request.method)
    if request.seed < 0:
        raise ConfigError(f"--seed must be ≥ 0, got {request.seed}")
    task = get_task(request.task)
    spec = get_method(request.method)
    configs = configs_of(task, spec)
    names: dict[Scope, str] = {"task": f"task {task.name!r}", "method": f"method {spec.name!r}", "run": "run"}
    soft = assign(parse_sets(request.preset_sets), configs, names, soft=True)
    hard = assign(parse_sets(request.sets), configs, names)
    if request.steps is not None:
        if request.steps <= 0:
            raise ConfigError(f"--steps must be > 0, got {request.steps}")
        if "steps" not in spec.Cfg.model_fields:
            raise ConfigError(f"method {spec.name!r} has no 'steps' setting; "
                              f"allowed: {', '.join(sorted(spec.Cfg.model_fields))}")
        hard["method"]["steps"] = request.steps
    chosen = {sc: {**soft[sc], **request.recorded.get(sc, {}), **hard[sc]} for sc in configs}
    task = with_task_config(task, validated(type(task.config), {**task.config.model_dump(), **chosen["task"]},
                                            names["task"]))
    method_config = validated(spec.Cfg, chosen["method"], names["method"]).resolved(task)
    run_config = validated(RunConfig, {"target_seed": request.seed, **chosen["run"]}, "run")
    cell = Cell(task, spec.name, spec, method_config, request.seed, run_config, request.device)
    cell.na_reason = not_applicable(cell)
    cell.config_hash = config_hash(cell.resolved_config())
    return cell


def recorded_request(path: Path, sets: tuple[str, ...] = (), device: str | None = None) -> CellRequest:
    """The request that reruns the run whose config.yaml is `path` (`--set` may change it)."""
    try:
        body = yaml.safe_load(path.read_text())
        task, method, seed = str(body["task"]), str(body["method"]), int(body["seed"])
        recorded = {"task": dict(body["task_config"]), "method": dict(body["method_config"]),
                    "run": {"target_seed": int(body["target_seed"]),
                            **({"pgd_steps": int(body["pgd_steps"])} if "pgd_steps" in body else {})}}
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as err:
        why = err.strerror if isinstance(err, OSError) else f"not a mechscope config.yaml ({type(err).__name__})"
        raise ConfigError(f"--config {str(path)!r}: {why}") from None
    return CellRequest(task, method, seed, sets, device=device or str(body.get("device", "cpu")), recorded=recorded)


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
    if cell.task.kind == "dynamics" and cell.spec.family != "dynamics":
        return "a decomposition method does not apply to a fixed-point (dynamics) task"
    return cell.spec.applies_to(cell.task)  # a dynamics method says itself that it needs a recurrent task


# --- running -------------------------------------------------------------------------------


def make_target(cell: Cell, progress: StageProgress = no_stage_progress) -> torch.nn.Module:
    """Train (or load from the cache) the cell's target; seeded so a resumed bench is identical."""
    torch.manual_seed(cell.target_seed)
    return cell.task.make_target(cell.target_seed, lambda d, t: progress("target", d, t))


def is_run_dir(path: Path) -> bool:
    """Whether `path` is a directory mechscope wrote (its config.yaml or metrics.json has a hash)."""
    for name in MANAGED:
        try:
            body = (yaml.safe_load if name.endswith(".yaml") else json.loads)((path / name).read_text())
        except (OSError, ValueError, yaml.YAMLError):
            continue
        if isinstance(body, dict) and "config_hash" in body:
            return True
    return False


def check_run_dir(path: Path, force: bool = False) -> None:
    """`--out` must be new, empty, or a mechscope run dir (replaced); anything else needs `--force`."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out {str(path)!r} is a file, not a directory")
    if path.is_dir() and not force and any(path.iterdir()) and not is_run_dir(path):
        raise ConfigError(f"--out {str(path)!r} is a non-empty directory that is not a mechscope run dir "
                          "(pick another, or add --force to write into it)")


def finished_metrics(run_dir: Path, config_hash_: str) -> dict[str, Any] | None:
    """The run dir's metrics.json if it is complete and was made with this resolved config."""
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(metrics, dict) or metrics.get("config_hash") != config_hash_:
        return None
    return metrics


def run_cell(cell: Cell, run_dir: str | Path, progress: StageProgress = no_stage_progress) -> dict[str, Any]:
    """Run one cell into `run_dir` (written as a unit) and return its metrics.json body."""
    run_dir = Path(run_dir)
    work = run_dir.parent / f".{run_dir.name}.partial"
    work.mkdir(parents=True, exist_ok=True)
    for stale in work.iterdir():  # a killed earlier attempt: keep only its fit checkpoints
        if stale.name != "checkpoints":
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    config = {**cell.resolved_config(), "config_hash": cell.config_hash, "device": cell.device}
    atomic_text(work / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    head = {"task": cell.task.name, "method": cell.method, "seed": cell.seed, "target_seed": cell.target_seed}
    tensors: dict[str, Tensor] = {}
    if cell.na_reason is not None:
        metrics = {**head, "status": "n/a", "reason": cell.na_reason, "config_hash": cell.config_hash}
    else:
        target = make_target(cell, progress)
        body, tensors, wall, peak = _fit_and_score(cell, target, work, progress)
        metrics = plain({**head, "status": "ok", **body, "wall_s": wall, "peak_mem_mb": peak,
                         "config_hash": cell.config_hash})
    finish_run_dir(work, run_dir, metrics, tensors)
    return metrics


def finish_run_dir(work: Path, run_dir: Path, metrics: dict[str, Any], tensors: dict[str, Tensor]) -> None:
    """Write the cell's tensors and, last, its metrics.json into `work`, then move it into place."""
    if tensors:
        save_file({k: v.detach().float().contiguous().cpu() for k, v in tensors.items()},
                  str(work / "tensors.safetensors"))
    atomic_text(work / "metrics.json", json.dumps(metrics, indent=2))
    move_into_place(work, run_dir)


def move_into_place(work: Path, run_dir: Path) -> None:
    """Replace `run_dir` by the finished `work` dir: one rename when it is new or a run dir of
    ours; into a foreign directory (`--force`), file by file with metrics.json last."""
    if run_dir.is_dir() and any(run_dir.iterdir()) and not is_run_dir(run_dir):
        for entry in sorted(work.iterdir(), key=lambda p: p.name == "metrics.json"):
            dest = run_dir / entry.name
            if dest.is_dir() and not dest.is_symlink():
                shutil.rmtree(dest)
            os.replace(entry, dest)
        work.rmdir()
        return
    old = run_dir.parent / f".{run_dir.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if run_dir.exists():
        os.replace(run_dir, old)
    os.replace(work, run_dir)
    shutil.rmtree(old, ignore_errors=True)


def _fit_and_score(
    cell: Cell, target: torch.nn.Module, run_dir: Path, progress: StageProgress
) -> tuple[dict[str, Any], dict[str, Tensor], float, float]:
    target = target.to(cell.device)
    ctx = FitContext(seed=cell.seed, device=cell.device, progress=lambda d, t: progress("fit", d, t),
                     checkpoint_dir=str(run_dir / "checkpoints"))
    torch.manual_seed(cell.seed)
    progress("fit", 0, 1)
    with PeakMemory(cell.device) as mem:
        start = time.perf_counter()
        fitted = fit_blind(cell.spec, target, cell.task, cell.method_config, ctx)
        wall = time.perf_counter() - start
    progress("score", 0, 1)
    if isinstance(fitted, Decomposition):
        body, tensors = score_decomposition(cell, target, fitted, run_dir)
    else:  # an analysis (the dynamics family) scores itself against the task's expected structure
        body, tensors = fitted.evaluate(cell.task, target), fitted.tensors()
        fitted.figures(run_dir / "figures")
    progress("score", 1, 1)
    return {**body, "samples_seen": samples_seen(cell.method_config, fitted)}, tensors, wall, mem.peak_mb


def score_decomposition(
    cell: Cell, target: torch.nn.Module, decomposition: Decomposition, run_dir: Path
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    from mechscope.metrics import score
    from mechscope.report.figures import run_figures

    decomposition.save(run_dir / "decomposition")
    truth = cell.task.ground_truth(target)
    result = score(decomposition, cell.task, truth, pgd_steps=cell.run_config.pgd_steps)
    body = dict(result.metrics)
    tensors = dict(result.tensors)
    if hasattr(decomposition, "extra_metrics"):
        body.update(decomposition.extra_metrics(cell.task, truth))
    if hasattr(decomposition, "extra_tensors"):  # scoring-time tensors (SPD's one-hot CI pattern)
        tensors.update(decomposition.extra_tensors(cell.task, truth))
    tensors.update(report_tensors(decomposition, truth))
    write_matches(run_dir, decomposition, truth, result)
    if tensors:
        run_figures(tensors, run_dir / "figures")
    return body, tensors


def write_matches(run_dir: Path, decomposition: Decomposition, truth: Any, result: Any) -> None:
    """`matches.json`: the true mechanisms and each one's matches (what the report diagnoses)."""
    matches = [m.__dict__ for m in result.matches]
    mechanisms = [{"name": m.name, "space": m.space, "site": m.site, "rank": m.rank, "rule": m.rule,
                   "feature": m.feature} for m in truth.mechanisms]
    atomic_text(run_dir / "matches.json", json.dumps(
        {"fire_threshold": decomposition.fire_threshold, "n_features": truth.n_features,
         "represented": truth.represented, "mechanisms": mechanisms, "matches": plain(matches)}, indent=2))


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
