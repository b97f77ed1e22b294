"""Worst-case (PGD) ablation on the planted MiniLM check: every method's `faithfulness` beside
its `pgd_faithfulness`, on the planted model (seed 0, `FAST_SETTINGS`; no control).

    python benchmarks/pgd_planted.py [--methods all] [--pgd-steps 4]
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from mechscope.decompose.registry import FitContext, fit_blind, get_method
from mechscope.metrics import score
from mechscope.real.planted import FAST_SETTINGS, PlantedConfig, PlantedTask, planted_methods


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", default="all")
    ap.add_argument("--pgd-steps", type=int, default=4)
    args = ap.parse_args()
    torch.set_num_threads(1)
    task = PlantedTask(PlantedConfig())
    target = task.make_target(0)
    print(f"| method | mmcs | faithfulness | pgd_faithfulness (k={args.pgd_steps}) | ratio | fit+score CPU s |")
    print("|---|---|---|---|---|---|", flush=True)
    for name in planted_methods(args.methods.split(",")):
        spec = get_method(name)
        if spec.applies_to(task) is not None:
            continue
        cfg = spec.Cfg.model_validate({k: v for k, v in FAST_SETTINGS.get(name, {}).items() if k in spec.Cfg.model_fields})
        t0 = time.process_time()
        m = score(fit_blind(spec, target, task, cfg, FitContext(seed=0)), task, pgd_steps=args.pgd_steps).metrics
        cpu = time.process_time() - t0
        f, p = m["faithfulness"], m["pgd_faithfulness"]
        ratio = p / f if f > 0 else math.inf
        print(f"| {name} | {m.get('mmcs', math.nan):.3f} | {f:.3g} | {p:.3g} | {ratio:.3g} | {cpu:.0f} |", flush=True)


if __name__ == "__main__":
    main()
