"""The GPU tier (issue 17, Build item 4): SynthSAEBench-16k at SAELens's published settings, in one go.

Trains sae-batchtopk, sae-jumprelu, sae-matryoshka and the SAELens peers (saelens-batchtopk,
saelens-jumprelu, saelens-matryoshka) through `mechscope bench` — the project's one scorer, one
bench per SAE — and prints latent F1 / MCC / L0 beside the published SynthSAEBench-16k table, with
the fit's wall time per SAE (the bench's `wall_s`: the fit alone, not target building or scoring)
and the CPU-seconds of each SAE's whole bench (target load, fit, scoring).

    python benchmarks/gpu_tier.py --size full --device cuda     # the tier: one H200, ~6 SAEs
    python benchmarks/gpu_tier.py --size cpu                    # the CPU stand-in (scaled down)
    python benchmarks/gpu_tier.py --size tiny                   # the script's own smoke test

Sizes (`--steps` overrides any of them):
- full: task `synth-sae-bench-16k` (16,384 features, d = 768), width 4,096, L0 (k) 25, batch 1,024,
  lr 3e-4, 200M samples = 195,313 steps — SAELens's published settings;
- cpu: task `synth-sae-bench-4k` (4,096 features, d = 192: 16k's N/d and tree share), width 1,024
  (16k's width/N), k 12 (16k's k / true L0 = 25 / 34.4, at the 4k task's true L0 16.0), batch
  1,024, each method's own lr, 300 steps (307k samples: 0.15 % of the published budget);
- tiny: task `synth-sae-bench` (1,024 × 128), width 256, k 5, 20 steps (checks the path only).

Published (SynthSAEBench-16k, `synth-sae-bench-16k-v2`, L0 25): BatchTopK F1 .7316 / MCC .7574,
Matryoshka F1 .8793 / MCC .7927.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

METHODS = (
    "sae-batchtopk",
    "sae-jumprelu",
    "sae-matryoshka",
    "saelens-batchtopk",
    "saelens-jumprelu",
    "saelens-matryoshka",
)
PUBLISHED = {"batchtopk": (0.7316, 0.7574), "matryoshka": (0.8793, 0.7927)}
"""(latent F1, MCC) of SynthSAEBench-16k at L0 25 (Chanin et al. 2026, `synth-sae-bench-16k-v2`)."""
SIZES: dict[str, dict[str, object]] = {
    "full": {
        "task": "synth-sae-bench-16k",
        "n_latents": 4096,
        "k": 25,
        "steps": 195_313,
        "batch_size": 1024,
        "lr": 3e-4,
    },
    "cpu": {
        "task": "synth-sae-bench-4k",
        "n_latents": 1024,
        "k": 12,
        "steps": 300,
        "batch_size": 1024,
        "lr": None,
    },
    "tiny": {"task": "synth-sae-bench", "n_latents": 256, "k": 5, "steps": 20, "batch_size": 256, "lr": None},
}


def bench_command(
    size: dict[str, object], methods: list[str], out: Path, device: str, workers: int
) -> list[str]:
    from mechscope.decompose import get_method

    fields = set.intersection(*(set(get_method(m).Cfg.model_fields) for m in methods))
    sets = [  # a setting only where every method has it: sae-jumprelu prices L0 (l0_coef), it has no k
        f"method.{key}={size[key]}"
        for key in ("n_latents", "k", "steps", "batch_size", "lr")
        if size[key] is not None and key in fields
    ]
    cmd = [sys.executable, "-m", "mechscope.cli", "bench", "--tasks", str(size["task"]), "--methods", ",".join(methods),
           "--seeds", "1", "--out", str(out), "--device", device, "--workers", str(workers)]  # fmt: skip
    for s in sets:
        cmd += ["--set", s]
    return cmd


def table(outs: list[Path], size: dict[str, object], cpu: dict[str, float] | None = None) -> str:
    """The tier's table from bench result dirs; `cpu`: CPU-seconds of each method's whole bench
    (target load, fit and scoring; the fit alone is `wall_s`)."""
    from mechscope.bench.results import RESULTS, read_results

    rows = sorted((r for o in outs if (o / RESULTS).exists() for r in read_results(o / RESULTS)),
                  key=lambda r: str(r.get("method")))  # fmt: skip
    lines = [f"SynthSAEBench tier — task {size['task']}, width {size['n_latents']}, k {size['k']}, "
             f"{size['steps']} steps × {size['batch_size']} = {int(size['steps']) * int(size['batch_size']):,} samples",  # type: ignore[call-overload]
             "| method | latent_f1 | mcc | l0 | dead | fit wall_s | bench CPU-s | published F1 / MCC (16k, L0 25) |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        variant = str(r.get("method", "")).split("-", 1)[-1]
        pub = PUBLISHED.get(variant)
        pub_s = f"{pub[0]:.4f} / {pub[1]:.4f}" if pub else "–"
        cells = [_fmt(r.get(k)) for k in ("latent_f1", "mcc", "l0", "dead_frac", "wall_s")]
        cells.append(_fmt((cpu or {}).get(str(r.get("method")))))
        status = "" if r.get("status") == "ok" else f" ({r.get('status')}: {str(r.get('error', ''))[:60]})"
        lines.append(f"| {r.get('method')}{status} | " + " | ".join(cells) + f" | {pub_s} |")
    return "\n".join(lines)


def _fmt(v: object) -> str:
    return f"{v:.4g}" if isinstance(v, float) else ("–" if v is None else str(v))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=tuple(SIZES), default="cpu")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--workers", type=int, default=1, help="bench worker processes (1 on one GPU)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    size = {**SIZES[args.size], **({"steps": args.steps} if args.steps else {})}
    out = args.out or Path(f"/tmp/mechscope-gpu-tier-{args.size}")
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).parents[1]) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    cpu: dict[str, float] = {}
    code = 0
    for method in args.methods.split(","):  # one bench per SAE, so each gets its own CPU-seconds
        cmd = bench_command(size, [method], out / method, args.device, args.workers)
        print("$ " + " ".join(cmd), flush=True)
        t0, c0 = time.perf_counter(), _children_cpu()
        done = subprocess.run(cmd, env=env)
        cpu[method] = _children_cpu() - c0
        code = code or done.returncode
        print(f"{method}: bench finished in {time.perf_counter() - t0:.0f} s wall, {cpu[method]:.0f} CPU-s "
              f"(exit {done.returncode})\n", flush=True)  # fmt: skip
    print(table([out / m for m in cpu], size, cpu))
    sys.exit(code)


def _children_cpu() -> float:
    """User + system CPU-seconds of every finished child process (the bench and its workers)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


if __name__ == "__main__":
    main()
