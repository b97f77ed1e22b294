"""Matching a component that writes where the truth has no nodes by its effect downstream.

Hand-built: a one-layer residual ReLU MLP whose true features sit at `layers.0.mlp_out`
(w_j± = W_out ReLU(±W_in e_j)), and one exact parameter component per input feature at
`layers.0.mlp_in` (U_c = W_in e_c, read by e_c) — what a perfect SPD run finds. Its writes live in
the hidden layer: matched by them, it stands for nothing (recall 0); lifted through the MLP, each
component stands for its feature, both signs.
"""

from types import SimpleNamespace

import torch
from torch import Tensor, nn

from mechscope.circuits.graph import AttributionGraph, Node
from mechscope.circuits.groups import Group
from mechscope.circuits.lift import lifted_writes
from mechscope.circuits.score import match, matching
from mechscope.circuits.truth import CircuitTruth, TrueNode
from mechscope.metrics.circuits import node_recall


class Block(nn.Module):
    def __init__(self, d: int, hidden: int) -> None:
        super().__init__()
        self.mlp_in, self.mlp_out = nn.Linear(d, hidden), nn.Linear(hidden, d)


class OneLayer(nn.Module):
    def __init__(self, n: int, hidden: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([Block(n, hidden)])

    def forward(self, x: Tensor) -> Tensor:
        b = self.layers[0]
        return x + b.mlp_out(torch.relu(b.mlp_in(x)))


def setup(n: int = 4, hidden: int = 12) -> tuple[OneLayer, CircuitTruth, Group, AttributionGraph, Tensor]:
    torch.manual_seed(0)
    model = OneLayer(n, hidden).eval()
    with torch.no_grad():
        model.layers[0].mlp_in.bias.zero_()
    W_in, W_out = model.layers[0].mlp_in.weight.detach(), model.layers[0].mlp_out.weight.detach()
    nodes = [TrueNode(f"x{j}", "input", 0, index=j) for j in range(n)]
    for j in range(n):
        for sign, tag in ((1.0, "+"), (-1.0, "-")):
            w = W_out @ torch.relu(sign * W_in[:, j])
            nodes.append(TrueNode(f"f{j}{tag}", "feature", 1, index=j, site="layers.0.mlp_out", direction=w / w.norm()))
    truth = CircuitTruth(nodes, set())
    U = W_in.T.clone()  # [C = n, hidden]: component c writes W_in e_c per unit of x_c

    def code(a: Tensor) -> Tensor:
        return a  # component c reads e_c · a

    group = Group("layers.0.mlp_in", ("layers.0.mlp_in", "input"), n, code, code, lambda a: a.abs() > 0.1,
                  {"layers.0.mlp_in": U})  # fmt: skip
    graph = AttributionGraph([Node("component", "layers.0.mlp_in", c, 1) for c in range(n)],
                             torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), torch.zeros(0), torch.zeros(0))  # fmt: skip
    x = torch.cat([torch.eye(n), -torch.eye(n)])
    return model, truth, group, graph, x


def test_hidden_layer_components_match_by_their_downstream_write() -> None:
    model, truth, group, graph, x = setup()
    _, sim = match(graph, [group], truth, 0.7)
    assert node_recall(sim, 0.9) == 0.0  # matched by the hidden-layer write: nothing (the old bug)
    lifted = lifted_writes(model, x, [group], truth)
    assert set(lifted) == {"layers.0.mlp_in"} and lifted["layers.0.mlp_in"]["layers.0.mlp_out"].shape == (4, 2, 4)
    assign, sim = match(graph, [group], truth, 0.7, lifted)
    assert node_recall(sim, 0.9) == 1.0  # both signs of every feature
    assert float(sim.max()) > 0.999
    for c in range(4):  # each component stands for one of its own feature's signs
        assert truth.nodes[int(assign[c])].index == c
    # the scorer's own path (score_circuit and the table call `matching`) lifts too
    assign2, sim2 = matching(SimpleNamespace(target=model), x, graph, [group], truth, 0.7)  # type: ignore[arg-type]
    assert torch.equal(assign2, assign) and node_recall(sim2, 0.9) == 1.0


def test_components_at_true_sites_are_not_lifted() -> None:
    model, truth, group, _, x = setup()
    W_out = model.layers[0].mlp_out.weight.detach()
    at_true = Group("layers.0.mlp_out", ("layers.0.mlp_out", "input"), 4, group.code, group.act, group.fires,
                    {"layers.0.mlp_out": W_out.T[:4].clone()})  # fmt: skip
    assert lifted_writes(model, x, [at_true], truth) == {}
