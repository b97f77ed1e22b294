"""Training throughput of every SAE variant mechscope and SAELens both have, at d = 512, 8192 latents, k = 32,
and of whole fits on the toy tasks — ours against SAELens's trainer, in one run.

Big size: for each variant (ReLU/Standard, TopK, BatchTopK, JumpReLU, Matryoshka BatchTopK) mechscope's
`train_coder` runs a **whole training run** (`--steps`, default 1,500 × 1,024: the stress budget) with the
`sae-*` method's own defaults (so BatchTopK's per-row warm-up, JumpReLU's L1 warm-up and ReLU's
sparsification all happen as in a fit), and SAELens's `SAETrainer` + training SAE runs `--peer-steps` on
the same activations. Every training step is stamped with `time.process_time` (CPU-seconds of this
process, so the ratio holds on a shared machine; say the load), so set-up (buffer, b_dec init, SAE
construction) is left out and the rate of any span of steps can be read off:

- first: steps 2–6 (both libraries dense at initialisation for ReLU / JumpReLU);
- whole run: every step of ours; SAELens's rate over its `--peer-steps` (its step is the same dense
  products at any sparsity, so its rate does not change along a run), run once before and once after
  ours so that a change of the machine's load in between hits both (the table shows each run's rate);
- last 10 %: ours at the end of the run (ReLU / JumpReLU sparse, BatchTopK in its batch phase).

Toy sizes (`--toy`): whole blind-default fits (`fit_blind`) of each `sae-*` method and its
`saelens-*` peer on tms-40-10 and stress-iid, CPU-s per sample seen (the two may train different
numbers of steps), ratio.

    .venv/bin/python benchmarks/sae_speed.py [--variants topk,relu] [--steps 1500] [--peer-steps 40] \
        [--batch 1024] [--threads 1] [--toy tms-40-10,stress-iid] [--toy-variants relu,...] [--skip-big] \
        [--set relu.l1_coef=0.2 --set jumprelu.warmup_l1_coef=0.2] [--trace PREFIX]
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch
from torch import Tensor

from mechscope.decompose.activation_buffer import tensor_source
from mechscope.decompose.dictionary import DictionaryConfig, SparseCoder, TrainStep, train_coder
from mechscope.decompose.sae import SAEBatchTopKConfig, SAEJumpReLUConfig, SAEReLUConfig, SAETopKConfig
from mechscope.decompose.sae_matryoshka import MatryoshkaCoder, SAEMatryoshkaConfig, matryoshka_widths

D, C, K = 512, 8192, 32
VARIANTS = ("relu", "topk", "batchtopk", "jumprelu", "matryoshka")
PEER = {"relu": "standard"}  # SAELens's name where it differs
STAMPS: list[float] = []
"""`time.process_time()` at the start of every training step of the current run."""
L0S: list[float] = []


def activations(n: int, seed: int = 0) -> Tensor:
    """[n, D] sparse sums of 16 of 4096 random unit directions: SAE-shaped data, made locally."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.nn.functional.normalize(torch.randn(4096, D, generator=g), dim=1)
    chunks = []
    for _ in range(0, n, 4096):
        idx = torch.randint(0, 4096, (4096, 16), generator=g)
        chunks.append(torch.einsum("nk,nkd->nd", torch.rand(4096, 16, generator=g), dirs[idx]))
    return torch.cat(chunks)[:n]


CoderT = TypeVar("CoderT", bound=SparseCoder)


def stamped(base: type[CoderT]) -> type[CoderT]:
    """`base` with every training step's CPU time and L0 recorded (STAMPS, L0S)."""

    class Stamped(base):  # type: ignore[valid-type,misc]
        def train_step(self, x: Tensor, y: Tensor, cfg: DictionaryConfig, dead: Tensor) -> TrainStep:
            STAMPS.append(time.process_time())
            out: TrainStep = super().train_step(x, y, cfg, dead)
            L0S.append(out.l0)
            return out

    return Stamped


StampedCoder = stamped(SparseCoder)
StampedMatryoshka = stamped(MatryoshkaCoder)


