"""Where a fit runs: its device, and its share of a data-parallel run (`torchrun`, gloo / NCCL).

Every trainer (`dictionary.train_coder`, `spd.fit`) takes its `Placement` from `FitContext.placement`
(the device from `FitContext.device`).
Data parallelism follows one rule: every rank builds the same initial model from the same seed and
draws the same *global* batch (data and noise) from the same generators, then computes the loss on
its own contiguous slice of it (`Placement.rows`); gradients are averaged across ranks before every
optimiser step. Each rank's loss is a mean over an equal share of the global batch, so the averaged
gradient is the gradient of the global-batch loss: N processes compute what 1 process computes, up
to float summation order. (Not identical across process counts: BatchTopK keeps the top k·B over a
batch, so a rank's share competes only with itself.)

    device, placement = join_torchrun("cuda")   # "cuda:LOCAL_RANK", Placement(rank, world)
    ctx = FitContext(seed=0, device=device, placement=placement)
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from mechscope.config import ConfigError


@dataclass(frozen=True)
class Placement:
    """A fit's rank among `world` data-parallel processes (world 1: a plain process)."""

    rank: int = 0
    world: int = 1

    def share(self, batch: int) -> slice:
        """This rank's rows of a global batch of `batch` (a one-line error if it does not divide)."""
        if batch % self.world:
            raise ConfigError(f"batch_size={batch} must be divisible by the number of processes ({self.world})")
        per = batch // self.world
        return slice(self.rank * per, (self.rank + 1) * per)

    def sync(self, params: Sequence[Tensor]) -> None:
        """Average the gradients of `params` over ranks in place (one flat all-reduce; a missing
        gradient counts as zero); nothing in a plain process."""
        if self.world == 1 or not params:
            return
        grads = []
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def any_rank(self, flags: Tensor) -> Tensor:
        """OR of a bool tensor over ranks (itself in a plain process)."""
        if self.world == 1:
            return flags
        t = flags.to(torch.int32)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t.bool()

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes files and draws progress."""
        return self.rank == 0


@contextmanager
def precision(device: str | torch.device, mixed: bool) -> Iterator[None]:
    """bf16 autocast on a GPU when `mixed`; full precision otherwise (CPU results stay exact)."""
    on_gpu = torch.device(device).type == "cuda"
    ctx: Any = torch.autocast("cuda", dtype=torch.bfloat16) if mixed and on_gpu else nullcontext()
    with ctx:
        yield


def world_info() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) in a plain process."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def join_torchrun(device: str) -> tuple[str, Placement]:
    """This process's (device, Placement); under torchrun with several processes, join its process group
    (NCCL for cuda, gloo otherwise) and give each rank its own GPU (`cuda` → `cuda:LOCAL_RANK`)."""
    rank, world = world_info()
    if world > 1:
        on_gpu = torch.device(device).type == "cuda"
        if on_gpu:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}"
            torch.cuda.set_device(torch.device(device))
        if not dist.is_initialized():
            dist.init_process_group("nccl" if on_gpu else "gloo")
    return device, Placement(rank, world)
