"""Attribution-graph construction speed: 4 sites × 1,000 components, 4,096 inputs, 2 CPU threads.

The decomposition is four TopK transcoders (1,000 latents, k = 16) on a 4-layer residual MLP
(100 features, d = 256, 256 neurons per layer; untrained weights — speed does not depend on them).
`build_graph` follows each row's firing latents (one backward pass per slot, all rows at once) and
streams the inputs in chunks of 1,024. The baseline in the same run is the direct approach: one
backward pass per downstream component (every latent of every site, every output), the dense
Jacobian rows; it is timed on one chunk of 512 inputs and scaled ×8 (it is linear in the inputs).
Reported: CPU seconds (user + sys of this process) and wall seconds, peak RSS, edge count.

    .venv/bin/python benchmarks/circuits_speed.py [--threads 2] [--inputs 4096]
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from mechscope.circuits import build_graph
from mechscope.circuits.graph import GraphConfig
from mechscope.circuits.groups import Group, groups_of
from mechscope.decompose.dictionary import SparseCoder
from mechscope.decompose.dictionary_decomposition import DictionaryDecomposition, SiteCoder
from mechscope.zoo.resid_mlp import ResidMLPConfig, ResidMLPTask

SITES, C, K, D = 4, 1_000, 16, 256


def setup() -> tuple[ResidMLPTask, DictionaryDecomposition]:
    task = ResidMLPTask(ResidMLPConfig(n_features=100, d_embed=D, d_mlp=256, n_layers=SITES, feature_prob=0.05), "bench", "")
    model = task.build(0)
    gen = torch.Generator().manual_seed(0)
    coders = {}
    for li in range(SITES):
        coder = SparseCoder(D, D, C, "topk", K, sae=False, generator=gen)
        coders[f"layers.{li}.mlp_out"] = SiteCoder(coder, (f"layers.{li}.mlp_in", "input"))
    return task, DictionaryDecomposition(model, coders)


def dense_groups(dec: DictionaryDecomposition) -> list[Group]:
    """The same groups with every component 'firing' on every row: one backward per component."""
    out = []
    for g in groups_of(dec):
        def fires(a: torch.Tensor, n: int = g.n) -> torch.Tensor:
            return torch.ones(a.shape[0], n, dtype=torch.bool)
        out.append(Group(g.site, g.read, g.n, g.code, g.act, fires, g.writes))
    return out


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--inputs", type=int, default=4_096)
    ap.add_argument("--baseline-inputs", type=int, default=512)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    task, dec = setup()
    x = task.sample(args.inputs, torch.Generator().manual_seed(1))
    build_graph(dec, x[:64])  # warm-up
    c0, t0 = cpu_s(), time.perf_counter()
    graph = build_graph(dec, x, GraphConfig(chunk=1_024))
    ours_cpu, ours_wall = cpu_s() - c0, time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    xb = x[: args.baseline_inputs]
    c0, t0 = cpu_s(), time.perf_counter()
    build_graph(dec, xb, GraphConfig(chunk=args.baseline_inputs, max_slots=C, max_outputs=1_000), groups=dense_groups(dec))
    scale = args.inputs / args.baseline_inputs
    base_cpu, base_wall = (cpu_s() - c0) * scale, (time.perf_counter() - t0) * scale
    print(f"{'variant':<36} {'cpu_s':>8} {'wall_s':>8}")
    print(f"{'build_graph (firing slots, streamed)':<36} {ours_cpu:>8.1f} {ours_wall:>8.1f}")
    print(f"{'one backward per component (×' + format(scale, 'g') + ')':<36} {base_cpu:>8.1f} {base_wall:>8.1f}")
    print(f"speed-up (wall): {base_wall / ours_wall:.1f}×   edges: {graph.n_edges:,}   peak RSS: {peak_mb:.0f} MB   "
          f"threads: {args.threads}   inputs: {args.inputs}")


if __name__ == "__main__":
    main()
