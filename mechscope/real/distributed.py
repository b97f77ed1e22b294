"""Data-parallel training under `torchrun --nproc-per-node N` (gloo on CPU, NCCL on GPU).

Every rank builds the same initial model from the same seed, reads its own contiguous slice of
each *global* batch (chosen from the seed and the step alone), and gradients are averaged across
ranks before every optimiser step. Because each rank's loss is a mean over an equal share of the
global batch, the averaged gradient is the gradient of the global-batch loss: a run on N processes
computes what a 1-process run computes, up to float summation order. That holds for:

- TopK SAEs (`train_topk_sae`): per-example top-k; which latents fired is OR-reduced across ranks
  so AuxK revives the same dead latents everywhere;
- SPD (`spd_real.fit_spd_real`): its mask noise is drawn per (seed, step, example).

Not identical across process counts (documented, not a bug): BatchTopK keeps the top k·B over a
batch, so a rank's local batch competes only with itself; its threshold then differs too.

    sync = init_distributed("cpu")          # None without torchrun; else averages gradient lists
    coder = train_topk_sae(cache, site, TopKSAEConfig(...), rank=rank, world=world, sync=sync)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Annotated, Any

import torch
import torch.distributed as dist
from pydantic import Field
from torch import Tensor

from mechscope.config import ConfigError
from mechscope.core import Progress, no_progress, seeded_generator
from mechscope.decompose.activation_buffer import geometric_median
from mechscope.decompose.dictionary import SparseCoder, TopKOptions, lr_lambda
from mechscope.real.activation_cache import ActivationCache

Sync = Callable[[list[Tensor]], None]


def world_info() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) in a plain process."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def init_distributed(device: str) -> Sync | None:
    """Join torchrun's process group (NCCL for cuda, gloo otherwise) and return a gradient-averaging
    `sync`; None when not launched by torchrun with more than one process."""
    rank, world = world_info()
    if world == 1:
        return None
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend)
        if device.startswith("cuda"):
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
    return average_grads


def average_grads(grads: list[Tensor]) -> None:
    """All-reduce a list of gradients in place to their mean over ranks (one flat message)."""
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def any_rank(flags: Tensor) -> Tensor:
    """OR of a bool tensor over ranks (identity in a single process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return flags
    t = flags.to(torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.bool()


@contextmanager
def precision(device: str, mixed: bool) -> Iterator[None]:
    """bf16 autocast on GPU when `mixed`; full precision otherwise (CPU results stay exact)."""
    ctx: Any = torch.autocast("cuda", dtype=torch.bfloat16) if mixed and device.startswith("cuda") else nullcontext()
    with ctx:
        yield


class TopKSAEConfig(TopKOptions):
    """A TopK SAE trained from an activation cache; sizes must be given (no task to size them)."""

    n_latents: Annotated[int, Field(ge=1)] = 1024
    k: Annotated[int, Field(ge=1)] = 32
    batch_size: Annotated[int, Field(ge=1)] = 1_024
    mixed_precision: bool = False


def _global_rows(seed: int, step: int, n_rows: int, batch: int) -> Tensor:
    """Rows of the global batch at `step`: epoch-wise permutations seeded by (seed, epoch)."""
    per_epoch = max(1, n_rows // batch)
    epoch, i = divmod(step, per_epoch)
    perm = torch.randperm(n_rows, generator=torch.Generator().manual_seed(seed * 104_729 + epoch))
    return perm[i * batch : (i + 1) * batch]


def train_topk_sae(
    cache: ActivationCache, site: str, cfg: TopKSAEConfig, seed: int = 0, rank: int = 0, world: int = 1,
    sync: Sync | None = None, device: str = "cpu", progress: Progress = no_progress,
) -> SparseCoder:  # fmt: skip
    """A TopK SAE of `site` trained on the cache, data-parallel over `world` ranks."""
    if cfg.batch_size % world:
        raise ConfigError(f"batch_size={cfg.batch_size} must be divisible by the number of processes ({world})")
    if cfg.batch_size > cache.n_rows:
        raise ConfigError(f"batch_size={cfg.batch_size} exceeds the {cache.n_rows} cached rows")
    gen = seeded_generator(seed, 100)
    probe = cache.rows(site, torch.randperm(cache.n_rows, generator=gen)[:8_192])  # same on every rank
    s = float(probe.pow(2).sum(-1).mean().sqrt().clamp_min(1e-12))
    coder = SparseCoder(probe.shape[1], probe.shape[1], cfg.n_latents, "topk", cfg.k, True, gen)
    with torch.no_grad():
        coder.b_dec.copy_(geometric_median(probe / s))
    coder.to(device)
    opt = torch.optim.Adam([p for p in coder.parameters() if p.requires_grad], lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg.steps, cfg.warmup_frac, cfg.decay_frac))
    since_fired = torch.zeros(cfg.n_latents, dtype=torch.long)
    per = cfg.batch_size // world
    for step in range(cfg.steps):
        idx = _global_rows(seed, step, cache.n_rows, cfg.batch_size)[rank * per : (rank + 1) * per]
        x = (cache.rows(site, idx) / s).to(device)
        with precision(device, cfg.mixed_precision):
            out = coder.train_step(x, x, cfg, since_fired > cfg.dead_after_steps)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        if sync is not None:
            sync([p.grad for p in coder.parameters() if p.grad is not None])
        opt.step()
        sched.step()
        coder.after_step()
        since_fired = torch.where(any_rank(out.fired.cpu()), 0, since_fired + 1)
        if step % 50 == 0 or step == cfg.steps - 1:
            progress(step + 1, cfg.steps)
    coder.fold_scales(s, s)
    coder.eval()
    return coder.cpu()
