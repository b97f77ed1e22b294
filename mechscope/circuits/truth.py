"""The true circuit of a target: its features as nodes and which feature computes which.

Nodes are the task's input features (layer 0), the features the target's modules write (each at
its `site`, along a `direction` of that module's output space) and the target's outputs (last
layer). An edge p → q says q is computed *directly* from p: q's module reads p (through a
residual stream, not through another feature). A graph that wires a, b, c straight to
y = XOR(AND(a, b), c) has the edges a → y and b → y, which are false, and misses h → y.

A task that knows its circuit implements `circuit_truth(target) -> CircuitTruth`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

TrueKind = Literal["input", "feature", "output"]


@dataclass(frozen=True)
class TrueNode:
    name: str
    kind: TrueKind
    layer: int
    index: int | None = None
    """input feature / output index; for a feature, the input feature it belongs to (if any)."""
    site: str | None = None
    """module whose output carries the feature (features)."""
    direction: Tensor | None = None
    """[d] the feature's direction in that output (features)."""


@dataclass
class CircuitTruth:
    nodes: list[TrueNode]
    edges: set[tuple[int, int]]
    notes: list[str] = field(default_factory=list)
    excluded: set[tuple[int, int]] = field(default_factory=set)
    """Pairs that are neither true nor false, left out of `candidates` (a compiled transformer's
    query/key dependencies: a graph of direct effects through frozen attention patterns, as
    circuit-tracer draws them, cannot carry them, and calling them false would be wrong)."""

    def __post_init__(self) -> None:
        for p, q in self.edges:
            if not self.nodes[p].layer < self.nodes[q].layer:
                raise ValueError(f"true edge {self.nodes[p].name} → {self.nodes[q].name} does not go forward")

    def index(self, name: str) -> int:
        for i, n in enumerate(self.nodes):
            if n.name == name:
                return i
        raise KeyError(f"no true node {name!r}")

    def features(self) -> list[int]:
        return [i for i, n in enumerate(self.nodes) if n.kind == "feature"]

    def intermediates(self) -> list[int]:
        """Features that another feature reads: the hidden steps of multi-hop circuits."""
        feats = set(self.features())
        return sorted({p for p, q in self.edges if p in feats and q in feats})

    def candidates(self) -> tuple[Tensor, Tensor, Tensor]:
        """(p [P], q [P], is_true bool [P]): every forward pair an edge could join — p an input or
        feature, q a feature or output, p's layer before q's."""
        layer = torch.tensor([n.layer for n in self.nodes])
        src_ok = torch.tensor([n.kind != "output" for n in self.nodes])
        dst_ok = torch.tensor([n.kind != "input" for n in self.nodes])
        ok = src_ok[:, None] & dst_ok[None, :] & (layer[:, None] < layer[None, :])
        for a, b in self.excluded:
            ok[a, b] = False
        p, q = ok.nonzero(as_tuple=True)
        adj = torch.zeros(len(self.nodes), len(self.nodes), dtype=torch.bool)
        if self.edges:
            e = torch.tensor(sorted(self.edges))
            adj[e[:, 0], e[:, 1]] = True
        return p, q, adj[p, q]