def ours(variant: str, x: Tensor, steps: int, batch: int, overrides: dict[str, float] | None = None) -> list[float]:
    """Step stamps of one mechscope run of `steps` steps at the `sae-*` method's defaults (+ `overrides`)."""
    common: dict[str, Any] = {"n_latents": C, "steps": steps, "batch_size": batch, **(overrides or {})}
    cfg: DictionaryConfig = {
        "relu": lambda: SAEReLUConfig(**common),
        "topk": lambda: SAETopKConfig(k=K, **common),
        "batchtopk": lambda: SAEBatchTopKConfig(k=K, **common),
        "jumprelu": lambda: SAEJumpReLUConfig(**common),
        "matryoshka": lambda: SAEMatryoshkaConfig(k=K, **common),
    }[variant]()
    make: Callable[..., SparseCoder] = (lambda *a: StampedMatryoshka(*a, levels=4)) if variant == "matryoshka" else StampedCoder
    k = None if variant in ("relu", "jumprelu") else K
    STAMPS.clear()
    L0S.clear()
    train_coder(tensor_source(x), cfg, C, k, True, torch.Generator().manual_seed(0), make_coder=make)
    STAMPS.append(time.process_time())  # the end of the last step (its optimiser step and bookkeeping)
    return list(STAMPS)


def saelens(variant: str, x: Tensor, steps: int, batch: int) -> list[float]:
    """Step stamps of one SAELens training run (each stamp: a batch handed to its trainer)."""
    import sae_lens
    from sae_lens import SAETrainer
    from sae_lens.config import SAETrainerConfig

    stamps: list[float] = []

    def batches() -> Iterator[Tensor]:
        i = 0
        while True:
            stamps.append(time.process_time())
            yield x[(torch.arange(batch) + i) % x.shape[0]]
            i += batch

    sae = {
        "relu": lambda: sae_lens.StandardTrainingSAE(sae_lens.StandardTrainingSAEConfig(d_in=D, d_sae=C)),
        "topk": lambda: sae_lens.TopKTrainingSAE(sae_lens.TopKTrainingSAEConfig(d_in=D, d_sae=C, k=K)),
        "batchtopk": lambda: sae_lens.BatchTopKTrainingSAE(sae_lens.BatchTopKTrainingSAEConfig(d_in=D, d_sae=C, k=K)),
        "jumprelu": lambda: sae_lens.JumpReLUTrainingSAE(sae_lens.JumpReLUTrainingSAEConfig(d_in=D, d_sae=C)),
        "matryoshka": lambda: sae_lens.MatryoshkaBatchTopKTrainingSAE(sae_lens.MatryoshkaBatchTopKTrainingSAEConfig(
            d_in=D, d_sae=C, k=K, matryoshka_widths=matryoshka_widths(C))),
    }[variant]()  # fmt: skip
    cfg = SAETrainerConfig(total_training_samples=steps * batch, train_batch_size_samples=batch, lr=2e-4, lr_end=2e-4)
    from mechscope.decompose.saelens_peers import _quiet_trainer

    with _quiet_trainer():
        SAETrainer(cfg, sae, batches()).fit()
    stamps.append(time.process_time())
    return stamps[: steps + 1]


def span_rate(stamps: list[float], start: int, stop: int, batch: int) -> float:
    """Activations per CPU-second over steps start..stop−1 (0-based; stamps[i] = start of step i)."""
    stop = min(stop, len(stamps) - 1)
    return (stop - start) * batch / max(stamps[stop] - stamps[start], 1e-9)


