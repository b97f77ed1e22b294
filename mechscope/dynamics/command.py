"""`mechscope fixed-points TASK|CHECKPOINT`: the whole analysis as one plain function.

    metrics = run_fixed_points("flipflop-3bit", seed=0, input=None, overrides=["cell=lstm"], out=Path("run"))

Finds fixed and slow points at each analysis input (the task's own, or `input`), linearises and
classifies them, scores them against the task's expected structure and, when `out` is given,
writes the run directory: `config.yaml`, `metrics.json`, `fixed_points.safetensors` and
`fixed_points.png`. The CLI and the bench call only `run_fixed_points`.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import save_file
from torch import Tensor, nn

from mechscope.config import ConfigError, split_overrides, with_overrides
from mechscope.core import Task
from mechscope.dynamics.finder import FinderConfig, FixedPoints, NoFixedPointsError, find_fixed_points
from mechscope.dynamics.plot import plot_fixed_points
from mechscope.dynamics.scoring import (
    score_closed_form,
    score_flipflop,
    score_line_attractor,
    score_oscillator,
)
from mechscope.dynamics.wrappers import StepFunction, as_step
from mechscope.zoo import TASKS, get_task
from mechscope.zoo.cache import load_target, seeded_generator

N_TRAJECTORIES = 64
KIND_CODES = {"stable": 0, "saddle": 1, "unstable": 2, "marginal": 3}


def dynamics_tasks() -> list[str]:
    return [name for name, make in TASKS.items() if make().kind == "dynamics"]


def resolve(target: str, overrides: list[str], seed: int) -> tuple[Task | None, nn.Module, FinderConfig, int]:
    """(task or None for a bare checkpoint, target model, finder config, target_seed)."""
    finder_fields = set(FinderConfig.model_fields)
    if target in TASKS:
        task: Task | None = get_task(target)
        assert task is not None
        if task.kind != "dynamics":
            raise ValueError(
                f"task {target!r} is not recurrent (kind {task.kind!r}); fixed points need one of: "
                + ", ".join(dynamics_tasks())
            )
        t_over, f_over, run = split_overrides(overrides, set(type(task.config).model_fields), finder_fields)
        task.config = with_overrides(task.config, t_over, "task")
        target_seed = _target_seed(run, seed)
        model = task.make_target(target_seed)
        cfg = with_overrides(FinderConfig(), f_over, "finder")
        # settings left at None (also when the bench passes the defaults through) are the task's
        defaults: dict[str, Any] = getattr(task, "finder_defaults", dict)()
        cfg = cfg.model_copy(update={k: v for k, v in defaults.items() if getattr(cfg, k) is None})
        return task, model, cfg, target_seed
    path = Path(target)
    if not path.exists():
        raise KeyError(f"unknown task or checkpoint {target!r}; dynamics tasks: {', '.join(dynamics_tasks())}")
    _, f_over, run = split_overrides(overrides, set(), finder_fields)
    cfg = with_overrides(FinderConfig(), f_over, "finder")
    info_path = path / "info.json"
    if path.is_dir() and info_path.exists():  # a cached target directory
        info = json.loads(info_path.read_text())
        if "task" not in info or info["task"] not in TASKS:
            raise ValueError(f"checkpoint {target!r} does not name a known task in its info.json")
        task = get_task(info["task"])
        if task.kind != "dynamics" or not hasattr(task, "build"):
            raise ValueError(f"checkpoint {target!r} is a {info['task']!r} target, which is not recurrent")
        task.config = type(task.config).model_validate(info["config"])
        model = task.build()
        load_target(path, model)
        return task, model.eval(), cfg, _target_seed(run, seed)
    try:
        model = torch.load(path, weights_only=False, map_location="cpu")
    except Exception as err:  # any unreadable file is a user error
        raise ValueError(f"cannot load checkpoint {target!r}: {type(err).__name__}") from None
    if not isinstance(model, nn.Module):
        raise ValueError(f"checkpoint {target!r} holds a {type(model).__name__}, not an nn.Module")
    return None, model.eval(), cfg, _target_seed(run, seed)


def _target_seed(run: dict[str, str], seed: int) -> int:
    try:
        return int(run.get("target_seed", seed))
    except ValueError:
        raise ConfigError(f"target_seed must be an integer, got {run['target_seed']!r}") from None


def trajectories(step: StepFunction, task: Task | None, gen: torch.Generator) -> Tensor:
    """States [B, T, n] (float64) from running the step map over task inputs from h = 0 (a
    bare checkpoint: zero input from random states)."""
    if task is not None:
        u = task.sample(N_TRAJECTORIES, gen).to(torch.float64)  # (B, T, m)
        h = torch.zeros(u.shape[0], step.state_size, dtype=torch.float64)
    else:
        u = torch.zeros(N_TRAJECTORIES, 100, step.input_size, dtype=torch.float64)
        h = 0.5 * torch.randn(N_TRAJECTORIES, step.state_size, generator=gen, dtype=torch.float64)
    out = []
    with torch.no_grad():
        for t in range(u.shape[1]):
            h = step(h, u[:, t])
            out.append(h)
    return torch.stack(out, dim=1)


def readout_fn(model: nn.Module, step: StepFunction) -> Any:
    """Maps states [K, n] to the model's outputs (its `readout` Linear, else the readout slice)."""
    a, b = step.readout_slice
    lin = getattr(model, "readout", None)
    if isinstance(lin, nn.Linear):
        w, bias = lin.weight.detach().double(), lin.bias.detach().double()
        return lambda h: h[..., a:b].double() @ w.T + bias
    return lambda h: h[..., a:b]


