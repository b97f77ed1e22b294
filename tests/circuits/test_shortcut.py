"""The multi-hop / shortcut verdict: the rule, and end to end on boolean-circuits graphs whose
answer is known (the exact neuron basis finds every path; a transcoder whose layer-1 latents read
the raw inputs is a shortcut)."""

import torch

from mechscope.circuits import build_graph, groups_of, neuron_decomposition
from mechscope.circuits.score import calibration_graph, match, project, recovered_of, score_circuit
from mechscope.circuits.shortcut import hop_verdicts, overall, summary, verdict_of
from mechscope.zoo.boolean_circuits import BooleanCircuitsTask, directions, feature_names


def test_verdict_rule() -> None:
    assert verdict_of(True, 0.4, 0.5, 0.1) == "multi-hop"
    assert verdict_of(True, 0.4, 0.1, 0.3) == "shortcut"  # h found, but y is wired to a, b
    assert verdict_of(False, 0.0, 0.0, 0.2) == "shortcut"
    assert verdict_of(False, 0.0, 0.0, 0.0) == "missing"
    assert verdict_of(True, 0.0, 0.5, 0.0) == "missing"  # h → y but nothing into h


def test_oracle_and_rewired_projection() -> None:
    task = BooleanCircuitsTask()
    truth = task.circuit_truth(task.make_target(0))
    g, groups = calibration_graph(truth, "oracle")
    assign, sim = match(g, groups, truth, 0.7)
    S = project(g, assign, truth)
    hops = hop_verdicts(S, truth, recovered_of(sim, truth, 0.9))
    assert len(hops) == 4 and overall(hops) == "multi-hop" and summary(hops) == "multi-hop 4/4"
    # rewire every hop h → y as a → y, b → y: all shortcuts
    S2 = S.clone()
    for h in hops:
        hi, yi = truth.index(h.intermediate), truth.index(h.reader)
        S2[hi, yi] = 0
        for p, q in truth.edges:
            if q == hi:
                S2[p, yi] = 0.5
    assert {h.verdict for h in hop_verdicts(S2, truth, recovered_of(sim, truth, 0.9))} == {"shortcut"}


def test_end_to_end_neurons_vs_shortcut_transcoder() -> None:
    task = BooleanCircuitsTask()
    target = task.make_target(0)
    truth = task.circuit_truth(target)
    x = task.onehot()
    dec = neuron_decomposition(target, task.mlp_sites())
    out = score_circuit(dec, x, build_graph(dec, x), groups_of(dec), truth)
    assert out["shortcut"] == "multi-hop" and all(h["verdict"] == "multi-hop" for h in out["hops"])
    # y0's layer-1 "latents" read x0 + x1 + x2 straight from the stream (dual reads of the inputs):
    # the reconstruction error absorbs the difference, the graph wires x0, x1 → y0, h0 → y0 vanishes
    _, D = directions(task.config.d_model, 0)
    names = feature_names()
    coder = dec.coders["layers.1.mlp_out"].coder
    with torch.no_grad():
        for n in (0, 1):  # y0 = XOR(h0, x2) owns layer 1's first two neurons
            coder.W_enc[n] = D[names.index("x0")] + D[names.index("x1")] + D[names.index("x2")]
    out = score_circuit(dec, x, build_graph(dec, x), groups_of(dec), truth)
    h0y0 = next(h for h in out["hops"] if (h["intermediate"], h["reader"]) == ("h0", "y0"))
    assert h0y0["verdict"] == "shortcut" and h0y0["path"] < 1e-6 < h0y0["shortcut"]
    assert out["shortcut"] == "shortcut"
