"""What SPD converges to on the stress variants (issue 19, item 4): per variant and seed, the
project's scores plus the evidence behind `mechscope/report/spd_stress_notes.py` — how many true
features own a component (cos > 0.9), how many live components carry ≥ 2 features' columns (merged),
how many features are carried by none (‖P_c[:, i]‖ / ‖W[:, i]‖ ≥ 0.2 for no c), and the causal-importance
pattern errors on one-hot inputs. SPD runs with the stress preset's settings (bench/presets.py).

    .venv/bin/python benchmarks/spd_stress.py [--variants stress-hierarchical,...] [--seeds 0] [--set method.C=90]
"""

from __future__ import annotations

import argparse
import time
from fnmatch import fnmatch
from typing import Any

import torch

from mechscope.bench.presets import PRESETS
from mechscope.bench.run import CellRequest, resolve
from mechscope.decompose import FitContext
from mechscope.decompose.registry import fit_blind
from mechscope.metrics import score

VARIANTS = ("stress-iid", "stress-hierarchical", "stress-dense", "stress-overcomplete", "stress-correlated",
            "synth-sae-bench")


def diagnose(variant: str, seed: int, extra: tuple[str, ...]) -> dict[str, Any]:
    sets = tuple(s for t, m, ss in PRESETS["stress"].sets if fnmatch(variant, t) and fnmatch("spd", m) for s in ss)
    cell = resolve(CellRequest(variant, "spd", seed, sets + extra))
    task, target = cell.task, cell.task.make_target(cell.target_seed)
    t0 = time.process_time()
    dec = fit_blind(cell.spec, target, task, cell.method_config, FitContext(seed=seed))
    cpu = time.process_time() - t0
    truth = task.ground_truth(target)
    m = score(dec, task, truth).metrics
    W = target.W.weight.detach()  # (d, n): the true mechanisms are W[:, i] e_iᵀ
    n = W.shape[1]
    P = dec.components("W")  # (C, d, n)
    alive = (dec.activity(task.sample(8192, torch.Generator().manual_seed(99)))["W"] > 0.1).any(0)
    Pf = P.flatten(1)
    # cos(P_c, W[:, i] e_iᵀ) = P_c[:, i] · W[:, i] / (‖P_c‖ ‖W[:, i]‖)
    cos = torch.einsum("cdi,di->ci", P, W) / (Pf.norm(dim=1, keepdim=True).clamp_min(1e-12) * W.norm(dim=0))
    carry = P.norm(dim=1) / W.norm(dim=0).clamp_min(1e-12)  # (C, n)
    carried = carry[alive] >= 0.2
    return {"variant": variant, "seed": seed, "fit_cpu_s": cpu, "C": P.shape[0], "mmcs": m["mmcs"], "ml2r": m["ml2r"],
            "activity_f1": m["activity_f1"], "alive": int(alive.sum()),
            "ci_errors": dec.extra_metrics(task, truth)["ci_pattern_errors"],
            "own": int((cos.max(0).values > 0.9).sum()), "merged": int((carried.sum(1) >= 2).sum()),
            "uncarried": int((~carried.any(0)).sum()), "n": n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="extra KEY=VALUE for the SPD cell")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print("| variant | seed | C | mmcs | ml2r | activity_f1 | alive | ci_pattern_errors | own component "
          "| merged comps | uncarried | fit CPU s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    for v in args.variants.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            r = diagnose(v, seed, tuple(args.sets))
            print(f"| {v} | {seed} | {r['C']} | {r['mmcs']:.4f} | {r['ml2r']:.3f} | {r['activity_f1']:.3f} | "
                  f"{r['alive']} | {r['ci_errors']:.0f} | {r['own']}/{r['n']} | {r['merged']} | {r['uncarried']} | "
                  f"{r['fit_cpu_s']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
