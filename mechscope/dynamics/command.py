"""`mechscope fixed-points TASK|CHECKPOINT`: the fixed-points method on one target.

    metrics = run_fixed_points("flipflop-3bit", seed=0, input=None, overrides=["task.cell=lstm"], out=Path("run"))

A task name runs the ordinary run path (`bench.run`: resolve, make the target, fit, score, write
the run dir) with the "fixed-points" method, exactly as a bench cell does. A checkpoint — a cached
target directory (its info.json names the task) or a `torch.save`d nn.Module — is analysed
directly: settings from the method's config and table, scored against the task's expected
structure when the checkpoint names one. A run directory holds `config.yaml`, `metrics.json`,
`tensors.safetensors` (the points, their kinds and eigenvalues per input) and
`figures/fixed_points.png`.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import save_file
from torch import nn

from mechscope.config import RunConfig, Scope, assign, config_hash, parse_sets, validated
from mechscope.core import Task, seeded_generator
from mechscope.dynamics.method import FixedPointsConfig, analyse
from mechscope.files import atomic_text
from mechscope.zoo import TASKS, get_task
from mechscope.zoo.cache import load_target

METHOD = "fixed-points"


def dynamics_tasks() -> list[str]:
    return [name for name, make in TASKS.items() if make().kind == "dynamics"]


def run_fixed_points(
    task_name_or_checkpoint: str,
    seed: int = 0,
    input: list[float] | None = None,
    overrides: list[str] | None = None,
    out: Path | None = None,
) -> dict[str, Any]:
    """Find, classify and score the fixed points of a dynamics task's target (or a checkpoint).

    Arguments:
        task_name_or_checkpoint: a dynamics task name (`mechscope tasks`), a cached target
            directory, or a `torch.save`d nn.Module file.
        seed: seeds the finder's starts; the target's seed defaults to it (`target_seed=N` in
            `overrides` sets it on its own).
        input: one constant input [m] to analyse; None uses the task's analysis inputs.
        overrides: `KEY=VALUE` strings for the task config, the method config
            (`FixedPointsConfig`: the finder's settings) or the run (`target_seed`).
        out: the run directory to write, or None to only return the metrics.
    Returns: the metrics dict (also `out/metrics.json`).
    Raises: KeyError (unknown task), ValueError / ConfigError (non-recurrent model, wrong input
        size, bad setting), NoFixedPointsError (nothing below `q_slow`; says the best q reached).
    """
    from mechscope.bench.run import CellRequest, resolve, run_cell

    sets = tuple(overrides or ())
    if input is not None:
        sets += (f"method.inputs={json.dumps([list(input)])}",)
    name = task_name_or_checkpoint
    if name in TASKS:
        task = get_task(name)
        if task.kind != "dynamics":
            raise ValueError(f"task {name!r} is not recurrent (kind {task.kind!r}); fixed points need one of: "
                             + ", ".join(dynamics_tasks()))
        cell = resolve(CellRequest(name, METHOD, seed, sets))
        if out is not None:
            return run_cell(cell, out)
        with tempfile.TemporaryDirectory(prefix="mechscope-fixed-points-") as tmp:
            return run_cell(cell, Path(tmp) / "run")
    path = Path(name)
    if not path.exists():
        raise KeyError(f"unknown task or checkpoint {name!r}; dynamics tasks: {', '.join(dynamics_tasks())}")
    return _run_checkpoint(path, seed, sets, out)


def load_checkpoint(path: Path) -> tuple[Task | None, nn.Module]:
    """(the task it was trained for, or None for a bare module; the model in eval mode)."""
    info_path = path / "info.json"
    if path.is_dir() and info_path.exists():  # a cached target directory
        info = json.loads(info_path.read_text())
        if "task" not in info or info["task"] not in TASKS:
            raise ValueError(f"checkpoint {str(path)!r} does not name a known task in its info.json")
        task = get_task(info["task"])
        if task.kind != "dynamics" or not hasattr(task, "build"):
            raise ValueError(f"checkpoint {str(path)!r} is a {info['task']!r} target, which is not recurrent")
        task.config = type(task.config).model_validate(info["config"])
        model = task.build()
        load_target(path, model)
        return task, model.eval()
    try:
        model = torch.load(path, weights_only=False, map_location="cpu")
    except Exception as err:  # any unreadable file is a user error
        raise ValueError(f"cannot load checkpoint {str(path)!r}: {type(err).__name__}") from None
    if not isinstance(model, nn.Module):
        raise ValueError(f"checkpoint {str(path)!r} holds a {type(model).__name__}, not an nn.Module")
    return None, model.eval()


def _run_checkpoint(path: Path, seed: int, sets: tuple[str, ...], out: Path | None) -> dict[str, Any]:
    task, model = load_checkpoint(path)
    configs: dict[Scope, Any] = {"method": FixedPointsConfig, "run": RunConfig}
    chosen = assign(parse_sets(sets), configs, {"method": f"method {METHOD!r}", "run": "run"})
    config = validated(FixedPointsConfig, chosen["method"], f"method {METHOD!r}").resolved(task)
    run = validated(RunConfig, {"target_seed": seed, **chosen["run"]}, "run")
    name = task.name if task is not None else str(path)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    analysis = analyse(model, task, config, seeded_generator(seed), name)
    resolved = {"task": name, "method": METHOD, "seed": seed, "target_seed": run.target_seed,
                "task_config": task.config.model_dump(mode="json") if task is not None else {},
                "method_config": config.model_dump(mode="json"), "checkpoint": str(path)}
    digest = config_hash(resolved)
    metrics = {"task": name, "method": METHOD, "seed": seed, "target_seed": run.target_seed, "status": "ok",
               **analysis.evaluate(task, model), "wall_s": time.perf_counter() - t0, "config_hash": digest}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        atomic_text(out / "config.yaml", yaml.safe_dump({**resolved, "config_hash": digest}, sort_keys=False))
        save_file({k: v.contiguous() for k, v in analysis.tensors().items()}, str(out / "tensors.safetensors"))
        analysis.figures(out / "figures")
        atomic_text(out / "metrics.json", json.dumps(metrics, indent=2))  # last: marks the run complete
    return metrics