def score_input(task: Task | None, model: nn.Module, fp: FixedPoints, step: StepFunction) -> dict[str, Any]:
    """Scores for one input, by the task's expected-structure kind ({} for a bare checkpoint)."""
    if task is None:
        return {}
    expected = task.expected(model, fp.input)  # type: ignore[attr-defined]
    if expected.kind == "closed-form":
        return score_closed_form(fp, expected)
    if expected.kind == "flipflop":
        return score_flipflop(fp, expected, readout_fn(model, step))
    if expected.kind == "oscillator":
        return score_oscillator(fp, expected)
    return score_line_attractor(fp, readout_fn(model, step))


def summarise(task: Task | None, results: list[FixedPoints], scores: list[dict[str, Any]]) -> dict[str, Any]:
    """DESIGN.md's fixed-point keys (summed / worst over inputs) plus per-input details."""
    m: dict[str, Any] = {
        f"n_{k}": sum(fp.count(k) for fp in results) for k in ("stable", "saddle", "unstable", "marginal")
    }
    m["n_slow"] = sum(int((~fp.is_fixed).sum()) for fp in results)
    m["best_q"] = max(fp.best_q for fp in results)  # every input reached at least this
    if scores and "rel_error" in scores[0]:  # closed form
        m["max_rel_error"] = max(s["rel_error"] for s in scores)
        m["max_eig_rel_error"] = max(s["eig_rel_error"] for s in scores)
        m["n_matched"] = sum(int(s["matched"]) for s in scores)
        m["stable_precision"] = m["n_matched"] / m["n_stable"] if m["n_stable"] else 0.0
        m["stable_recall"] = m["n_matched"] / len(scores)
    elif scores and "stable_recall" in scores[0]:  # flip-flop (one input)
        s = scores[0]
        m |= {k: s[k] for k in ("n_matched", "stable_precision", "stable_recall")}
    elif scores and "angle_rel_error" in scores[0]:  # oscillator
        m["n_matched"] = sum(int(s["matched"]) for s in scores)
        m["max_angle_rel_error"] = max(s["angle_rel_error"] for s in scores)
    elif scores and "line_fraction" in scores[0]:  # line attractor
        s = scores[0]
        m["n_matched"] = int(s["matched"])
        m |= {k: v for k, v in s.items() if k not in ("matched",)}
    else:
        m["n_matched"] = 0
    return m


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
        input: one constant input [m] to analyse; None uses the task's analysis inputs (u = 0 for
            flip-flop and integrator, each frequency level for the sine generator, 0 and three
            random inputs for the constructed models).
        overrides: `KEY=VALUE` strings for the task config or the finder config (`FinderConfig`).
        out: the run directory to write, or None to only return the metrics.
    Returns: the metrics dict (also `out/metrics.json`).
    Raises: KeyError (unknown task), ValueError / ConfigError (non-recurrent model, wrong input
        size, bad setting), NoFixedPointsError (nothing below `q_slow`; says the best q reached).
    """
    t0 = time.perf_counter()
    task, model, cfg, target_seed = resolve(task_name_or_checkpoint, overrides or [], seed)
    step = as_step(model)
    if input is not None:
        if len(input) != step.input_size:
            raise ValueError(f"--input has {len(input)} values; the model takes inputs of size {step.input_size}")
        inputs = [torch.tensor(input, dtype=torch.float64)]
    elif task is not None:
        inputs = task.analysis_inputs()  # type: ignore[attr-defined]
    else:
        inputs = [torch.zeros(step.input_size, dtype=torch.float64)]
    gen = seeded_generator(seed)
    traj = trajectories(step, task, gen)  # (B, T, n)
    states = traj.reshape(-1, step.state_size)
    results = []
    for u in inputs:
        fp = find_fixed_points(step, states, u, cfg, gen)
        if fp.points.shape[0] == 0:
            raise NoFixedPointsError(
                f"no fixed or slow points found at input {[round(float(x), 4) for x in u]}: best q reached "
                f"{fp.best_q:.3g} > q_slow={cfg.slow_level:g} after {fp.iters} iterations "
                "(try --set max_iters=… or q_slow=…)"
            )
        results.append(fp)
    scores = [score_input(task, model, fp, step) for fp in results]
    name = task.name if task is not None else task_name_or_checkpoint
    metrics: dict[str, Any] = {"task": name, "method": "fixed-points", "seed": seed, "target_seed": target_seed}
    metrics |= summarise(task, results, scores)
    metrics["inputs"] = [
        {"input": fp.input.tolist(), "n_points": int(fp.points.shape[0]), "best_q": fp.best_q}
        | {f"n_{k}": fp.count(k) for k in ("stable", "saddle", "unstable", "marginal")}
        | {"n_slow": int((~fp.is_fixed).sum())}
        | {
            "n_with_line_direction": int((fp.linearization.n_line_dims > 0).sum()),
            "n_with_ring_direction": int((fp.linearization.n_ring_dims > 0).sum()),
        }
        | {k: v for k, v in s.items() if k != "stable_outputs"}
        for fp, s in zip(results, scores, strict=True)
    ]
    metrics["wall_s"] = time.perf_counter() - t0
    metrics = _finite(metrics)
    if out is not None:
        write_run(out, task, cfg, metrics, traj, results)
    return metrics


def _finite(x: Any) -> Any:
    """JSON has no inf/nan: store them as None."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x