def big_table(
    variants: list[str], steps: int, peer_steps: int, batch: int, have_saelens: bool, sets: dict[str, dict[str, float]],
    trace: str | None = None,
) -> None:
    x = activations(65_536)
    print(f"d={D} latents={C} k={K} batch={batch}; ours: a whole run of {steps} steps at the sae-* defaults; "
          f"SAELens: {peer_steps} steps; activations per CPU-second of the training steps")  # fmt: skip
    print("| variant | ours first (2–6) | ours whole run | ours last 10 % | ours L0 first → last | SAELens first (2–6) "
          "| SAELens steps 2–N (before / after ours) | × first | × whole run |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for variant in variants:
        ours(variant, x, 3, batch)  # warm-up: first calls, allocator
        if have_saelens:  # SAELens before and after ours, so a change of the machine's load hits both
            saelens(variant, x, 2, batch)
            p_before = saelens(variant, x, peer_steps, batch)
        s = ours(variant, x, steps, batch, sets.get(variant))
        l0 = (L0S[1], sum(L0S[-max(1, steps // 10) :]) / max(1, steps // 10))
        first, whole = span_rate(s, 1, 6, batch), span_rate(s, 0, steps, batch)
        last = span_rate(s, steps - max(1, steps // 10), steps, batch)
        if have_saelens:
            p_after = saelens(variant, x, peer_steps, batch)
            p_first = span_rate(p_before, 1, 6, batch)
            r0, r1 = span_rate(p_before, 1, peer_steps, batch), span_rate(p_after, 1, peer_steps, batch)
            p_all = 2 / (1 / r0 + 1 / r1)  # both runs' steps over both runs' CPU-s
            peer = f"{p_first:.0f} | {p_all:.0f} ({r0:.0f} / {r1:.0f}) | {first / p_first:.2f}× | {whole / p_all:.2f}×"
        else:
            peer = "– | – | – | –"
        label = variant + "".join(f", {k}={v:g}" for k, v in sets.get(variant, {}).items())
        if trace:  # every step's CPU-s and L0, to see where a run spends its time
            with open(f"{trace}.{variant}.json", "w") as f:
                json.dump({"label": label, "step_cpu_s": [b - a for a, b in itertools.pairwise(s)], "l0": L0S}, f)
        print(f"| {label} | {first:.0f} | {whole:.0f} | {last:.0f} | {l0[0]:.0f} → {l0[1]:.0f} | {peer} |", flush=True)


def toy_table(tasks: list[str], variants: list[str]) -> None:
    """Whole blind-default fits, ours vs the saelens peer: CPU-s, samples seen, ratio of samples per CPU-s."""
    from mechscope.decompose import FitContext, get_method
    from mechscope.decompose.registry import fit_blind
    from mechscope.zoo import get_task

    print("\nwhole blind-default fits (fit_blind), CPU-s of the fit; ratio = ours' samples per CPU-s ÷ the peer's")
    print("| task | variant | ours CPU-s (samples) | SAELens CPU-s (samples) | ours × faster |")
    print("|---|---|---|---|---|")
    for name in tasks:
        task = get_task(name)
        target = task.make_target(0)
        for variant in variants:
            row = []
            for method in (f"sae-{variant}", f"saelens-{PEER.get(variant, variant)}"):
                spec = get_method(method)
                torch.manual_seed(0)
                t = time.process_time()
                dec = fit_blind(spec, target, task, spec.Cfg(), FitContext(seed=0))
                cpu = time.process_time() - t
                samples = sum(sc.coder.trained["samples_seen"] for sc in dec.coders.values())
                row.append((cpu, samples))
            (c0, n0), (c1, n1) = row
            print(f"| {name} | {variant} | {c0:.1f} ({n0:,}) | {c1:.1f} ({n1:,}) | {(n0 / c0) / (n1 / c1):.2f}× |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--peer-steps", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--toy", default="tms-40-10,stress-iid", help="tasks for whole fits vs the peers; '' to skip")
    ap.add_argument("--toy-variants", default=",".join(VARIANTS))
    ap.add_argument("--skip-big", action="store_true", help="only the toy fits")
    ap.add_argument("--set", action="append", default=[], metavar="VARIANT.KEY=VALUE",
                    help="override one of our configs' numbers at the big size, e.g. relu.l1_coef=0.1")  # fmt: skip
    ap.add_argument("--trace", default=None, metavar="PREFIX",
                    help="write each big-size run's per-step CPU-s and L0 to PREFIX.VARIANT.json")  # fmt: skip
    args = ap.parse_args()
    if args.steps < 20 or args.peer_steps < 12:
        raise SystemExit(f"--steps {args.steps} / --peer-steps {args.peer_steps}: need at least 20 / 12")
    torch.set_num_threads(args.threads)
    from mechscope.decompose.import_dictionary import quiet_import

    have_saelens = quiet_import("sae_lens") is not None
    if not have_saelens:
        print("SAELens not installed (pip install -e '.[saelens]'): mechscope alone")
    print(f"{args.threads} thread(s)")
    variants = args.variants.split(",")
    sets: dict[str, dict[str, float]] = {}
    for item in args.set:
        key, _, value = item.partition("=")
        variant, _, field = key.partition(".")
        if variant not in VARIANTS or not field or not value:
            raise SystemExit(f"--set {item!r}: expected VARIANT.KEY=VALUE with VARIANT one of {', '.join(VARIANTS)}")
        sets.setdefault(variant, {})[field] = float(value)
    if not args.skip_big:
        big_table(variants, args.steps, args.peer_steps, args.batch, have_saelens, sets, args.trace)
    if args.toy and have_saelens:
        toy_table(args.toy.split(","), args.toy_variants.split(","))


if __name__ == "__main__":
    main()
