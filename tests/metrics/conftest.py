"""Hand-built TMS targets whose true mechanisms are known by construction (no training)."""

from __future__ import annotations

import pytest
import torch

from mechscope.zoo.tms import TMSConfig, TMSModel, TMSTask

# Three features in two dims, one per column: distinct columns make T_i ⟂ T_j in Frobenius.
W3 = torch.tensor([[1.0, 0.0, 0.6], [0.0, 1.0, 0.8]])  # (m=2, n=3), every ‖W[:, i]‖ = 1


def make(identity: bool = False) -> tuple[TMSTask, TMSModel]:
    task = TMSTask(TMSConfig(n_features=3, n_hidden=2, identity=identity, feature_prob=0.3), name="tms-hand")
    model = task.build()
    with torch.no_grad():
        model.W.weight.copy_(W3)
        model.b_final.fill_(-0.1)
    return task, model


@pytest.fixture
def tms3() -> tuple[TMSTask, TMSModel]:
    return make(False)


@pytest.fixture
def tms3_id() -> tuple[TMSTask, TMSModel]:
    return make(True)
