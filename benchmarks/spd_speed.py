"""Speed of SPD on TMS 5-2 (or a residual MLP, `--task`): the whole `mechscope decompose TASK spd`
command, per seed, with the default (fast) preset and with the paper preset, in the same run
(timings on a shared machine are noisy: compare the ratio, not the absolute numbers).

Each cell is one subprocess — interpreter start, imports, the cached target, SPD, scoring, writing
the run directory — timed by wall clock and by the child's CPU time. The quality bar is the issue's:
`mmcs` ≥ 0.99, `ml2r` in [0.95, 1.05] and `n_alive` = `true_rank`, from the command's own metrics.
The paper preset's reference is its shortest mostly-working run (10k steps, `--paper-steps`).
Residual MLPs (`--task resid-mlp-2l|resid-mlp-3l`): the bar is issue 19's, in every layer `mlp_in`
mmcs ≥ 0.98, activity_f1 ≥ 0.95, ml2r in [0.9, 1.1] and `mlp_out` dense_cos ≥ 0.99; the paper
preset runs `--paper-steps` of its full schedule and its time is extrapolated linearly to the full
step count (the scoring's fixed cost, measured on the default row, is not scaled).

    .venv/bin/python benchmarks/spd_speed.py [--task tms-5-2] [--seeds 0,1,2] [--paper-steps 10000] [--threads 1]
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

TASKS = ("tms-5-2", "resid-mlp-1l", "resid-mlp-2l", "resid-mlp-3l")


def meets_bar(m: dict[str, Any]) -> bool:
    if m["task"].startswith("resid-mlp"):
        return resid_bar(m)
    return m["mmcs"] >= 0.99 and 0.95 <= m["ml2r"] <= 1.05 and m["n_alive"] == m["true_rank"]


def resid_bar(m: dict[str, Any]) -> bool:
    """Issue 19's bar, every layer: mlp_in mmcs ≥ 0.98, activity_f1 ≥ 0.95, ml2r in [0.9, 1.1];
    mlp_out dense_cos ≥ 0.99."""
    ok = True
    for site, v in m["sites"].items():
        if site.endswith("mlp_in"):
            ok &= v["mmcs"] >= 0.98 and v["activity_f1"] >= 0.95 and 0.9 <= v["ml2r"] <= 1.1
        elif site.endswith("mlp_out"):
            ok &= v.get("dense_cos", 0.0) >= 0.99
    return bool(ok)


class CellFailed(RuntimeError):
    """A command that did not finish: (short reason for the table, its stderr's tail)."""


def run_cell(task: str, seed: int, extra: list[str], out: Path, env: dict[str, str]) -> tuple[float, float, dict[str, Any]]:
    """(wall s, child CPU s, metrics) of one `mechscope decompose` command."""
    exe = Path(sys.executable).with_name("mechscope")
    cmd = [str(exe), "decompose", task, "spd", "--seed", str(seed), "--out", str(out), "--json", *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise CellFailed(f"exit {proc.returncode}" + (" (killed: out of memory?)" if proc.returncode < 0 else ""),
                         f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, json.loads(proc.stdout)


def fmt(m: dict[str, Any]) -> str:
    if m["task"].startswith("resid-mlp"):  # per layer: mlp_in mmcs / ml2r / activity_f1, mlp_out dense_cos
        layers = sorted({s.split(".")[1] for s in m["sites"] if s.startswith("layers.")}, key=int)
        return "; ".join(
            f"L{li} {m['sites'][f'layers.{li}.mlp_in']['mmcs']:.3f}/{m['sites'][f'layers.{li}.mlp_in']['ml2r']:.3f}/"
            f"{m['sites'][f'layers.{li}.mlp_in']['activity_f1']:.2f} {m['sites'][f'layers.{li}.mlp_out'].get('dense_cos', 0):.3f}"
            for li in layers
        )
    return f"{m['mmcs']:.4f} / {m['ml2r']:.3f} / {m['n_alive']}/{m['true_rank']}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="tms-5-2", choices=TASKS, help="the task decomposed")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (method and target)")
    ap.add_argument("--paper-steps", type=int, default=10_000, help="steps of the paper-preset run (0: skip it)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads in the commands (0: torch's default)")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.threads)
    torch.set_num_threads(1)
    task = get_task(args.task)
    full = int(get_task_paper_steps(args.task))
    for seed in seeds:  # the target must be cached: training it is not part of the timed command
        task.make_target(seed)

    what = "mmcs / ml2r / alive" if args.task == "tms-5-2" else "per layer mlp_in mmcs/ml2r/f1, mlp_out dense_cos"
    scale = max(1.0, full / args.paper_steps) if args.paper_steps else 1.0
    paper = f"paper {args.paper_steps} steps" + (f" (× {scale:g} to its {full} steps)" if scale > 1 else "")
    print(f"| seed | default: wall s (cpu s) | {what} | bar | {paper}: wall s (cpu s) "
          f"| {what} | bar | wall ratio (cpu ratio) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|", flush=True)
    with tempfile.TemporaryDirectory(prefix="spd-speed-") as tmp:
        for seed in seeds:  # one row per seed, printed as soon as it is measured
            fw, fc, fm = run_cell(args.task, seed, [], Path(tmp) / f"fast-{seed}", env)
            cells = [str(seed), f"{fw:.1f} ({fc:.1f})", fmt(fm), "yes" if meets_bar(fm) else "NO"]
            if args.paper_steps:
                extra = ["--set", "preset=paper", "--steps", str(args.paper_steps)]
                try:
                    pw, pc, pm = run_cell(args.task, seed, extra, Path(tmp) / f"paper-{seed}", env)
                except CellFailed as err:  # e.g. the reference's 3-layer recipe out of memory: say so, keep the row
                    print(err.args[1], file=sys.stderr)
                    print("| " + " | ".join([*cells, f"failed: {err.args[0]}", "–", "–", "–"]) + " |", flush=True)
                    continue
                # Extrapolate the fit only (metrics' wall_s; its CPU share taken as its wall share):
                # start-up and scoring are paid once whatever the step count.
                fit_share = min(1.0, float(pm.get("wall_s", pw)) / pw)
                pw, pc = pw * (1 + fit_share * (scale - 1)), pc * (1 + fit_share * (scale - 1))
                ratio = f"{pw / fw:.1f}× ({pc / fc:.1f}×)"
                bar = ("yes" if meets_bar(pm) else "NO") + (" (at the steps run)" if scale > 1 else "")
                cells += [f"{pw:.1f} ({pc:.1f})", fmt(pm), bar, ratio]
            else:
                cells += ["–"] * 4
            print("| " + " | ".join(cells) + " |", flush=True)

def get_task_paper_steps(task: str) -> int:
    """The paper preset's step count for the task."""
    from mechscope.decompose.spd_presets import preset_values

    t = get_task(task)
    return int(preset_values("paper", t.name, t.family)["steps"])


if __name__ == "__main__":
    main()
