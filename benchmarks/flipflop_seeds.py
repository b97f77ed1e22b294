"""The n-bit flip-flop table of issue 16: trained targets × target seeds, fixed points scored.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/flipflop_seeds.py [--bits 2 3 4 5] [--seeds 0 1 2]
        [--held-out 1] [--cell gru] [--jobs 2] [--set KEY=VALUE …] [--jsonl out.jsonl]

Each cell is `mechscope fixed-points flipflop-{n}bit` (n = 2…5, the presets) or
`flipflop --set n_bits=N` (a held-out n), through `run_fixed_points` — the run path every bench
cell takes: the target is trained (or loaded from the cache), the default finder (1024 starts)
runs blind, `score_flipflop` matches stable fixed points to memories through the readout. Per
cell it prints stable found / matched of 2ⁿ, precision / recall, saddles, slow points, and the
target's training attempt (a seed that fails the acceptance bar — bit accuracy, every memory held,
every memory an attractor with |λ|max < 1 − 1e-3 — is retrained from a derived seed) and the
largest |λ|max over its memories.
Cells run in `--jobs` processes (one torch thread each). Results: benchmarks/RESULTS.md, issue 16.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import torch


def one_cell(n: int, seed: int, preset: bool, cell: str, sets: list[str]) -> dict[str, Any]:
    from mechscope.dynamics.command import run_fixed_points
    from mechscope.zoo import get_task
    from mechscope.zoo.cache import target_path

    torch.set_num_threads(1)
    name = f"flipflop-{n}bit" if preset else "flipflop"
    overrides = ([] if preset else [f"n_bits={n}"]) + [f"cell={cell}", *sets]
    t0 = time.process_time()
    w0 = time.perf_counter()
    m = run_fixed_points(name, seed, None, overrides, None)
    task = get_task(name)
    task_sets = {k: v for k, v in (s.split("=", 1) for s in overrides) if k in type(task.config).model_fields}
    task.config = type(task.config).model_validate(task.config.model_dump() | task_sets)
    info = json.loads((target_path(task.name, task.config, seed) / "info.json").read_text())
    return {
        "n": n, "seed": seed, "task": name, "cell": cell, "n_stable": m["n_stable"], "n_matched": m["n_matched"],
        "precision": m["stable_precision"], "recall": m["stable_recall"], "n_saddle": m["n_saddle"],
        "n_slow": m["n_slow"], "n_marginal": m["n_marginal"], "best_q": m["best_q"],
        "attempt": info.get("attempt"), "bit_accuracy": info.get("bit_accuracy"),
        "attractors_ok": info.get("attractors_ok"), "n_attractors": info.get("n_attractors"),
        "memory_lambda_max": max(info.get("memory_lambda_max") or [float("nan")]), "train_s": info.get("train_s"),
        "cpu_s": round(time.process_time() - t0, 1), "wall_s": round(time.perf_counter() - w0, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bits", type=int, nargs="*", default=[2, 3, 4, 5])
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    ap.add_argument("--held-out", type=int, nargs="*", default=[1], help="bit counts run as flipflop --set n_bits=N")
    ap.add_argument("--cell", default="gru")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--set", dest="sets", action="append", default=[], help="extra KEY=VALUE for every cell")
    ap.add_argument("--jsonl", default=None, help="append each cell's row to this file")
    args = ap.parse_args()
    jobs = [(n, s, True) for n in args.bits for s in args.seeds] + [(n, 0, False) for n in args.held_out]
    print("| n | seed | stable / matched | precision / recall | saddles | slow | attempt | max memory abs λ | cpu s |")
    print("|---|---|---|---|---|---|---|---|---|")
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(one_cell, n, s, p, args.cell, args.sets) for n, s, p in jobs]
        for (n, s, p), f in zip(jobs, futures, strict=True):
            try:
                r = f.result()
            except Exception as err:  # one failing cell is a row, not the end of the table
                print(f"| {n}{'' if p else ' (held out)'} | {s} | error: {type(err).__name__}: {err} |")
                continue
            print(f"| {n}{'' if p else ' (held out)'} | {s} | {r['n_stable']} / {r['n_matched']} of {2**n} | "
                  f"{r['precision']:.3f} / {r['recall']:.3f} | {r['n_saddle']} | {r['n_slow']} | {r['attempt']} | "
                  f"{r['memory_lambda_max']:.5f} | {r['cpu_s']} |", flush=True)
            if args.jsonl:
                with open(args.jsonl, "a") as fh:
                    fh.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
