"""Speed of the batched fixed-point finder against a plain per-point loop, in the same run.

    .venv/bin/python benchmarks/fixed_point_speed.py [--starts 1024] [--loop-sample 32] [--cell gru]

Target: the 3-bit flip-flop GRU (`flipflop-3bit`, target_seed 0, from the target cache). Both
sides run the same algorithm from the same 1024 starts — Adam on q with per-point steps, damped
Newton, Jacobians and eigen-decomposition (classification) — once as one batch and once as a
Python loop over single starts. The loop is timed on `--loop-sample` evenly spaced starts and
scaled linearly to all of them (each start is independent, so the loop's cost is linear);
pass `--loop-sample 1024` to time it in full. One torch thread; machine load makes absolute
times noisy, so the ratio from one run is what to read.

The `fixed-point-finder` reference package (Golub & Sussillo 2018) is not on PyPI, so it is not
compared here.

Recorded (2026-11-25, 1 thread on a shared 2-core machine at load ≈ 17, `--loop-sample 16`):
batched 25.6 s for 1024 starts (8 stable, 6 saddles found); per-point loop 29.2 s for 16 starts,
1866 s extrapolated to 1024 — speed-up 73×.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from mechscope.dynamics.command import resolve, trajectories
from mechscope.dynamics.finder import FinderConfig, find_fixed_points, sample_starts
from mechscope.dynamics.wrappers import as_step
from mechscope.zoo.cache import seeded_generator


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--starts", type=int, default=1024)
    ap.add_argument("--loop-sample", type=int, default=32)
    ap.add_argument("--cell", default="gru", choices=["rnn", "gru", "lstm"])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    torch.set_num_threads(1)

    task, model, cfg, _ = resolve("flipflop-3bit", [f"cell={args.cell}"], 0)
    step = as_step(model)
    gen = seeded_generator(0)
    states = trajectories(step, task, gen).reshape(-1, step.state_size)
    u = torch.zeros(step.input_size, dtype=torch.float64)
    starts = sample_starts(states, args.starts, cfg.noise, gen)
    cfg = FinderConfig(n_starts=args.starts)
    find_fixed_points(step, states, u, cfg, gen, starts=starts[:4])  # warm-up (lazy torch imports)

    t0 = time.perf_counter()
    batched = find_fixed_points(step, states, u, cfg, gen, starts=starts)
    t_batched = time.perf_counter() - t0

    idx = torch.linspace(0, args.starts - 1, min(args.loop_sample, args.starts)).round().long()
    t0 = time.perf_counter()
    loop_kinds: list[str] = []
    for i in idx.tolist():
        one = find_fixed_points(step, states, u, cfg, gen, starts=starts[i : i + 1])
        loop_kinds += [k for k, f in zip(one.kinds, one.is_fixed.tolist(), strict=True) if f]
    t_loop_measured = time.perf_counter() - t0
    t_loop = t_loop_measured * args.starts / len(idx)

    result = {
        "target": f"flipflop-3bit cell={args.cell} target_seed=0",
        "starts": args.starts,
        "batched_s": round(t_batched, 3),
        "loop_sample": len(idx),
        "loop_measured_s": round(t_loop_measured, 3),
        "loop_extrapolated_s": round(t_loop, 3),
        "speedup": round(t_loop / t_batched, 1),
        "batched_found": {k: batched.count(k) for k in ("stable", "saddle", "unstable", "marginal")},
        "loop_sample_fixed_kinds": {k: loop_kinds.count(k) for k in sorted(set(loop_kinds))},
    }
    if args.json:
        print(json.dumps(result))
        return
    for k, v in result.items():
        print(f"{k:>24}: {v}")


if __name__ == "__main__":
    main()
