"""Training throughput of every SAE variant mechscope and SAELens both have, at d = 512, 8192 latents, k = 32.

For each variant (ReLU/Standard, TopK, BatchTopK, JumpReLU, Matryoshka BatchTopK) it trains
mechscope's `train_coder` and SAELens's own `SAETrainer` + training SAE on the very same
activations, interleaved in one run, and reports activations per CPU-second of this process
(`time.process_time`, so the ratio holds on a shared machine; say the load). Set-up (buffer,
b_dec init, SAE construction) is cancelled out: each trainer runs `--short` and `--long` steps and
the rate is (long − short) × batch / (CPU-s(long) − CPU-s(short)). A warm-up run comes first.

    .venv/bin/python benchmarks/sae_speed.py [--variants topk,relu] [--batch 1024] [--short 2] [--long 6] [--threads 1]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import torch

from mechscope.decompose.activation_buffer import tensor_source
from mechscope.decompose.dictionary import (
    BatchTopKOptions,
    DictionaryConfig,
    JumpReLUOptions,
    ReLUOptions,
    TopKOptions,
    train_coder,
)
from mechscope.decompose.sae_matryoshka import MatryoshkaCoder, matryoshka_widths

D, C, K = 512, 8192, 32
VARIANTS = ("relu", "topk", "batchtopk", "jumprelu", "matryoshka")


def activations(n: int, seed: int = 0) -> torch.Tensor:
    """[n, D] sparse sums of 16 of 4096 random unit directions: SAE-shaped data, made locally."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.nn.functional.normalize(torch.randn(4096, D, generator=g), dim=1)
    idx = torch.randint(0, 4096, (n, 16), generator=g)
    coef = torch.rand(n, 16, generator=g)
    return torch.einsum("nk,nkd->nd", coef, dirs[idx])


def ours(variant: str, x: torch.Tensor, steps: int, batch: int) -> float:
    """CPU seconds of one mechscope training run of `steps` steps."""
    common: dict[str, Any] = {"n_latents": C, "steps": steps, "batch_size": batch, "buffer_size": 4 * batch}
    cfg: DictionaryConfig = {
        "relu": lambda: ReLUOptions(**common),
        "topk": lambda: TopKOptions(k=K, **common),
        "batchtopk": lambda: BatchTopKOptions(k=K, **common),
        "jumprelu": lambda: JumpReLUOptions(**common),
        "matryoshka": lambda: BatchTopKOptions(k=K, **common),
    }[variant]()
    make = partial(MatryoshkaCoder, levels=4) if variant == "matryoshka" else None
    k = None if variant in ("relu", "jumprelu") else K
    t = time.process_time()
    train_coder(tensor_source(x), cfg, C, k, True, torch.Generator().manual_seed(0), make_coder=make)
    return time.process_time() - t


def saelens(variant: str, x: torch.Tensor, steps: int, batch: int) -> float:
    """CPU seconds of one SAELens training run (its SAE built inside the timed span, as ours)."""
    import sae_lens
    from sae_lens import SAETrainer
    from sae_lens.config import SAETrainerConfig

    def batches() -> Iterator[torch.Tensor]:
        i = 0
        while True:
            yield x[(torch.arange(batch) + i) % x.shape[0]]
            i += batch

    t = time.process_time()
    sae = {
        "relu": lambda: sae_lens.StandardTrainingSAE(sae_lens.StandardTrainingSAEConfig(d_in=D, d_sae=C)),
        "topk": lambda: sae_lens.TopKTrainingSAE(sae_lens.TopKTrainingSAEConfig(d_in=D, d_sae=C, k=K)),
        "batchtopk": lambda: sae_lens.BatchTopKTrainingSAE(sae_lens.BatchTopKTrainingSAEConfig(d_in=D, d_sae=C, k=K)),
        "jumprelu": lambda: sae_lens.JumpReLUTrainingSAE(sae_lens.JumpReLUTrainingSAEConfig(d_in=D, d_sae=C)),
        "matryoshka": lambda: sae_lens.MatryoshkaBatchTopKTrainingSAE(sae_lens.MatryoshkaBatchTopKTrainingSAEConfig(
            d_in=D, d_sae=C, k=K, matryoshka_widths=matryoshka_widths(C))),
    }[variant]()  # fmt: skip
    cfg = SAETrainerConfig(total_training_samples=steps * batch, train_batch_size_samples=batch, lr=2e-4, lr_end=2e-4)
    SAETrainer(cfg, sae, batches()).fit()
    return time.process_time() - t


def rate(fn: Callable[[int], float], short: int, long: int, batch: int) -> tuple[float, float]:
    """(activations per CPU-second of the training steps alone, CPU-s of the long run)."""
    t_short, t_long = fn(short), fn(long)
    return (long - short) * batch / max(t_long - t_short, 1e-9), t_long


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--short", type=int, default=2)
    ap.add_argument("--long", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x = activations(8 * args.batch)
    try:
        from mechscope.decompose.import_dictionary import quiet_import

        have_saelens = quiet_import("sae_lens") is not None
    except ImportError:
        have_saelens = False
    if not have_saelens:
        print("SAELens not installed (pip install -e '.[saelens]'): mechscope alone")
    print(f"d={D} latents={C} k={K} batch={args.batch}, {args.threads} thread(s), "
          f"rate from {args.long} − {args.short} steps, activations per CPU-second")  # fmt: skip
    print("| variant | mechscope act/CPU-s | SAELens act/CPU-s | ours × faster |")
    print("|---|---|---|---|")
    for variant in args.variants.split(","):
        runs: dict[str, Callable[[int], float]] = {"mechscope": lambda n, v=variant: ours(v, x, n, args.batch)}
        if have_saelens:
            runs["saelens"] = lambda n, v=variant: saelens(v, x, n, args.batch)
        for fn in runs.values():  # warm-up: imports, allocator, first calls
            fn(1)
        rates = {name: rate(fn, args.short, args.long, args.batch)[0] for name, fn in runs.items()}
        peer = rates.get("saelens")
        ratio = f"{rates['mechscope'] / peer:.2f}×" if peer else "–"
        print(f"| {variant} | {rates['mechscope']:.0f} | {f'{peer:.0f}' if peer else '–'} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
