"""Speed of SPD on TMS 5-2: the whole `mechscope decompose tms-5-2 spd` command, per seed, with the
default (fast) preset and with the paper preset, in the same run (timings on a shared machine are
noisy: compare the ratio, not the absolute numbers).

Each cell is one subprocess — interpreter start, imports, the cached target, SPD, scoring, writing
the run directory — timed by wall clock and by the child's CPU time. The quality bar is the issue's:
`mmcs` ≥ 0.99, `ml2r` in [0.95, 1.05] and `n_alive` = `true_rank`, from the command's own metrics.
The paper preset's reference is its shortest mostly-working run (10k steps, `--paper-steps`).

    .venv/bin/python benchmarks/spd_speed.py [--seeds 0,1,2] [--paper-steps 10000] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from mechscope.zoo import get_task

TASK = "tms-5-2"


def meets_bar(m: dict[str, Any]) -> bool:
    return m["mmcs"] >= 0.99 and 0.95 <= m["ml2r"] <= 1.05 and m["n_alive"] == m["true_rank"]


def run_cell(seed: int, extra: list[str], out: Path, env: dict[str, str]) -> tuple[float, float, dict[str, Any]]:
    """(wall s, child CPU s, metrics) of one `mechscope decompose` command."""
    exe = Path(sys.executable).with_name("mechscope")
    cmd = [str(exe), "decompose", TASK, "spd", "--seed", str(seed), "--out", str(out), "--json", *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, json.loads(proc.stdout)


def fmt(m: dict[str, Any]) -> str:
    return f"{m['mmcs']:.4f} / {m['ml2r']:.3f} / {m['n_alive']}/{m['true_rank']}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (method and target)")
    ap.add_argument("--paper-steps", type=int, default=10_000, help="steps of the paper-preset run (0: skip it)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads in the commands (0: torch's default)")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.threads)
    torch.set_num_threads(1)
    task = get_task(TASK)
    for seed in seeds:  # the target must be cached: training it is not part of the timed command
        task.make_target(seed)

    print(f"| seed | default: wall s (cpu s) | mmcs / ml2r / alive | bar | paper {args.paper_steps} steps: wall s (cpu s) "
          "| mmcs / ml2r / alive | bar | wall ratio (cpu ratio) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|", flush=True)
    with tempfile.TemporaryDirectory(prefix="spd-speed-") as tmp:
        for seed in seeds:  # one row per seed, printed as soon as it is measured
            fw, fc, fm = run_cell(seed, [], Path(tmp) / f"fast-{seed}", env)
            cells = [str(seed), f"{fw:.1f} ({fc:.1f})", fmt(fm), "yes" if meets_bar(fm) else "NO"]
            if args.paper_steps:
                extra = ["--set", "preset=paper", "--steps", str(args.paper_steps)]
                pw, pc, pm = run_cell(seed, extra, Path(tmp) / f"paper-{seed}", env)
                ratio = f"{pw / fw:.1f}× ({pc / fc:.1f}×)"
                cells += [f"{pw:.1f} ({pc:.1f})", fmt(pm), "yes" if meets_bar(pm) else "NO", ratio]
            else:
                cells += ["–"] * 4
            print("| " + " | ".join(cells) + " |", flush=True)

if __name__ == "__main__":
    main()
