"""The GPU tier (issue 17, Build item 4): SynthSAEBench-16k at SAELens's published settings, in one go.

Trains sae-batchtopk, sae-jumprelu, sae-matryoshka and the SAELens peers (saelens-batchtopk,
saelens-jumprelu, saelens-matryoshka) through `mechscope bench` — the project's one scorer — and
prints latent F1 / MCC / L0 beside the published SynthSAEBench-16k table, with the fit's wall time
per SAE (the bench's `wall_s`: the fit alone, not target building or scoring).

    python benchmarks/gpu_tier.py --size full --device cuda     # the tier: one H200, ~6 SAEs
    python benchmarks/gpu_tier.py --size cpu                    # the CPU stand-in (scaled down)
    python benchmarks/gpu_tier.py --size tiny                   # the script's own smoke test

Sizes (`--steps` overrides any of them):
- full: task `synth-sae-bench-16k` (16,384 features, d = 768), width 4,096, L0 (k) 25, batch 1,024,
  lr 3e-4, 200M samples = 195,313 steps — SAELens's published settings;
- cpu: task `synth-sae-bench-4k` (4,096 features, d = 192: 16k's N/d and tree share), width 1,024
  (16k's width/N), k 12 (16k's k / true L0 = 25 / 34.4, at the 4k task's true L0 16.0), batch
  1,024, each method's own lr, 600 steps (614k samples: 0.3 % of the published budget);
- tiny: task `synth-sae-bench` (1,024 × 128), width 256, k 5, 20 steps (checks the path only).

Published (SynthSAEBench-16k, `synth-sae-bench-16k-v2`, L0 25): BatchTopK F1 .7316 / MCC .7574,
Matryoshka F1 .8793 / MCC .7927.
"""

from __future__ import annotations

import argparse
import os
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
        "steps": 600,
        "batch_size": 1024,
        "lr": None,
    },
    "tiny": {"task": "synth-sae-bench", "n_latents": 256, "k": 5, "steps": 20, "batch_size": 256, "lr": None},
}


def bench_command(
    size: dict[str, object], methods: list[str], out: Path, device: str, workers: int
) -> list[str]:
    sets = [
        f"method.{key}={size[key]}"
        for key in ("n_latents", "k", "steps", "batch_size", "lr")
        if size[key] is not None
    ]
    cmd = [sys.executable, "-m", "mechscope.cli", "bench", "--tasks", str(size["task"]), "--methods", ",".join(methods),
           "--seeds", "1", "--out", str(out), "--device", device, "--workers", str(workers)]  # fmt: skip
    for s in sets:
        cmd += ["--set", s]
    return cmd


def table(out: Path, size: dict[str, object]) -> str:
    from mechscope.bench.results import RESULTS, read_results

    rows = sorted(read_results(out / RESULTS), key=lambda r: str(r.get("method")))
    lines = [f"SynthSAEBench tier — task {size['task']}, width {size['n_latents']}, k {size['k']}, "
             f"{size['steps']} steps × {size['batch_size']} = {int(size['steps']) * int(size['batch_size']):,} samples",  # type: ignore[call-overload]
             "| method | latent_f1 | mcc | l0 | dead | fit wall_s | published F1 / MCC (16k, L0 25) |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        variant = str(r.get("method", "")).split("-", 1)[-1]
        pub = PUBLISHED.get(variant)
        pub_s = f"{pub[0]:.4f} / {pub[1]:.4f}" if pub else "–"
        cells = [_fmt(r.get(k)) for k in ("latent_f1", "mcc", "l0", "dead_frac", "wall_s")]
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
    cmd = bench_command(size, args.methods.split(","), out, args.device, args.workers)
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).parents[1]) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    done = subprocess.run(cmd, env=env)
    print(f"bench finished in {time.perf_counter() - t0:.0f} s wall (exit {done.returncode})\n")
    print(table(out, size))
    sys.exit(done.returncode)


if __name__ == "__main__":
    main()
