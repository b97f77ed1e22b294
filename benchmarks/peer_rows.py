"""Each mechscope SAE variant beside its SAELens peer, blind defaults, equal samples seen.

    python benchmarks/peer_rows.py [--tasks tms-40-10,resid-mlp-1l] [--seeds 0,1,2] [--pairs topk,jumprelu]
                                   [--jsonl out.jsonl] [--steps N]

For every task × pair × seed it fits our variant, SAELens's at its defaults (`preset=default`) and
at the documented short-run setting (`preset=short`, lr 2e-3), all through `fit_blind` on the same
site, inputs, seeds, width, k, batch size and steps; scores each with `mechscope.metrics.score`
(no ablation); and times each fit in CPU seconds of this process (one thread), so the throughput
ratio peer / ours is measured in the same run. "Δ vs peer's better" is ours − the better preset's mean, per
metric (the issue's bar: both ≥ −0.01). Rows are appended to `--jsonl` as they finish
(a rerun skips rows already there), and the table is printed from all rows at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from mechscope.decompose import FitContext, get_method
from mechscope.decompose.dictionary import default_batch_size
from mechscope.decompose.registry import fit_blind
from mechscope.metrics.score import score
from mechscope.zoo import get_task

PAIRS = {
    "relu": ("sae-relu", "saelens-standard"),
    "topk": ("sae-topk", "saelens-topk"),
    "batchtopk": ("sae-batchtopk", "saelens-batchtopk"),
    "jumprelu": ("sae-jumprelu", "saelens-jumprelu"),
    "matryoshka": ("sae-matryoshka", "saelens-matryoshka"),
    "topk-sparsify": ("sae-topk", "sparsify-topk"),
}
TASKS = ("tms-40-10", "resid-mlp-1l", "stress-iid", "synth-sae-bench")


def run_one(
    task_name: str, method: str, seed: int, sets: dict[str, Any], target: torch.nn.Module
) -> dict[str, Any]:
    task = get_task(task_name)
    spec = get_method(method)
    cfg = spec.Cfg(**sets)
    cpu = time.process_time()
    dec = fit_blind(spec, target, task, cfg, FitContext(seed=seed))
    cpu = time.process_time() - cpu
    metrics = score(dec, task, ablation=False).metrics
    site = dec.sites[0]
    coder = dec.coder(site)  # type: ignore[attr-defined]
    d = coder.d_in
    steps = int(cfg.steps)
    batch = getattr(cfg, "batch_size", None) or default_batch_size(d, d)
    return {"task": task_name, "method": method, "seed": seed, "sets": sets, "mmcs": metrics["mmcs"],
            "activity_f1": metrics["activity_f1"], "l0": metrics.get("l0"), "n_latents": coder.n_latents,
            "k": coder.k, "samples_seen": steps * batch, "fit_cpu_s": cpu}  # fmt: skip


def key(row: dict[str, Any]) -> str:
    return json.dumps([row["task"], row["method"], row["seed"], row["sets"]], sort_keys=True)


def mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def table(rows: list[dict[str, Any]], tasks: list[str], pairs: list[str]) -> str:
    head = ("| task | ours | peer | ours mmcs | ours activity_f1 | peer default mmcs / f1 | peer short mmcs / f1 "
            "| Δ vs peer's better (mmcs / f1) | seeds | samples seen | ours × faster (CPU s) |")  # fmt: skip
    lines = [head, "|" + "---|" * 11]

    def pick(task: str, method: str, sets: dict[str, Any]) -> list[dict[str, Any]]:
        return [r for r in rows if r["task"] == task and r["method"] == method
                and {k: v for k, v in r["sets"].items() if k != "steps"} == sets]  # fmt: skip

    for task in tasks:
        for pair in pairs:
            ours_name, peer_name = PAIRS[pair]
            ours = pick(task, ours_name, {})
            default = pick(task, peer_name, {"preset": "default"})
            short = pick(task, peer_name, {"preset": "short"})
            if not ours and not default:
                continue

            def both(rs: list[dict[str, Any]]) -> str:
                return f"{mean_std([r['mmcs'] for r in rs])} / {mean_std([r['activity_f1'] for r in rs])}"

            cpu_ours = sum(r["fit_cpu_s"] for r in ours) / max(1, len(ours))
            peers = default + short
            cpu_peer = sum(r["fit_cpu_s"] for r in peers) / max(1, len(peers))
            ratio = (
                f"{cpu_peer / cpu_ours:.1f}× ({cpu_ours:.1f} vs {cpu_peer:.1f})" if ours and peers else "–"
            )
            delta = "–"
            if ours and peers:  # the peer's better preset, per metric (means over seeds)
                best = [max(statistics.mean(r[m] for r in rs) for rs in (default, short) if rs)
                        for m in ("mmcs", "activity_f1")]  # fmt: skip
                d = [statistics.mean(r[m] for r in ours) - b for m, b in zip(("mmcs", "activity_f1"), best, strict=True)]
                delta = f"{d[0]:+.3f} / {d[1]:+.3f}" + (" ✓" if min(d) >= -0.01 else " **gap**")
            seeds = sorted({r["seed"] for r in ours + peers})
            samples = sorted({r["samples_seen"] for r in ours + peers})
            lines.append(f"| {task} | {ours_name} | {peer_name} | {mean_std([r['mmcs'] for r in ours])} | "
                         f"{mean_std([r['activity_f1'] for r in ours])} | {both(default)} | {both(short)} | {delta} | "
                         f"{','.join(map(str, seeds))} | {'/'.join(map(str, samples))} | {ratio} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--pairs", default=",".join(PAIRS))
    parser.add_argument("--seeds", default="0")
    parser.add_argument(
        "--steps", type=int, default=None, help="override both sides' steps (default: theirs, equal)"
    )
    parser.add_argument("--jsonl", default="peer_rows.jsonl")
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    tasks, pairs = args.tasks.split(","), args.pairs.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.jsonl)
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()] if out.exists() else []
    done = {key(r) for r in rows}
    extra = {"steps": args.steps} if args.steps else {}
    if not args.table_only:
        for task_name in tasks:
            target = get_task(task_name).make_target(0)
            for seed in seeds:
                for pair in pairs:
                    ours, peer = PAIRS[pair]
                    for method, sets in (
                        (ours, {}),
                        (peer, {"preset": "default"}),
                        (peer, {"preset": "short"}),
                    ):
                        probe = {"task": task_name, "method": method, "seed": seed, "sets": {**sets, **extra}}
                        if key(probe) in done:
                            continue
                        row = run_one(task_name, method, seed, {**sets, **extra}, target)
                        rows.append(row)
                        done.add(key(probe))  # sae-topk is the own side of two pairs: fit it once
                        with out.open("a") as f:
                            f.write(json.dumps(row) + "\n")
                        print(json.dumps({k: row[k] for k in ("task", "method", "seed", "sets", "mmcs", "activity_f1",
                                                              "fit_cpu_s")}), flush=True)  # fmt: skip
    print(table([r for r in rows if all(r["sets"].get(k) == v for k, v in extra.items())], tasks, pairs))


if __name__ == "__main__":
    main()
