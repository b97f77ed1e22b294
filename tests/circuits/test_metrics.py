"""Circuit metrics: calibrated on graphs whose answer is known."""

import pytest
import torch

from mechscope.metrics.circuits import MIB_KS, cmd, cpr, edge_auroc, faithfulness_ratio, node_recall


def test_edge_auroc_extremes_and_ties() -> None:
    labels = torch.tensor([True, True, False, False, False])
    assert edge_auroc(torch.tensor([5.0, 4, 3, 2, 1]), labels) == 1.0
    assert edge_auroc(torch.tensor([1.0, 2, 3, 4, 5]), labels) == 0.0
    assert edge_auroc(torch.zeros(5), labels) == 0.5
    with pytest.raises(ValueError, match="true and false"):
        edge_auroc(torch.zeros(3), torch.ones(3, dtype=torch.bool))


def test_edge_auroc_random_is_half_and_grouped_is_scale_free() -> None:
    gen = torch.Generator().manual_seed(0)
    labels = torch.rand(20_000, generator=gen) < 0.1
    assert abs(edge_auroc(torch.rand(20_000, generator=gen), labels) - 0.5) < 0.02
    # two destinations whose scores live on different scales: pooled AUROC suffers, grouped does not
    scores = torch.tensor([2.0, 1.0, 0.2, 0.1])
    labels = torch.tensor([True, False, True, False])
    by = torch.tensor([0, 0, 1, 1])
    assert edge_auroc(scores, labels, by) == 1.0
    assert edge_auroc(scores, labels) == 0.75


def test_cpr_cmd() -> None:
    ks = torch.tensor(MIB_KS)
    assert cpr(ks, torch.ones(len(ks))) == pytest.approx(1.0)
    assert cmd(ks, torch.ones(len(ks))) == pytest.approx(0.0)
    f = ks.double()  # faithfulness growing linearly with k
    assert cpr(ks, f) == pytest.approx(0.5) and cmd(ks, f) == pytest.approx(0.5)
    assert cmd(ks, 1 + f) == pytest.approx(0.5)  # over-performing circuits are penalised too
    torch.testing.assert_close(faithfulness_ratio(torch.tensor([-1.0, -0.5, 0.0]), 0.0, -1.0),
                               torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))


def test_node_recall() -> None:
    sim = torch.tensor([[0.95, 0.1], [0.2, 0.5]])
    assert node_recall(sim, 0.9) == 0.5
    assert node_recall(sim, 0.4) == 1.0
    assert node_recall(torch.zeros(2, 0)) == 0.0
