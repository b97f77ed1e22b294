"""Speed of the batched fixed-point finder against a plain per-point loop, in the same run.

    .venv/bin/python benchmarks/fixed_point_speed.py [--bits 5] [--starts 1024] [--loop-sample 32] [--cell gru]

Target: the n-bit flip-flop (`flipflop --set n_bits=N`, default 5 bits: a 64-unit GRU with 32
attractors; target_seed 0, from the target cache). Both sides run the same algorithm from the
same starts — Adam on q with per-point steps, damped Newton, Jacobians and eigen-decomposition
(classification) — once as one batch and once as a Python loop over single starts. The loop is
timed on `--loop-sample` evenly spaced starts and scaled linearly to all of them (each start is
independent, so the loop's cost is linear); pass `--loop-sample 1024` to time it in full. Both
are scored (memories matched) with the project scorer; the loop's memories are the union over
its sampled starts.

Accuracy: on `linear-rnn` (h* = (I − A)⁻¹ B u in closed form) both the batched finder and the
per-point loop are scored against the closed form at a non-zero input (max relative error of
any found point, eigenvalue error after Hungarian pairing).

One torch thread. Wall and CPU seconds (`time.process_time`) are both printed: on a loaded
machine wall time is mostly waiting for a core, so read the CPU-second ratio. The `fixed-point-finder` reference package (Golub & Sussillo 2018) is not on PyPI, so it
is not compared here. Results: benchmarks/RESULTS.md, "Fixed points".
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch

from mechscope.bench.run import CellRequest
from mechscope.bench.run import resolve as resolve_cell
from mechscope.dynamics.finder import FinderConfig, FixedPoints, find_fixed_points, sample_starts
from mechscope.dynamics.method import trajectories
from mechscope.dynamics.scoring import score_closed_form, score_flipflop
from mechscope.dynamics.wrappers import as_step, readout_fn
from mechscope.zoo.cache import seeded_generator


def resolve(name: str, sets: list[str], seed: int) -> tuple[Any, Any, Any, int]:
    """(task, trained target, the fixed-points method config, target seed) as the run path resolves them."""
    cell = resolve_cell(CellRequest(name, "fixed-points", seed, tuple(sets)))
    return cell.task, cell.task.make_target(cell.target_seed).eval(), cell.method_config, cell.target_seed


def closed_form_accuracy(n_loop: int) -> dict[str, object]:
    """Batched and per-point finders on linear-rnn against its closed-form fixed point."""
    task, model, _, _ = resolve("linear-rnn", [], 0)
    step = as_step(model)
    gen = seeded_generator(0)
    states = trajectories(step, task, gen).reshape(-1, step.state_size)
    u = task.analysis_inputs()[1]  # type: ignore[attr-defined]
    expected = task.expected(model, u)  # type: ignore[attr-defined]
    cfg = FinderConfig(n_starts=256)
    starts = sample_starts(states, cfg.n_starts, cfg.noise, gen)
    t0 = time.process_time()
    batched = score_closed_form(find_fixed_points(step, states, u, cfg, gen, starts=starts), expected)
    t_b = time.process_time() - t0
    t0 = time.process_time()
    loop = [score_closed_form(find_fixed_points(step, states, u, cfg, gen, starts=starts[i : i + 1]), expected)
            for i in range(n_loop)]
    t_l = (time.process_time() - t0) * cfg.n_starts / n_loop
    return {
        "linear_rnn_batched_rel_error": batched["rel_error"],
        "linear_rnn_batched_eig_rel_error": batched["eig_rel_error"],
        "linear_rnn_loop_max_rel_error": max(s["rel_error"] for s in loop),
        "linear_rnn_loop_max_eig_rel_error": max(s["eig_rel_error"] for s in loop),
        "linear_rnn_speedup_cpu": round(t_l / t_b, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bits", type=int, default=5)
    ap.add_argument("--starts", type=int, default=1024)
    ap.add_argument("--loop-sample", type=int, default=32)
    ap.add_argument("--cell", default="gru", choices=["rnn", "gru", "lstm", "ssm", "deltanet"])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    torch.set_num_threads(1)

    task, model, cfg, _ = resolve("flipflop", [f"n_bits={args.bits}", f"cell={args.cell}"], 0)
    step = as_step(model)
    gen = seeded_generator(0)
    states = trajectories(step, task, gen).reshape(-1, step.state_size)
    u = torch.zeros(step.input_size, dtype=torch.float64)
    starts = sample_starts(states, args.starts, cfg.noise, gen)
    cfg = FinderConfig(n_starts=args.starts)
    find_fixed_points(step, states, u, cfg, gen, starts=starts[:4])  # warm-up (lazy torch imports)

    t0, c0 = time.perf_counter(), time.process_time()
    batched = find_fixed_points(step, states, u, cfg, gen, starts=starts)
    t_batched, c_batched = time.perf_counter() - t0, time.process_time() - c0

    idx = torch.linspace(0, args.starts - 1, min(args.loop_sample, args.starts)).round().long()
    t0, c0 = time.perf_counter(), time.process_time()
    loop_kinds: list[str] = []
    loop_memories: set[int] = set()
    expected = task.expected(model, u)  # type: ignore[union-attr]
    readout = readout_fn(model, step)
    for i in idx.tolist():
        one = find_fixed_points(step, states, u, cfg, gen, starts=starts[i : i + 1])
        loop_kinds += [k for k, f in zip(one.kinds, one.is_fixed.tolist(), strict=True) if f]
        loop_memories |= set(score_flipflop(one, expected, readout)["matched_memories"])
    t_loop_measured, c_loop_measured = time.perf_counter() - t0, time.process_time() - c0
    t_loop = t_loop_measured * args.starts / len(idx)
    c_loop = c_loop_measured * args.starts / len(idx)
    scored: FixedPoints = batched
    score = score_flipflop(scored, expected, readout)

    result = {
        "target": f"flipflop n_bits={args.bits} cell={args.cell} (width {step.hidden_size}) target_seed=0",
        "starts": args.starts,
        "batched_s": round(t_batched, 3),
        "loop_sample": len(idx),
        "loop_measured_s": round(t_loop_measured, 3),
        "loop_extrapolated_s": round(t_loop, 3),
        "speedup": round(t_loop / t_batched, 1),
        "batched_cpu_s": round(c_batched, 3),
        "loop_extrapolated_cpu_s": round(c_loop, 3),
        "speedup_cpu": round(c_loop / c_batched, 1),
        "batched_found": {k: batched.count(k) for k in ("stable", "saddle", "unstable", "marginal")},
        "batched_memories_matched": f"{score['n_matched']} / {2**args.bits}",
        "batched_precision_recall": [score["stable_precision"], score["stable_recall"]],
        "loop_sample_fixed_kinds": {k: loop_kinds.count(k) for k in sorted(set(loop_kinds))},
        "loop_sample_memories_matched": len(loop_memories),
    }
    result |= closed_form_accuracy(min(args.loop_sample, 16))
    if args.json:
        print(json.dumps(result))
        return
    for k, v in result.items():
        print(f"{k:>24}: {v}")


if __name__ == "__main__":
    main()
