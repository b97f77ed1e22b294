"""`absorption` by hand: a perfect decomposition scores 0, an absorbing one 1, half-absorbed 0.5."""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor

from mechscope.decompose.oracle import OracleDecomposition, Rules
from mechscope.metrics import eval_sets, score
from mechscope.metrics.absorption import absorption_rate, ancestors, hierarchy_probe
from mechscope.zoo.base import GroundTruth
from mechscope.zoo.tms import TMSModel, TMSTask

Case = tuple[TMSTask, TMSModel]


def test_absorption_rate_by_hand() -> None:
    t, f = True, False
    parent_on = torch.tensor([t, t, t, t, f])
    child_on = torch.tensor([t, t, t, f, f])
    parent_fires = torch.tensor([f, t, f, f, f])
    child_fires = torch.tensor([t, t, f, f, t])
    # Both active on inputs 0-2; absorbed (child fires, parent silent) on input 0 only.
    assert math.isclose(absorption_rate(parent_on, child_on, parent_fires, child_fires), 1 / 3)
    assert math.isnan(absorption_rate(parent_on, ~parent_on, parent_fires, child_fires))


def test_probe_puts_every_ancestor_on() -> None:
    tree = [(0, 1), (1, 2), (0, 3)]  # 0 → 1 → 2, 0 → 3
    assert ancestors(tree, 2) == {0, 1} and ancestors(tree, 0) == set()
    x = hierarchy_probe(tree, 5)
    assert x.shape == (3, 5)
    assert torch.equal(x[1], torch.tensor([0.75, 0.75, 0.75, 0.0, 0.0]))  # pair (1, 2): child 2, 1 and 0
    assert torch.equal(x[2], torch.tensor([0.75, 0.0, 0.0, 0.75, 0.0]))


class Absorbing(OracleDecomposition):
    """The oracle, except the parent's component is silent whenever `child` is on above `above`."""

    def __init__(self, model: TMSModel, parent: int, child: int, above: float = 0.0) -> None:
        W = model.W.weight.detach().T.clone()
        rules: Rules = [(f"feature{i}", "pos", i) for i in range(3)]
        super().__init__(model, {"W": (W, torch.eye(3), rules)})
        self.parent, self.child, self.above = parent, child, above

    def activity(self, x: Tensor) -> dict[str, Tensor]:
        a = super().activity(x)
        a["W"][:, self.parent] *= (x[:, self.child] <= self.above).float()
        return a


def with_hierarchy(task: TMSTask, model: TMSModel, pairs: list[tuple[int, int]]) -> GroundTruth:
    return dataclasses.replace(task.ground_truth(model), hierarchy=pairs)


def test_perfect_scores_zero_and_no_hierarchy_is_absent(tms3: Case) -> None:
    task, model = tms3
    m = score(Absorbing(model, 0, 1, above=math.inf), task, with_hierarchy(task, model, [(0, 1)])).metrics
    assert m["absorption"] == 0.0 and m["absorption_data"] == 0.0
    assert m["sites"]["W"]["absorption"] == 0.0
    plain = score(Absorbing(model, 0, 1, above=math.inf), task).metrics
    assert "absorption" not in plain and "absorption" not in plain["sites"]["W"]


def test_absorbing_scores_one(tms3: Case) -> None:
    task, model = tms3
    m = score(Absorbing(model, 0, 1), task, with_hierarchy(task, model, [(0, 1)])).metrics
    assert m["absorption"] == 1.0 and m["absorption_data"] == 1.0
    assert m["sites"]["W"]["absorption_data"] == 1.0
    assert math.isclose(m["mmcs"], 1.0, abs_tol=1e-6)  # the directions are perfect: only firing is off


def test_half_absorbed(tms3: Case) -> None:
    task, model = tms3
    # Two pairs, one absorbed: 0.5 on the probe set.
    two = with_hierarchy(task, model, [(0, 1), (0, 2)])
    assert score(Absorbing(model, 0, 1), task, two).metrics["absorption"] == 0.5
    # One pair, absorbed only when the child is above 0.5: on `data` the fraction counted by hand.
    x = eval_sets(task).data
    both = (x[:, 0] > 0) & (x[:, 1] > 0)
    expect = int((both & (x[:, 1] > 0.5)).sum()) / int(both.sum())
    m = score(Absorbing(model, 0, 1, above=0.5), task, with_hierarchy(task, model, [(0, 1)])).metrics
    assert math.isclose(m["absorption_data"], expect) and 0.4 < expect < 0.6
    assert m["absorption"] == 1.0  # the probe's child is at 0.75 > 0.5
