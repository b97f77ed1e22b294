"""Behavioural metrics by hand: output error, shrinkage, ablation specificity, seed stability."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mechscope.decompose.base import Decomposition, Mask
from mechscope.decompose.oracle import build_oracle
from mechscope.decompose.random_components import build_random
from mechscope.metrics import score, seed_stability
from mechscope.metrics.faithfulness import output_error, per_input_change, shrinkage_by_site
from mechscope.zoo.tms import TMSConfig, TMSModel, TMSTask


class HalfSAE(Decomposition):
    """An activation 'dictionary' at site W whose reconstruction is half the true activation."""

    kind = "test-half"

    def __init__(self, target: nn.Module, directions: Tensor) -> None:
        super().__init__(target, ["W"])
        self.p = directions

    def n_components(self, site: str) -> int:
        return int(self.p.shape[0])

    def directions(self, site: str, space: Any) -> Tensor | None:
        return self.p if space == "activation" else None

    def activity(self, x: Tensor) -> dict[str, Tensor]:
        return {"W": x.clone()}

    def forward_with(self, x: Tensor, mask: Mask) -> Tensor:
        return self.target(x)

    def reconstruct(self, x: Tensor) -> dict[str, Tensor]:
        assert isinstance(self.target, TMSModel)
        return {"W": 0.5 * self.target.W(x)}

    def state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        return {"p": self.p}, {}

    @classmethod
    def from_state(
        cls, target: nn.Module, tensors: dict[str, Tensor], config: dict[str, Any]
    ) -> Decomposition:
        return cls(target, tensors["p"])


def orthogonal_tms() -> tuple[TMSTask, TMSModel]:
    """Two features in two dims along the axes: no interference at all."""
    task = TMSTask(TMSConfig(n_features=2, n_hidden=2, feature_prob=0.5), name="tms-orth")
    model = task.build()
    with torch.no_grad():
        model.W.weight.copy_(torch.eye(2))
    return task, model


def test_output_error_mse_and_kl() -> None:
    y_ref = torch.tensor([[1.0, 2.0, 0.5]])
    y = torch.tensor([[0.0, 2.0, 1.5]])
    assert math.isclose(output_error(y, y_ref, "mse"), 2 / 3, rel_tol=1e-9)
    kl = F.kl_div(F.log_softmax(y, -1), F.log_softmax(y_ref, -1), log_target=True, reduction="batchmean")
    assert math.isclose(output_error(y, y_ref, "logits"), float(kl), rel_tol=1e-5)
    assert output_error(y_ref, y_ref, "logits") == 0.0
    assert per_input_change(y, y_ref, "mse").shape == (1,)


def test_shrinkage_is_the_reconstruction_norm_ratio() -> None:
    task, model = orthogonal_tms()
    dec = HalfSAE(model, torch.eye(2))
    assert shrinkage_by_site(dec, task.onehot()) == {"W": 0.5}
    m = score(dec, task).metrics
    assert m["shrinkage"] == 0.5 and m["sites"]["W"]["shrinkage"] == 0.5
    assert m["recovery_space"] == "activation" and math.isclose(m["mmcs"], 1.0)
    assert "shrinkage" not in score(build_oracle(model, task.ground_truth(model)), task).metrics


def test_ablation_specificity_is_one_without_interference() -> None:
    task, model = orthogonal_tms()
    oracle = score(build_oracle(model, task.ground_truth(model)), task).metrics
    assert oracle["ablation_specificity"] == 1.0  # ablating feature i changes nothing where x_i = 0
    rand = score(
        build_random(model, task.ground_truth(model), torch.Generator().manual_seed(0)), task
    ).metrics
    assert rand["ablation_specificity"] < 0.95


def test_seed_stability() -> None:
    task, model = orthogonal_tms()
    truth = task.ground_truth(model)
    oracle = build_oracle(model, truth)
    r0 = build_random(model, truth, torch.Generator().manual_seed(0), n_components=8)
    r1 = build_random(model, truth, torch.Generator().manual_seed(1), n_components=8)
    assert seed_stability(oracle, oracle) == 1.0
    assert math.isclose(seed_stability(r0, r0) or 0.0, 1.0, rel_tol=1e-6)
    between = seed_stability(r0, r1)
    assert between is not None and between < 0.95
    x = task.sample(512, torch.Generator().manual_seed(0))
    assert seed_stability(oracle, oracle, x=x) == 1.0
