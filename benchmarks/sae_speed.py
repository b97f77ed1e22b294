"""Training throughput of a TopK SAE (d = 512, 8192 latents, k = 32) on 2 CPU threads.

Measures activations/s of mechscope's trainer and, when SAELens is installed, of SAELens's own
`SAETrainer` on the very same activations, interleaved in one run (timings on a shared machine
are noisy: compare the ratio, not the absolute numbers). Both train with Adam at batch 4096; the
timed span is whole training runs (warm-up run excluded), data generation excluded.

    .venv/bin/python benchmarks/sae_speed.py [--steps 8] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterator

import torch

from mechscope.decompose.activation_buffer import tensor_source
from mechscope.decompose.dictionary import TopKOptions, train_coder

D, C, K, BATCH = 512, 8192, 32, 4096


def activations(n: int, seed: int = 0) -> torch.Tensor:
    """[n, D] sparse sums of 16 of 4096 random unit directions: SAE-shaped data, made locally."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.nn.functional.normalize(torch.randn(4096, D, generator=g), dim=1)
    idx = torch.randint(0, 4096, (n, 16), generator=g)
    coef = torch.rand(n, 16, generator=g)
    return torch.einsum("nk,nkd->nd", coef, dirs[idx])


def ours(x: torch.Tensor, steps: int) -> float:
    cfg = TopKOptions(n_latents=C, k=K, steps=steps, batch_size=BATCH, buffer_size=4 * BATCH, lr=2e-4)
    t = time.perf_counter()
    train_coder(tensor_source(x), cfg, C, K, True, torch.Generator().manual_seed(0))
    return steps * BATCH / (time.perf_counter() - t)


def saelens(x: torch.Tensor, steps: int, sparse: bool) -> float:
    from sae_lens import SAETrainer
    from sae_lens.config import SAETrainerConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=D, d_sae=C, k=K, use_sparse_activations=sparse))
    cfg = SAETrainerConfig(total_training_samples=steps * BATCH, train_batch_size_samples=BATCH, lr=2e-4, lr_end=2e-4)

    def batches() -> Iterator[torch.Tensor]:
        i = 0
        while True:
            yield x[(torch.arange(BATCH) + i) % x.shape[0]]
            i += BATCH

    trainer = SAETrainer(cfg, sae, batches())
    t = time.perf_counter()
    trainer.fit()
    return steps * BATCH / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x = activations(8 * BATCH)
    runs: dict[str, Callable[[int], float]] = {"mechscope": lambda n: ours(x, n)}
    try:
        import sae_lens  # noqa: F401

        runs["saelens"] = lambda n: saelens(x, n, sparse=False)
        runs["saelens-sparse"] = lambda n: saelens(x, n, sparse=True)
    except ImportError:
        print("SAELens not installed (pip install -e '.[saelens]'): mechscope alone")
    for name, fn in list(runs.items()):  # warm-up (1 step): imports, allocator, first calls
        try:
            fn(1)
        except Exception as err:  # SAELens's sparse mode fails on CPU in some versions
            print(f"{name}: fails here ({type(err).__name__}: {str(err).splitlines()[0][:100]}); left out")
            del runs[name]
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):  # interleaved, so load changes hit every trainer alike
        for name, fn in runs.items():
            rates[name].append(fn(args.steps))
            print(f"  {name}: {rates[name][-1]:.0f} activations/s", flush=True)
    med = {name: statistics.median(r) for name, r in rates.items()}
    print(f"TopK SAE d={D} latents={C} k={K} batch={BATCH}, {args.threads} threads, {args.steps} steps x {args.repeats}")
    for name, r in rates.items():
        print(f"  {name:15s} {med[name]:9.0f} activations/s   (runs: {', '.join(f'{v:.0f}' for v in r)})")
    for name in runs:
        if name != "mechscope":
            print(f"  speed-up vs {name}: {med['mechscope'] / med[name]:.2f}x")


if __name__ == "__main__":
    main()
