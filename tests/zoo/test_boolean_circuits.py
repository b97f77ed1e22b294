"""boolean-circuits: exact outputs, exact true edges, and scores that tell a multi-hop circuit from a shortcut."""

import torch

from mechscope.circuits import build_graph, groups_of, neuron_decomposition
from mechscope.circuits.score import (
    calibration_aurocs,
    calibration_graph,
    edge_scores,
    intermediate_recall,
    match,
    score_circuit,
)
from mechscope.metrics.circuits import edge_auroc
from mechscope.zoo import get_task
from mechscope.zoo.boolean_circuits import reference


def test_network_computes_every_circuit_exactly() -> None:
    task = get_task("boolean-circuits")
    model = task.make_target(0)
    x = torch.tensor([[(i >> b) & 1 for b in range(12)] for i in range(4096)], dtype=torch.float32)
    torch.testing.assert_close(model(x), reference(x), atol=1e-4, rtol=0)


def test_true_edges_and_intermediates() -> None:
    task = get_task("boolean-circuits")
    truth = task.circuit_truth(task.make_target(0))
    named = {(truth.nodes[p].name, truth.nodes[q].name) for p, q in truth.edges}
    assert {("x0", "h0"), ("x1", "h0"), ("h0", "y0"), ("x2", "y0"), ("h0", "y3")} <= named
    assert ("x0", "y0") not in named
    assert sorted(truth.nodes[i].name for i in truth.intermediates()) == ["h0", "h1", "h2"]


def test_oracle_is_one_random_is_half() -> None:
    task = get_task("boolean-circuits")
    truth = task.circuit_truth(task.make_target(0))
    oracle, random_mean = calibration_aurocs(truth, n_random=30)
    assert oracle == 1.0 and abs(random_mean - 0.5) < 0.05


def test_a_shortcut_through_an_unmatched_latent_is_wrong() -> None:
    """h0's component replaced by one that matches nothing (a CLT latent reading x0, x1 and writing
    y0): the contraction wires x0, x1 straight to y0 — false edges — and h0 → y0 is lost."""
    task = get_task("boolean-circuits")
    truth = task.circuit_truth(task.make_target(0))
    g, groups = calibration_graph(truth, "oracle")
    groups[0].writes["layers.0.mlp_out"][0] = torch.randn(24, generator=torch.Generator().manual_seed(0))
    assert edge_auroc(*edge_scores(g, groups, truth)) < 0.95
    _, sim = match(g, groups, truth, 0.7)
    assert intermediate_recall(sim, truth, 0.9) == 2 / 3


def test_neuron_basis_recovers_the_hand_built_circuit() -> None:
    task = get_task("boolean-circuits")
    model = task.make_target(0)
    dec = neuron_decomposition(model, task.mlp_sites())
    x = task.onehot()
    out = score_circuit(dec, x, build_graph(dec, x), groups_of(dec), task.circuit_truth(model))
    assert out["edge_auroc"] == 1.0 and out["node_recall"] == 1.0 and out["cpr"] > 0.9
