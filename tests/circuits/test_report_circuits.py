"""The report's circuits section draws one layered graph per task × method and states the verdict."""

import json
from pathlib import Path

from mechscope.circuits import build_graph, groups_of, neuron_decomposition
from mechscope.circuits.score import match, project, save_scored, score_circuit
from mechscope.report.circuits import circuits_section, edge_classes
from mechscope.zoo.boolean_circuits import BooleanCircuitsTask


def test_circuits_section(tmp_path: Path) -> None:
    assert circuits_section(tmp_path) == ""
    task = BooleanCircuitsTask()
    target = task.make_target(0)
    truth = task.circuit_truth(target)
    x = task.onehot()
    dec = neuron_decomposition(target, task.mlp_sites())
    graph = build_graph(dec, x)
    groups = groups_of(dec)
    out = score_circuit(dec, x, graph, groups, truth)
    assign, sim = match(graph, groups, truth, 0.7)
    save_scored(tmp_path / "circuits" / "boolean-circuits" / "neurons" / "seed0", graph, truth, assign, sim,
                project(graph, assign, truth))
    out.pop("faithfulness_curve")
    (tmp_path / "circuits_rows.jsonl").write_text(json.dumps({"task": "boolean-circuits", "method": "neurons", **out}) + "\n")
    html = circuits_section(tmp_path)
    assert html.count("<img") == 1 and "multi-hop 4/4" in html
    # the exact neuron basis: its strongest edges between matched nodes are true ones
    # (by weight: a few float-noise edges of weight ~1e-8 are false)
    g = graph.prune(0.2)
    classes = edge_classes(g, assign, truth.edges)
    weight = {c: float(sum(w for w, k in zip(g.weight.tolist(), classes, strict=True) if k == c)) for c in ("true", "false")}
    assert weight["true"] > 0 and weight["false"] < 1e-4 * weight["true"]
