"""Boolean circuits: a hand-built (not trained) residual network whose circuits are known exactly.

Twelve binary inputs, five small Boolean circuits computed side by side in one residual stream —
three of them multi-hop, so a feature computed in layer 0 is read by a gate in layer 1:

    h0 = AND(x0, x1)   y0 = XOR(h0, x2)          (layer 0 → layer 1)
    h1 = OR(x3, x4)    y1 = AND(h1, x5)          (layer 0 → layer 1)
    y2 = XOR(x6, x7)                             (layer 0 only)
    h2 = AND(x8, x9)   y3 = OR(h2, h0)           (two intermediates; h0 fans out)
    y4 = AND(x10, x11)                           (layer 1 only, straight from the inputs)

The network (the residual MLP's module names, so transcoders, SAEs and SPD find their sites):

    r = embed(x) = Σ_i x_i e_i                       e_i: random unit directions in d_model = 24
    r ← r + mlp_out_l(ReLU(mlp_in_l(r)))             l = 0, 1
    out_k = unembed(r)_k = d_{y_k} · r               d_f: dual read vectors, d_f · e_g = δ_fg

Every feature (inputs, h's, y's; 20 directions) has its own random, non-orthogonal direction e_f
of the one shared stream, and each gate reads its operands exactly through their dual vectors,
whatever else the stream holds. Gates on {0, 1} operands a, b with s = d_a·r + d_b·r:

    AND = ReLU(s − 1)     OR = ReLU(s) − ReLU(s − 1)     XOR = ReLU(s) − 2 ReLU(s − 1)

so all outputs are exact. True edges: a → h, b → h, h → y, c → y, y → out. A graph that wires
x0, x1, x2 straight to y0 (what a cross-layer transcoder can learn: a layer-0 latent that reads
x0, x1, x2 and writes y0 into layer 1's output) is wrong: it misses h0 → y0 and adds x0 → y0.
The neurons here are monosemantic by construction (each gate owns its one or two neurons), so the
neuron basis is an upper-bound baseline on this task, not a weak one.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mechscope.bounds import Count, Prob
from mechscope.circuits.truth import CircuitTruth, TrueNode
from mechscope.config import Config
from mechscope.core import seeded_generator
from mechscope.zoo import register_task
from mechscope.zoo.base import GroundTruth, Mechanism, Progress, Task, no_progress

Op = Literal["AND", "OR", "XOR"]
# (name, op, operand names, layer): the five circuits above, in computation order
GATES: tuple[tuple[str, Op, tuple[str, str], int], ...] = (
    ("h0", "AND", ("x0", "x1"), 0),
    ("h1", "OR", ("x3", "x4"), 0),
    ("y2", "XOR", ("x6", "x7"), 0),
    ("h2", "AND", ("x8", "x9"), 0),
    ("y0", "XOR", ("h0", "x2"), 1),
    ("y1", "AND", ("h1", "x5"), 1),
    ("y3", "OR", ("h2", "h0"), 1),
    ("y4", "AND", ("x10", "x11"), 1),
)
OUTPUTS: tuple[str, ...] = ("y0", "y1", "y2", "y3", "y4")
N_INPUTS = 12
N_LAYERS = 2
# neurons of each gate: (bias, write coefficient)
NEURONS: dict[Op, tuple[tuple[float, float], ...]] = {
    "AND": ((-1.0, 1.0),),
    "OR": ((0.0, 1.0), (-1.0, -1.0)),
    "XOR": ((0.0, 1.0), (-1.0, -2.0)),
}


class BooleanCircuitsConfig(Config):
    d_model: Count = 24
    """Residual width; at least the 20 feature directions, so the dual reads are exact."""
    p: Prob = 0.3
    """Probability that each input bit is 1."""


def gate(op: Op, a: Tensor, b: Tensor) -> Tensor:
    """The Boolean gate on {0, 1} tensors (the reference the network must match)."""
    if op == "AND":
        return a * b
    if op == "OR":
        return torch.clamp(a + b, max=1)
    return (a + b) % 2


class BooleanLayer(nn.Module):
    def __init__(self, d: int, d_hidden: int) -> None:
        super().__init__()
        self.mlp_in = nn.Linear(d, d_hidden, bias=True)
        self.mlp_out = nn.Linear(d_hidden, d, bias=False)

    def forward(self, r: Tensor) -> Tensor:
        return r + self.mlp_out(F.relu(self.mlp_in(r)))


class BooleanCircuitsModel(nn.Module):
    """embed → 2 residual ReLU MLPs → unembed; weights set by `build`, never trained."""

    def __init__(self, d: int, hidden: list[int]) -> None:
        super().__init__()
        self.embed = nn.Linear(N_INPUTS, d, bias=False)
        self.layers = nn.ModuleList([BooleanLayer(d, h) for h in hidden])
        self.unembed = nn.Linear(d, len(OUTPUTS), bias=False)
        self.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        r = self.embed(x)  # (B, d)
        for layer in self.layers:
            r = layer(r)
        return self.unembed(r)  # (B, n_outputs)


def feature_names() -> list[str]:
    return [f"x{i}" for i in range(N_INPUTS)] + [g[0] for g in GATES]


def directions(d: int, seed: int) -> tuple[Tensor, Tensor]:
    """(E [n_feat, d] unit directions, D [n_feat, d] dual reads with D Eᵀ = I)."""
    n = len(feature_names())
    if d < n:
        raise ValueError(f"d_model={d} is below the {n} feature directions; exact reads need d_model ≥ {n}")
    E = torch.randn(n, d, generator=seeded_generator(seed, 17), dtype=torch.float64)
    E = E / E.norm(dim=1, keepdim=True)
    D = torch.linalg.solve(E @ E.T, E)  # rows d_f with d_f · e_g = δ_fg
    return E.float(), D.float()


def build(d: int, seed: int) -> BooleanCircuitsModel:
    names = feature_names()
    E, D = directions(d, seed)
    hidden = [sum(len(NEURONS[op]) for _, op, _, li in GATES if li == layer) for layer in range(N_LAYERS)]
    model = BooleanCircuitsModel(d, hidden)
    with torch.no_grad():
        model.embed.weight.copy_(E[:N_INPUTS].T)
        model.unembed.weight.copy_(torch.stack([D[names.index(o)] for o in OUTPUTS]))
        row = [0] * N_LAYERS
        for name, op, (a, b), li in GATES:
            layer = model.layers[li]
            assert isinstance(layer, BooleanLayer)
            for bias, coef in NEURONS[op]:
                n = row[li]
                layer.mlp_in.weight[n] = D[names.index(a)] + D[names.index(b)]
                layer.mlp_in.bias[n] = bias
                layer.mlp_out.weight[:, n] = coef * E[names.index(name)]
                row[li] += 1
    return model


def reference(x: Tensor) -> Tensor:
    """[B, 5] the Boolean outputs computed directly (no network)."""
    v = {f"x{i}": x[:, i] for i in range(N_INPUTS)}
    for name, op, (a, b), _ in GATES:
        v[name] = gate(op, v[a], v[b])
    return torch.stack([v[o] for o in OUTPUTS], dim=1)


class BooleanCircuitsTask(Task):
    family = "circuits"
    name = "boolean-circuits"
    summary = "hand-built residual net: 5 Boolean circuits (3 multi-hop) in one 24-d stream, exact true edges"
    Cfg = BooleanCircuitsConfig
    config: BooleanCircuitsConfig

    @property
    def n_features(self) -> int:
        return N_INPUTS

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        return (torch.rand(n, N_INPUTS, generator=generator) < self.config.p).float()

    def onehot(self, value: float | None = None) -> Tensor:
        """The truth tables: for each circuit, every assignment of its inputs (others 0) — the
        Boolean analogue of "each feature alone": [40, 12]. `value` is ignored (inputs are bits)."""
        supports = [(0, 1, 2), (3, 4, 5), (6, 7), (0, 1, 8, 9), (10, 11)]
        rows = []
        for sup in supports:
            for code in range(2 ** len(sup)):
                r = torch.zeros(N_INPUTS)
                for j, i in enumerate(sup):
                    r[i] = float((code >> j) & 1)
                rows.append(r)
        return torch.stack(rows)

    def make_target(self, target_seed: int, progress: Progress = no_progress) -> nn.Module:
        model = build(self.config.d_model, target_seed)
        model.eval()
        progress(1, 1)
        return model

    def activation_sites(self) -> list[str]:
        """SAEs go on every MLP output: the sites where the computed features are written."""
        return [f"layers.{li}.mlp_out" for li in range(N_LAYERS)]

    def mlp_sites(self) -> list[tuple[str, str]]:
        return [(f"layers.{li}.mlp_in", f"layers.{li}.mlp_out") for li in range(N_LAYERS)]

    def ground_truth(self, target: nn.Module) -> GroundTruth:
        """Per gate: one rank-1 parameter mechanism at its layer's `mlp_in` (its neurons' rows) and
        at `mlp_out` (their columns), and its output feature e_g in activation space at `mlp_out`
        (read side d_a + d_b). Gate activity is not a rule on single input bits, so these carry the
        rule "dense" (activity scores are approximate for them; notes say so)."""
        assert isinstance(target, BooleanCircuitsModel)
        mechs: list[Mechanism] = []
        row = [0] * N_LAYERS
        for name, op, _, li in GATES:
            layer = target.layers[li]
            assert isinstance(layer, BooleanLayer)
            k = len(NEURONS[op])
            sl = slice(row[li], row[li] + k)
            row[li] += k
            W_in, W_out = layer.mlp_in.weight.detach(), layer.mlp_out.weight.detach()
            T_in = torch.zeros_like(W_in)
            T_in[sl] = W_in[sl]
            T_out = torch.zeros_like(W_out)
            T_out[:, sl] = W_out[:, sl]
            mechs.append(Mechanism(name, "parameter", f"layers.{li}.mlp_in", T_in, 1, "dense"))
            mechs.append(Mechanism(name, "parameter", f"layers.{li}.mlp_out", T_out, 1, "dense"))
            write, read = W_out[:, sl.start], W_in[sl.start]  # the gate's first neuron writes +e_g
            mechs.append(Mechanism(name, "activation", f"layers.{li}.mlp_out", write / write.norm(), 1, "dense",
                                   None, read / read.norm()))  # fmt: skip
        return GroundTruth(mechs, n_features=N_INPUTS, represented=list(range(N_INPUTS)), output_kind="mse",
                           notes=["gate features have rule 'dense': their activity is a Boolean of several "
                                  "inputs, not one input bit; activity_f1 is approximate for them"])  # fmt: skip

    def circuit_truth(self, target: nn.Module) -> CircuitTruth:
        """Inputs (layer 0), gate features at their layer's `mlp_out` (layers 1, 2), outputs (3)."""
        assert isinstance(target, BooleanCircuitsModel)
        nodes = [TrueNode(f"x{i}", "input", 0, index=i) for i in range(N_INPUTS)]
        row = [0] * N_LAYERS
        for name, op, _, li in GATES:
            layer = target.layers[li]
            assert isinstance(layer, BooleanLayer)
            write = layer.mlp_out.weight.detach()[:, row[li]]
            row[li] += len(NEURONS[op])
            nodes.append(TrueNode(name, "feature", li + 1, site=f"layers.{li}.mlp_out", direction=write / write.norm()))
        nodes += [TrueNode(f"out{k}", "output", N_LAYERS + 1, index=k) for k in range(len(OUTPUTS))]
        ix = {n.name: i for i, n in enumerate(nodes)}
        edges = {(ix[a], ix[g]) for g, _, ops, _ in GATES for a in ops}
        edges |= {(ix[o], ix[f"out{k}"]) for k, o in enumerate(OUTPUTS)}
        return CircuitTruth(nodes, edges, ["exact by construction: each gate reads its operands through dual vectors"])


register_task("boolean-circuits", BooleanCircuitsTask)
