"""Fixed-point analysis as a method of the "dynamics" family (Sussillo & Barak 2013).

    spec = get_method("fixed-points")
    analysis = fit_blind(spec, target, task, spec.Cfg().resolved(task), FitContext(seed=0))
    analysis.evaluate(task, target)   # DESIGN.md's keys: n_stable, …, stable_recall, best_q
    analysis.tensors(), analysis.figures(directory)

The fit is blind: it runs the recurrent step map over the task's inputs (its sampler) from h = 0,
starts the finder from the visited states and finds, at each analysis input, the fixed and slow
points with their linearisation. Only `evaluate` reads the task's expected structure (the truth).
Per-task settings live in one table (`TABLE`) plus each task's analysis inputs; the run path
resolves them once, so config.yaml records the inputs and every finder setting that ran.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from pydantic import Field
from torch import Tensor, nn

from mechscope.bounds import MAX_STEPS
from mechscope.config import Config
from mechscope.core import Task, TaskFacts, seeded_generator
from mechscope.decompose.registry import FitContext, MethodSpec, register
from mechscope.dynamics.finder import FinderConfig, FixedPoints, NoFixedPointsError, find_fixed_points
from mechscope.dynamics.wrappers import StepFunction, as_step, readout_fn
from mechscope.files import atomic_write

N_TRAJECTORIES = 64
KIND_CODES = {"stable": 0, "saddle": 1, "unstable": 2, "marginal": 3}
KINDS = ("stable", "saddle", "unstable", "marginal")

TABLE: dict[str, dict[str, Any]] = {
    # A line attractor is a continuum of slow points: keep them (q up to 1e-4).
    "integrator": {"keep_slow": True, "q_slow": 1e-4},
}
"""Finder settings by task name (every other task: the class defaults)."""


class FixedPointsConfig(FinderConfig):
    """The finder's settings plus the constant inputs analysed."""

    inputs: list[list[float]] = Field(default_factory=list)
    """Constant inputs u at which points are found; [] : the zero input. A task's default is its
    `analysis_inputs()` (u = 0 for flip-flop and integrator, each frequency level of the sine
    generator, 0 and three random inputs for the constructed models)."""
    spd: bool = False
    """Also decompose the target's step map with SPD (GRU targets: `dynamics.spd_memories`): the
    subcomponents' causal importance at every fixed point, and per-bit ablation specificity."""
    spd_steps: int = Field(3000, ge=1, le=MAX_STEPS)
    spd_C: int = Field(48, ge=1, le=4096)
    """Subcomponents per decomposed matrix (W_ih, W_hh)."""
    spd_importance_coeff: float = Field(3e-3, ge=0)
    ablation_steps: int = Field(200, ge=1, le=MAX_STEPS)
    """Zero-input steps run from each memory with subcomponents ablated before reading it out."""

    def spd_settings(self) -> dict[str, Any]:
        """The SPD config this analysis fits (the registry's `spd` method; the rest its defaults)."""
        return {"steps": self.spd_steps, "C": self.spd_C, "importance_coeff": self.spd_importance_coeff,
                "pnorm": 1.0, "lr": 3e-3, "batch_size": 256, "threads": 1}

    def task_defaults(self, task: Any) -> dict[str, Any]:
        row = dict(TABLE.get(getattr(task, "name", ""), {}))
        analysis_inputs = getattr(task, "analysis_inputs", None)
        if callable(analysis_inputs):
            row["inputs"] = [u.to(torch.float64).tolist() for u in analysis_inputs()]
        return row


def trajectories(step: StepFunction, task: TaskFacts | Task | None, gen: torch.Generator) -> Tensor:
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


