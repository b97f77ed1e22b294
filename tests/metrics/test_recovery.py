import math

import torch

from mechscope.metrics import recovery as rec
from mechscope.metrics.activity import activity_f1, alive, f1, f1_per_truth, l0, l0_true
from mechscope.metrics.matching import hungarian


def test_mmcs_mcc_uniqueness_coverage_by_hand() -> None:
    # 2 true mechanisms, 3 components; components 0 and 2 both best-match truth 0.
    sim = torch.tensor([[0.95, 0.1, 0.92], [0.3, 0.5, 0.2]])
    m = hungarian(sim)
    assert math.isclose(rec.mmcs([sim]), (0.95 + 0.5) / 2, rel_tol=1e-6)
    assert math.isclose(rec.mcc([m]), (0.95 + 0.5) / 2, rel_tol=1e-6)
    assert math.isclose(rec.uniqueness([sim]), 2 / 3)  # best matches {0, 1, 0}
    assert math.isclose(rec.coverage([m], 2), 1 / 2)  # only 0.95 ≥ 0.9


def test_colwise_only_for_single_column_truth() -> None:
    T = torch.zeros(2, 2, 3)
    T[0, :, 0] = torch.tensor([1.0, 0.0])
    T[1, :, 2] = torch.tensor([0.0, 2.0])
    P = T.clone()
    P[1] *= 0.5  # half the norm, same direction
    assert rec.mmcs_colwise([rec.colwise(P, T)]) == 1.0
    assert math.isclose(rec.ml2r_colwise([rec.colwise(P, T)]), (1.0 + 0.5) / 2)
    T[1, 0, 1] = 1.0  # now spread over two columns
    assert rec.colwise(P, T) is None
    assert math.isnan(rec.mmcs_colwise([rec.colwise(P, T)]))


def test_dense_group_and_score() -> None:
    any_feature = torch.tensor([True, True, True, False])
    fires = torch.tensor([[1, 1, 0], [1, 1, 0], [1, 0, 0], [0, 0, 1]], dtype=torch.bool)
    group = rec.dense_group(fires, any_feature)  # fractions on non-empty inputs: 1, 2/3, 0
    assert group.tolist() == [True, False, False]
    eye = torch.eye(2)
    P = torch.stack([torch.diag(torch.tensor([1.0, 0.0])), torch.diag(torch.tensor([0.0, 1.0])), eye])
    d = rec.dense_score(P, eye, torch.tensor([True, True, False]))
    assert math.isclose(d.cos, 1.0) and math.isclose(d.l2r, 1.0) and d.rank == 2
    half = rec.dense_score(P, eye, group)
    assert math.isclose(half.cos, 1 / math.sqrt(2), rel_tol=1e-6)
    assert math.isclose(half.l2r, 1 / math.sqrt(2), rel_tol=1e-6)


def test_f1_by_hand() -> None:
    active = torch.tensor([1, 1, 0, 0, 1], dtype=torch.bool)
    fires = torch.tensor([1, 0, 1, 0, 1], dtype=torch.bool)
    assert math.isclose(f1(active, fires), 2 * 2 / (2 * 2 + 1 + 1))  # tp 2, fp 1, fn 1
    assert f1(torch.zeros(3, dtype=torch.bool), torch.zeros(3, dtype=torch.bool)) == 1.0
    both = torch.stack([active, active], 1)
    # truth 1 is unmatched and counts 0; truth 0 is matched to a perfect component.
    per_truth = f1_per_truth(both, torch.stack([active], 1), [0], [0])
    assert per_truth == [1.0, 0.0] and activity_f1([per_truth]) == 0.5


def test_l0_and_alive() -> None:
    fires = torch.tensor([[1, 0, 0], [1, 1, 0]], dtype=torch.bool)
    assert l0(fires) == 1.5
    assert l0_true(torch.tensor([[True, True], [False, True]]), [1, 3]) == (4 + 3) / 2
    onehot = torch.tensor([[0, 0, 1]], dtype=torch.bool)
    assert alive(onehot, fires).tolist() == [True, True, True]
    assert alive(torch.zeros(1, 2, dtype=torch.bool), fires[:, :2], 0.6).tolist() == [True, False]


def test_pooled_over_sites_by_hand() -> None:
    # site a: 2 truths, 3 components (as above); site b: 1 truth, 1 component at 0.5.
    a = torch.tensor([[0.95, 0.1, 0.92], [0.3, 0.5, 0.2]])
    b = torch.tensor([[0.5]])
    ma, mb = hungarian(a), hungarian(b)
    assert math.isclose(rec.mmcs([a, b]), (0.95 + 0.5 + 0.5) / 3, rel_tol=1e-6)
    assert math.isclose(rec.mcc([ma, mb]), (0.95 + 0.5 + 0.5) / 3, rel_tol=1e-6)  # mean over pairs
    assert math.isclose(rec.uniqueness([a, b]), (2 + 1) / (3 + 1))  # ratio of totals
    assert math.isclose(rec.coverage([ma, mb], 3), 1 / 3)
    assert math.isclose(rec.ml2r([[1.0, 0.5], [0.9]]), 2.4 / 3)
    assert math.isnan(rec.mmcs([])) and math.isnan(rec.uniqueness([torch.zeros(2, 0)]))


def test_uniqueness_counts_every_component() -> None:
    # a zero component (sim 0 to everything) still counts in the denominator, as in SAELens
    sim = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert math.isclose(rec.uniqueness([sim]), 2 / 3)
