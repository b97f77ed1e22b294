"""SAEs and SPD on the local causal LM, scored by the next-token loss that survives the splice.

On the demo GPT-2 (`mechscope.real.causal_lm`, trained on the shipped licence corpus; cached), at
the residual stream after block 1 of 4 (`transformer.h.1`):

- mechscope's sae-topk (k = 32) trained on an activation cache (`real.activation_cache` +
  `real.train.train_sae_cached`), and SAELens's own `TopKTrainingSAE` + `SAETrainer` fed batches
  from the very same cache — same width, k, batch, steps, learning rate and schedule
  (5 % linear warm-up, linear decay over the last 30 %);
- for both, on the held-out blocks: ce_loss_recovered, kl_spliced, FVE, L0, dead fraction, and
  training throughput (activations/s, process CPU time) in this one run, as a ratio;
- SPD of the MLP of block 0 (`c_fc`, `c_proj`; the one MLP whose ablation costs much loss) on the
  one SPD engine (`spd.fit`): CE / KL under causal-importance masks and under the worst-case masks
  of `metrics/pgd.py` (`real.splice_pgd`), and the masked-loss report (stochastic, all-on, all-off);
- the dashboard of the sae-topk run, written to OUT/dashboard/index.html.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/causal_lm.py [--steps 1500] [--spd-steps 600]
        [--spd-importance 1e-4] [--spd-pnorm 2] [--pgd-steps 4] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mechscope.decompose.sae import SAETopKConfig
from mechscope.decompose.spd import SPDConfig
from mechscope.hooks import capture
from mechscope.real.activation_cache import ActivationCache, build_cache
from mechscope.real.causal_lm import CORPUS, PRESETS, corpus_windows, local_lm
from mechscope.real.latents import dashboard_data, unembedding
from mechscope.real.models import OutputModel, load_model
from mechscope.real.spd_model import TokenTask, fit_spd, masked_loss_report
from mechscope.real.splice import (
    evaluate_dictionary,
    evaluate_spd,
    lm_forward,
    replaced,
    splice_losses,
    zero_ablated,
)
from mechscope.real.splice_pgd import pgd_splice
from mechscope.real.train import train_sae_cached
from mechscope.report.dashboard import write_dashboard

SITE, MLP = "transformer.h.1", "transformer.h.0.mlp"
"""MLP 0: zero-ablating it costs 4.4 nats (MLPs 1–3: under 0.13, too small a denominator for a ratio)."""
WIDTH, K, BATCH, LR = 1024, 32, 1024, 2e-3


class Clock:
    """Wall and process-CPU seconds of a block."""

    def __enter__(self) -> Clock:
        self.w, self.c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *_: Any) -> None:
        self.wall, self.cpu = time.perf_counter() - self.w, time.process_time() - self.c


def train_saelens(cache: ActivationCache, steps: int, seed: int) -> tuple[Any, Clock]:
    from sae_lens import SAETrainer
    from sae_lens.config import SAETrainerConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

    torch.manual_seed(seed)
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=cache.sites[SITE], d_sae=WIDTH, k=K))
    cfg = SAETrainerConfig(total_training_samples=steps * BATCH, train_batch_size_samples=BATCH, lr=LR, lr_end=LR,
                           lr_warm_up_steps=int(0.05 * steps), lr_decay_steps=int(0.3 * steps))  # fmt: skip
    source = cache.source(SITE, torch.Generator().manual_seed(seed))

    def batches() -> Iterator[Tensor]:
        while True:
            yield source(BATCH)[0]

    with Clock() as clock:
        SAETrainer(cfg, sae, batches()).fit()
    sae.eval()
    return sae, clock


@torch.no_grad()
def saelens_metrics(sae: Any, target: Any, held: Tensor) -> dict[str, Any]:
    def fn(h: Tensor) -> Tensor:
        return sae.decode(sae.encode(h.reshape(-1, h.shape[-1]))).reshape(h.shape)

    losses = splice_losses(lm_forward(target), replaced(target, SITE, fn), zero_ablated(target, SITE), held)
    with capture(target, [SITE], "output") as acts:
        target(held)
    x = acts[SITE].reshape(-1, acts[SITE].shape[-1])
    z = sae.encode(x)
    x_hat = sae.decode(z)
    fve = float(1 - (x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum())
    return {**losses.as_dict(), "fve": fve, "l0": float((z > 0).sum(-1).float().mean()),
            "dead_frac": float(1 - (z > 0).any(0).float().mean())}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--spd-steps", type=int, default=600)
    ap.add_argument("--spd-C", type=int, default=256)
    ap.add_argument("--spd-importance", type=float, default=1e-4)
    ap.add_argument("--spd-pnorm", type=float, default=2.0)
    ap.add_argument("--pgd-steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-spd", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("/tmp/mechscope-causal-lm"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out: Path = args.out
    results: dict[str, Any] = {}

    with Clock() as c_lm:
        lm_dir = local_lm(CORPUS, "demo", 0, lambda d, t: print(f"  LM {d}/{t}", flush=True) if d % 100 == 0 else None)
    info = lm_dir.info
    print(f"demo LM {lm_dir.path}: held-out CE {info['held_out_ce']:.3f} nats, {info['n_params']} params, "
          f"trained in {info['cpu_s']:.0f} CPU-s (this call {c_lm.wall:.1f}s)", flush=True)  # fmt: skip
    results["lm"] = {k: v for k, v in info.items() if k != "config"}
    lm = load_model(lm_dir.path)
    target = OutputModel(lm.model, True)
    T = PRESETS["demo"].seq_len
    train = corpus_windows(lm.tokenizer, CORPUS, T, split="train")
    held = corpus_windows(lm.tokenizer, CORPUS, T, split="held_out")
    with Clock() as c_cache:
        build_cache(target, train, [SITE], out / "activations", shard_seqs=128, model_id=str(lm_dir.path))
    cache = ActivationCache(out / "activations")
    print(f"activation cache: {cache.n_rows} rows of {SITE} in {c_cache.wall:.1f}s; held-out {held.numel()} tokens", flush=True)

    # --- ours vs SAELens on the same cache (interleaved order: SAELens first, then ours) ----------
    sae_lens_sae, c_peer = train_saelens(cache, args.steps, args.seed)
    print(f"saelens topk: {c_peer.wall:.1f}s wall, {c_peer.cpu:.1f} CPU-s", flush=True)
    cfg = SAETopKConfig(n_latents=WIDTH, k=K, steps=args.steps, batch_size=BATCH, lr=LR)
    with Clock() as c_ours:
        dec = train_sae_cached(target, cache, SITE, cfg, args.seed)
    print(f"mechscope sae-topk: {c_ours.wall:.1f}s wall, {c_ours.cpu:.1f} CPU-s", flush=True)
    ours = evaluate_dictionary(dec, held, SITE)
    peer = saelens_metrics(sae_lens_sae, target, held)
    samples = args.steps * BATCH
    for name, m, c in (("sae-topk", ours, c_ours), ("saelens-topk", peer, c_peer)):
        m.update({"train_wall_s": c.wall, "train_cpu_s": c.cpu, "acts_per_s": samples / c.wall, "acts_per_cpu_s": samples / c.cpu})
        results[name] = m
    results["throughput_ratio_wall"] = c_peer.wall / c_ours.wall
    results["throughput_ratio_cpu"] = c_peer.cpu / c_ours.cpu

    data = dashboard_data(dec, held, lm.tokenizer, SITE, "sae-topk", {k: v for k, v in ours.items() if isinstance(v, float)},
                          unembed=unembedding(lm.model))  # fmt: skip
    index = write_dashboard(data, out / "dashboard")
    print(f"dashboard: {index}", flush=True)

    # --- SPD on the MLP of block 0 --------------------------------------------------------------
    if not args.skip_spd:
        spd_cfg = SPDConfig(modules=[f"{MLP}.c_fc", f"{MLP}.c_proj"], steps=args.spd_steps, batch_size=16, C=args.spd_C,
                            importance_coeff=args.spd_importance, pnorm=args.spd_pnorm)  # fmt: skip
        with Clock() as c_spd:
            spd = fit_spd(target, TokenTask(train, True), spd_cfg, args.seed,
                               progress=lambda d, t: print(f"  SPD {d}/{t}", flush=True) if d % 100 == 0 else None)  # fmt: skip
        ci = evaluate_spd(spd, held, MLP)
        pgd = pgd_splice(spd, held, ci["ce_clean"], ci["ce_zero_ablated"], args.pgd_steps)
        results["spd"] = {**ci, **pgd, **masked_loss_report(spd, held, True), "train_wall_s": c_spd.wall,
                          "train_cpu_s": c_spd.cpu, "config": spd_cfg.model_dump()}  # fmt: skip
        spd.save(out / "spd")
        sdata = dashboard_data(spd, held, lm.tokenizer, f"{MLP}.c_proj", "spd", {}, unembed=unembedding(lm.model))
        write_dashboard(sdata, out / "dashboard-spd-c_proj")

    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    print(f"\nlocal GPT-2 (demo), {SITE} (residual stream, block 1 of 4); width {WIDTH}, k {K}, {args.steps} steps × {BATCH}; "
          f"{args.threads} thread(s); held-out {held.numel()} tokens")  # fmt: skip
    keys = ("ce_loss_recovered", "kl_spliced", "fve", "l0", "dead_frac", "ce_clean", "ce_spliced", "ce_zero_ablated")
    print(f"{'run':14s} " + " ".join(f"{k:>17s}" for k in (*keys, "acts/s", "train CPU-s")))
    rows = [(n, results[n]) for n in ("sae-topk", "saelens-topk", "spd") if n in results]
    for name, m in rows:
        extra = (f"{m['acts_per_s']:17.0f}" if "acts_per_s" in m else f"{'':>17s}") + f" {m['train_cpu_s']:17.1f}"
        print(f"{name:14s} " + " ".join(f"{m[k]:17.4g}" for k in keys) + extra)
    print(f"throughput mechscope / SAELens: {results['throughput_ratio_wall']:.2f}x wall, {results['throughput_ratio_cpu']:.2f}x CPU")
    if "spd" in results:
        s = results["spd"]
        print(f"SPD under PGD masks ({s['pgd_steps']} steps): ce_loss_recovered {s['ce_loss_recovered_pgd']:.4g}, "
              f"kl_spliced {s['kl_spliced_pgd']:.4g}, ce {s['ce_spliced_pgd']:.4g}; pgd_faithfulness {s['pgd_faithfulness']:.4g}")
        print(f"SPD masked KL: ci {s['ci.kl']:.4g}, stochastic {s['stochastic.kl']:.4g}, all_on {s['all_on.kl']:.4g}, "
              f"zero {s['zero.kl']:.4g}; l0_ci {s['l0_ci']:.1f} of {s['n_components']:.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
