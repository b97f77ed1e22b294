"""Where a dictionary's training activations come from, and the shuffled buffer that serves them.

A *source* is `source(n) -> (x [n, d_in], y [n, d_out])`: fresh activation pairs read from a model
(x = what the dictionary encodes, y = what it reconstructs; the same tensor for an SAE). Two
sources cover every case:

- `task_source`: inputs drawn from a zoo task's sampler, run through the target;
- `loader_source`: batches from any iterable (a DataLoader, tokenised text) run through any
  model, Hugging Face models included; token positions are flattened into rows.

`ActivationBuffer` holds `size` rows, serves random batches, and replaces every row it has served
with fresh ones once half the buffer is consumed — so consecutive batches are decorrelated (tokens
of one sequence are not seen together) without ever holding the whole data set.

Devices: inputs are drawn on the CPU (so a seed gives the same data everywhere) and moved to the
model's device; activations, and so the buffer, stay where the model computed them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from mechscope.core import TaskFacts
from mechscope.hooks import Where, capture, get_module

Source = Callable[[int], tuple[Tensor, Tensor]]
Site = tuple[str, Where]
"""(module name, "input" | "output")."""


def model_device(model: nn.Module) -> torch.device:
    """Where `model` computes: the device of its first parameter or buffer (CPU if it has none)."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def to_device(batch: Any, device: torch.device) -> Any:
    """A loader batch (a tensor, or a dict of them as a tokenizer returns) on `device`."""
    if isinstance(batch, Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}
    return batch


def _flat(a: Tensor) -> Tensor:
    return a.detach().reshape(-1, a.shape[-1]).float()


def _read(model: nn.Module, inputs: Any, read: Site, write: Site) -> tuple[Tensor, Tensor]:
    """(x, y) at the two sites in one no-grad forward pass (inputs moved to the model's device)."""
    inputs = to_device(inputs, model_device(model))
    with torch.no_grad():
        if read[1] == write[1]:
            with capture(model, [read[0], write[0]], read[1]) as acts:
                model(**inputs) if isinstance(inputs, dict) else model(inputs)
            return _flat(acts[read[0]]), _flat(acts[write[0]])
        with capture(model, [read[0]], read[1]) as xs, capture(model, [write[0]], write[1]) as ys:
            model(**inputs) if isinstance(inputs, dict) else model(inputs)
        return _flat(xs[read[0]]), _flat(ys[write[0]])


def task_source(model: nn.Module, task: TaskFacts, read: Site, write: Site, generator: torch.Generator) -> Source:
    """Activations of `model` on fresh samples of `task` (the zoo's infinite data)."""
    get_module(model, read[0]), get_module(model, write[0])  # a bad site name fails here, clearly

    per = 1  # rows per sample: > 1 when a sample is a sequence (each position is a row)

    def source(n: int) -> tuple[Tensor, Tensor]:
        nonlocal per
        k = -(-n // per)
        x, y = _read(model, task.sample(k, generator), read, write)
        per = max(per, x.shape[0] // k)
        return x[:n], y[:n]

    return source


def loader_source(model: nn.Module, loader: Iterable[Any], read: Site, write: Site) -> Source:
    """Activations of `model` on the batches of `loader` (cycled), e.g. a transformers model on
    tokenised text: each batch is passed as `model(batch)`, or `model(**batch)` for a dict."""
    get_module(model, read[0]), get_module(model, write[0])
    pending: list[tuple[Tensor, Tensor]] = []
    iterator: Iterator[Any] = iter(loader)

    def source(n: int) -> tuple[Tensor, Tensor]:
        nonlocal iterator
        have = sum(p[0].shape[0] for p in pending)
        while have < n:
            try:
                batch = next(iterator)
            except StopIteration:
                iterator = iter(loader)
                batch = next(iterator)
            pending.append(_read(model, batch, read, write))
            have += pending[-1][0].shape[0]
        x, y = torch.cat([p[0] for p in pending]), torch.cat([p[1] for p in pending])
        pending.clear()
        if x.shape[0] > n:
            pending.append((x[n:], y[n:]))
        return x[:n], y[:n]

    return source


def tensor_source(x: Tensor, y: Tensor | None = None) -> Source:
    """Rows of fixed tensors, served in order and cycled (benchmarks, tests)."""
    y = x if y is None else y
    pos = 0

    def source(n: int) -> tuple[Tensor, Tensor]:
        nonlocal pos
        idx = (torch.arange(n, device=x.device) + pos) % x.shape[0]
        pos = (pos + n) % x.shape[0]
        return x[idx], y[idx]

    return source


class ActivationBuffer:
    """A streaming, shuffled store of activation pairs."""

    def __init__(self, source: Source, size: int, batch: int, generator: torch.Generator) -> None:
        if batch > size // 2:
            raise ValueError(f"buffer_size={size} must be at least twice batch_size={batch}")
        self.source, self.size, self.batch, self.generator = source, size, batch, generator
        self.x, self.y = source(size)
        self.shared = self.y.data_ptr() == self.x.data_ptr()  # SAE: one tensor, stored once
        self._shuffle()

    def _shuffle(self) -> None:
        self.perm = torch.randperm(self.size, generator=self.generator).to(self.x.device)
        self.pos = 0

    def _refill(self) -> None:
        served = self.perm[: self.pos]
        fx, fy = self.source(served.numel())
        self.x[served] = fx
        if not self.shared:
            self.y[served] = fy
        self._shuffle()

    def next(self) -> tuple[Tensor, Tensor]:
        """One shuffled batch (x [batch, d_in], y [batch, d_out])."""
        if self.pos + self.batch > self.size // 2:
            self._refill()
        idx = self.perm[self.pos : self.pos + self.batch]
        self.pos += self.batch
        x = self.x[idx]
        return (x, x) if self.shared else (x, self.y[idx])

    def sample(self, n: int) -> tuple[Tensor, Tensor]:
        """n rows of the current buffer (for statistics: scales, decoder-bias init), not consumed."""
        return self.x[:n], self.y[:n]


def geometric_median(points: Tensor, iters: int = 50, tol: float = 1e-6) -> Tensor:
    """Weiszfeld's algorithm: the point minimising the summed distance to `points` [n, d].

    Robust to the many all-zero inputs of sparse toy data, where the mean is pulled by outliers."""
    m = points.mean(0)
    for _ in range(iters):
        w = 1.0 / (points - m).norm(dim=1).clamp_min(1e-8)
        new = (w[:, None] * points).sum(0) / w.sum()
        if float((new - m).norm()) < tol * (1 + float(m.norm())):
            return new
        m = new
    return m
