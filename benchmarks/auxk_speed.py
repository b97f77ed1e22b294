"""A TopK training step's cost as latents die: AuxK's sparse form against its dense form, in one run.

AuxK reconstructs the residual from the top-k_aux dead latents (k_aux = d/2). Its dense form costs five
[B, n_dead] × d products a step, so a run slows as latents die; the sparse form (`mechscope/decompose/auxk.py`)
works on the B·k_aux entries. This times one `train_step` + backward of a TopK coder (d 512, 8,192 latents,
k 32, batch 1,024: `sae_speed.py`'s size) with n_dead latents marked dead, each form in turn, CPU-ms per step
(median of `--repeats`, `time.process_time`, so the ratio holds on a shared machine; say the load).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/auxk_speed.py [--dead 0,1000,2000,3000,4000,6000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mechscope.decompose import auxk
from mechscope.decompose.dictionary import SparseCoder, TopKOptions

D, C, K, B = 512, 8192, 32, 1024


def step_ms(coder: SparseCoder, x: torch.Tensor, dead: torch.Tensor, repeats: int, sparse: bool) -> float:
    """One form forced: the sparse one at any count (no minimum, no density limit) or the dense one."""
    auxk.AUX_SPARSE_MIN_DEAD, auxk.AUX_SPARSE_BELOW = (0, float("inf")) if sparse else (10**9, 0.0)
    cfg = TopKOptions(k=K)
    times = []
    for _ in range(repeats + 1):  # the first warms the kept buffer and the allocator
        t = time.process_time()
        out = coder.train_step(x, x, cfg, dead)
        coder.zero_grad(set_to_none=True)
        out.loss.backward()
        times.append(time.process_time() - t)
    return 1000 * statistics.median(times[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dead", default="0,1000,2000,3000,4000,6000")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    coder = SparseCoder(D, D, C, "topk", K, True, g)
    x = torch.randn(B, D, generator=g) / D**0.5
    print(f"TopK step + backward, d {D}, {C} latents, k {K}, k_aux {D // 2}, batch {B}, {args.threads} thread(s)")
    print("| dead latents | the default takes | dense AuxK ms | sparse AuxK ms | dense ÷ sparse |")
    print("|---|---|---|---|---|")
    defaults = auxk.AUX_SPARSE_MIN_DEAD, auxk.AUX_SPARSE_BELOW
    for n_dead in (int(n) for n in args.dead.split(",")):
        dead = torch.zeros(C, dtype=torch.bool)
        dead[torch.randperm(C, generator=g)[:n_dead]] = True
        auxk.AUX_SPARSE_MIN_DEAD, auxk.AUX_SPARSE_BELOW = defaults
        taken = "none" if n_dead == 0 else "sparse" if auxk.uses_sparse_aux(x, n_dead, min(D // 2, n_dead)) else "dense"
        dense, sparse = step_ms(coder, x, dead, args.repeats, False), step_ms(coder, x, dead, args.repeats, True)
        print(f"| {n_dead} | {taken} | {dense:.0f} | {sparse:.0f} | {dense / sparse:.2f}× |")
    auxk.AUX_SPARSE_MIN_DEAD, auxk.AUX_SPARSE_BELOW = defaults


if __name__ == "__main__":
    main()