class FixedPointAnalysis:
    """What the fit found: per analysis input, the kept points and their linearisation."""

    def __init__(self, step: StepFunction, traj: Tensor, results: list[FixedPoints], name: str) -> None:
        self.step, self.traj, self.results, self.name = step, traj, results, name
        self.spd: Any = None
        """With `spd=true`: the SPD decomposition of the step map (`dynamics.spd_memories`)."""
        self.ablation_steps = 200

    def evaluate(self, task: Task | None, target: nn.Module) -> dict[str, Any]:
        """DESIGN.md's fixed-point keys (summed / worst over inputs) and per-input details; scored
        against the task's expected structure (nothing to score for a bare checkpoint)."""
        scores = [score_input(task, target, fp, self.step) for fp in self.results]
        metrics = summarise(self.results, scores)
        metrics["inputs"] = [
            {"input": fp.input.tolist(), "n_points": int(fp.points.shape[0]), "best_q": fp.best_q}
            | {f"n_{k}": fp.count(k) for k in KINDS}
            | {"n_slow": int((~fp.is_fixed).sum())}
            | {
                "n_with_line_direction": int((fp.linearization.n_line_dims > 0).sum()),
                "n_with_ring_direction": int((fp.linearization.n_ring_dims > 0).sum()),
            }
            | {k: v for k, v in s.items() if k != "stable_outputs"}
            for fp, s in zip(self.results, scores, strict=True)
        ]
        if self.spd is not None and task is not None:
            metrics |= self.spd_scores(task, target)
        return finite(metrics)

    def spd_scores(self, task: Task, target: nn.Module) -> dict[str, Any]:
        """Per-bit ablation specificity of the SPD subcomponents at the memories (reads the truth)."""
        from mechscope.dynamics.spd_memories import ablation_report, memory_points

        fp = self.results[0]
        expected = task.expected(target, fp.input)  # type: ignore[attr-defined]
        if expected.memories is None:
            return {}
        stable = torch.tensor([k == "stable" for k in fp.kinds], dtype=torch.bool) & fp.is_fixed
        readout = readout_fn(target, self.step)
        pts, mem = memory_points(fp.points, stable, expected.memories, readout)
        return ablation_report(self.spd, pts, mem, readout, self.ablation_steps)

    def tensors(self) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for i, fp in enumerate(self.results):
            lin = fp.linearization
            out |= {
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
        if self.spd is not None and self.results[0].points.shape[0]:
            from mechscope.dynamics.spd_memories import importance_at

            out["input0.spd_importance"] = importance_at(self.spd, self.results[0].points).contiguous()
        return out

    def figures(self, directory: Path) -> None:
        """`fixed_points.png`: the trajectories' top PCs with the points, coloured by kind."""
        from mechscope.dynamics.plot import plot_fixed_points

        directory.mkdir(parents=True, exist_ok=True)
        labels = [f"{self.name}  u={[round(float(x), 3) for x in fp.input]}" for fp in self.results]

        def draw(tmp: Path) -> None:  # savefig picks the format by suffix: draw to .png, then move
            png = tmp.with_suffix(".png")
            plot_fixed_points(self.traj, self.results, labels, png)
            png.replace(tmp)

        atomic_write(directory / "fixed_points.png", draw)


def analyse(model: nn.Module, task: TaskFacts | Task | None, config: FixedPointsConfig,
            gen: torch.Generator, name: str) -> FixedPointAnalysis:
    """The whole search on any recurrent model; `task` None: a bare checkpoint (no sampler)."""
    step = as_step(model)
    inputs = [torch.tensor(u, dtype=torch.float64) for u in config.inputs]
    for u in inputs:
        if u.numel() != step.input_size:
            raise ValueError(f"--input has {u.numel()} values; the model takes inputs of size {step.input_size}")
    if not inputs:
        inputs = [torch.zeros(step.input_size, dtype=torch.float64)]
    traj = trajectories(step, task, gen)  # (B, T, n)
    states = traj.reshape(-1, step.state_size)
    results = []
    for u in inputs:
        fp = find_fixed_points(step, states, u, config, gen)
        if fp.points.shape[0] == 0:
            raise NoFixedPointsError(
                f"no fixed or slow points found at input {[round(float(x), 4) for x in u]}: best q reached "
                f"{fp.best_q:.3g} > q_slow={config.slow_level:g} after {fp.iters} iterations "
                "(try --set max_iters=… or q_slow=…)"
            )
        results.append(fp)
    return FixedPointAnalysis(step, traj, results, name)


def fit(target: nn.Module, task: TaskFacts, config: Config, ctx: FitContext) -> FixedPointAnalysis:
    """Find the fixed and slow points of `target` at each of the config's inputs (blind).

    The search runs in float64 on the CPU whatever `ctx.device` (batched Newton steps on a small
    state; the bench's results do not depend on the device), so the target moves there."""
    assert isinstance(config, FixedPointsConfig)
    config = config.resolved(task)  # a no-op for the run path's (already resolved) config
    analysis = analyse(target.cpu(), task, config, seeded_generator(ctx.seed), task.name)
    if config.spd:
        from mechscope.dynamics.spd_memories import fit_step_spd

        analysis.spd = fit_step_spd(target, task, config.spd_settings(), ctx.seed)
        analysis.ablation_steps = config.ablation_steps
    return analysis


# --- scoring against the expected structure (the truth: only `evaluate` reads it) ---------------


def score_input(task: Task | None, model: nn.Module, fp: FixedPoints, step: StepFunction) -> dict[str, Any]:
    """Scores for one input, by the task's expected-structure kind ({} for a bare checkpoint)."""
    if task is None:
        return {}
    from mechscope.dynamics.scoring import (
        score_closed_form,
        score_flipflop,
        score_line_attractor,
        score_oscillator,
    )

    expected = task.expected(model, fp.input)  # type: ignore[attr-defined]
    if expected.kind == "closed-form":
        return score_closed_form(fp, expected)
    if expected.kind == "flipflop":
        return score_flipflop(fp, expected, readout_fn(model, step))
    if expected.kind == "oscillator":
        return score_oscillator(fp, expected)
    return score_line_attractor(fp, readout_fn(model, step))


def summarise(results: list[FixedPoints], scores: list[dict[str, Any]]) -> dict[str, Any]:
    """DESIGN.md's fixed-point keys (summed / worst over inputs)."""
    m: dict[str, Any] = {f"n_{k}": sum(fp.count(k) for fp in results) for k in KINDS}
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


def finite(x: Any) -> Any:
    """JSON has no inf/nan: store them as None."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [finite(v) for v in x]
    return x


def _applies(task: Task) -> str | None:
    return None if task.kind == "dynamics" else "fixed-point analysis needs a recurrent (dynamics) task"


register(
    MethodSpec(
        name="fixed-points",
        summary="fixed/slow points of a recurrent task and their stability",
        Cfg=FixedPointsConfig,
        fit=fit,
        applies_to=_applies,
        family="dynamics",
    )
)
