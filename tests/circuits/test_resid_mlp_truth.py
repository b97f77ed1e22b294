"""resid-mlp true circuits derived from the weights: oracle 1, random ≈ 0.5, structure as documented."""


from mechscope.circuits.resid_mlp_truth import resid_mlp_circuit
from mechscope.circuits.score import calibration_aurocs
from mechscope.zoo.resid_mlp import ResidMLPConfig, ResidMLPTask


def test_resid_mlp_truth_calibration() -> None:
    task = ResidMLPTask(ResidMLPConfig(n_features=20, d_embed=64, d_mlp=25, n_layers=3), "tiny", "")
    model = task.build(0)  # the derivation reads any weights; no training needed
    truth = resid_mlp_circuit(model, task.ground_truth(model))
    pairs = [(truth.nodes[p], truth.nodes[q]) for p, q in truth.edges]
    assert all(p.index == q.index for p, q in pairs)  # edges never join two different features
    assert {p.index for p, q in pairs if p.kind == "input" and q.kind == "output"} == set(range(20))
    assert any(p.kind == "feature" and q.kind == "feature" for p, q in pairs)  # layers read earlier layers
    oracle, random_mean = calibration_aurocs(truth, n_random=5)
    assert oracle == 1.0 and abs(random_mean - 0.5) < 0.04