def write_run(
    out: Path, task: Task | None, cfg: FinderConfig, metrics: dict[str, Any], traj: Tensor, results: list[FixedPoints]
) -> None:
    """config.yaml, metrics.json, fixed_points.safetensors and fixed_points.png, written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    config = {
        "task": metrics["task"],
        "method": "fixed-points",
        "seed": metrics["seed"],
        "target_seed": metrics["target_seed"],
        "task_config": task.config.model_dump(mode="json") if task is not None else None,
        "finder": cfg.model_dump(mode="json"),
        "inputs": [fp.input.tolist() for fp in results],
    }
    _atomic_text(out / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    _atomic_text(out / "metrics.json", json.dumps(metrics, indent=2))
    tensors: dict[str, Tensor] = {}
    for i, fp in enumerate(results):
        lin = fp.linearization
        tensors |= {
            f"input{i}.input": fp.input,
            f"input{i}.points": fp.points,
            f"input{i}.q": fp.q,
            f"input{i}.is_fixed": fp.is_fixed.to(torch.uint8),
            f"input{i}.kind": torch.tensor([KIND_CODES[k] for k in fp.kinds], dtype=torch.int64),
            f"input{i}.n_line_dims": lin.n_line_dims,
            f"input{i}.n_ring_dims": lin.n_ring_dims,
            f"input{i}.eigvals_real": lin.eigvals.real.contiguous(),
            f"input{i}.eigvals_imag": lin.eigvals.imag.contiguous(),
        }
    tmp = Path(tempfile.mkstemp(dir=out, suffix=".safetensors")[1])
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, out / "fixed_points.safetensors")
    labels = [f"{metrics['task']}  u={[round(float(x), 3) for x in fp.input]}" for fp in results]
    png = Path(tempfile.mkstemp(dir=out, suffix=".png")[1])
    plot_fixed_points(traj, results, labels, png)
    os.replace(png, out / "fixed_points.png")


def _atomic_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
