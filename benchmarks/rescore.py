"""Rescore a bench directory's saved decompositions with the current scorer.

    python benchmarks/rescore.py BENCH_DIR [--tasks A,B] [--pgd-steps N] [--diff]

Every `runs/<task>/<method>/seed-<s>/` with a `decomposition/` is loaded onto its (cached) target
and scored again — no method is retrained. Prints the worst-case (PGD) ablation table
(`faithfulness` vs `pgd_faithfulness`, the seconds the PGD itself took) and, with `--diff`, every
metric whose value differs from the stored `metrics.json` by more than 1e-6 (relative), so a scorer
change can be checked against a bench run by the old code.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from mechscope.decompose.base import load_decomposition
from mechscope.metrics import eval_sets, score
from mechscope.metrics.pgd import pgd_faithfulness
from mechscope.metrics.score import target_device
from mechscope.zoo import get_task

RUNNER_KEYS = {"task", "method", "seed", "target_seed", "status", "wall_s", "peak_mem_mb", "ci_pattern_errors"}
NEW_KEYS = {"pgd_faithfulness", "pgd_steps", "l0_true"}


def load_run(run: Path) -> tuple[Any, Any]:
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    task = get_task(cfg["task"])
    task.config = type(task.config)(**cfg["task_config"])
    torch.manual_seed(cfg["target_seed"])
    target = task.make_target(cfg["target_seed"])
    return task, load_decomposition(run / "decomposition", target)


def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def differs(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, (int, float)):
        return not math.isclose(a, float(b), rel_tol=1e-6, abs_tol=1e-9)
    return bool(a != b)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("bench", type=Path)
    ap.add_argument("--tasks", default="")
    ap.add_argument("--pgd-steps", type=int, default=4)
    ap.add_argument("--diff", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    tasks = [t for t in args.tasks.split(",") if t]
    rows = []
    for run in sorted((args.bench / "runs").glob("*/*/seed-*")):
        if not (run / "decomposition").is_dir() or (tasks and run.parts[-3] not in tasks):
            continue
        task, dec = load_run(run)
        name = "/".join(run.parts[-3:])
        old = json.loads((run / "metrics.json").read_text())
        new = score(dec, task, pgd_steps=args.pgd_steps).metrics
        if args.diff:
            a, b = flat(old), flat(new)
            for k in sorted(set(a) | set(b)):
                if k in RUNNER_KEYS or (k.split(".")[-1] in NEW_KEYS and k not in a):
                    continue  # written by the runner, not the scorer / a key this scorer adds
                if k not in a or k not in b or differs(b[k], a[k]):
                    print(f"DIFF {name} {k}: before {a.get(k, '—')} after {b.get(k, '—')}")
        data = eval_sets(task).data.to(target_device(dec))
        start = time.process_time()
        with torch.no_grad():
            pgd_faithfulness(dec, data, task.ground_truth(dec.target).output_kind, args.pgd_steps)
        cpu = time.process_time() - start
        rows.append((*run.parts[-3:], new["faithfulness"], new["pgd_faithfulness"], cpu))
    print(f"\n| task | method | seed | faithfulness | pgd_faithfulness (k={args.pgd_steps}) | ratio | PGD CPU s |")
    print("|---|---|---|---|---|---|---|")
    for task_name, method, seed, f, p, cpu in rows:
        ratio = p / f if f > 0 else math.inf
        print(f"| {task_name} | {method} | {seed[5:]} | {f:.3g} | {p:.3g} | {ratio:.3g} | {cpu:.2f} |")


if __name__ == "__main__":
    main()
