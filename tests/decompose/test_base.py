"""The Decomposition interface: ParameterDecomposition's hook-based ablation and save/load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from mechscope.decompose.base import Decomposition, ParameterDecomposition, load_decomposition
from mechscope.decompose.oracle import OracleDecomposition, build_oracle
from mechscope.zoo.tms import TMSConfig, TMSModel, TMSTask


class Plain(ParameterDecomposition):
    """The smallest ParameterDecomposition: stored matrices, base-class ablation path."""

    kind = "test-plain"

    def __init__(self, target: nn.Module, P: dict[str, Tensor]) -> None:
        super().__init__(target, list(P))
        self.P = P

    def components(self, site: str) -> Tensor:
        return self.P[site]

    def activity(self, x: Tensor) -> dict[str, Tensor]:
        return {s: torch.ones(x.shape[0], p.shape[0]) for s, p in self.P.items()}

    def state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        return dict(self.P), {}

    @classmethod
    def from_state(
        cls, target: nn.Module, tensors: dict[str, Tensor], config: dict[str, Any]
    ) -> Decomposition:
        return cls(target, tensors)


def tms_id() -> tuple[TMSTask, TMSModel]:
    task = TMSTask(TMSConfig(n_features=4, n_hidden=2, identity=True), name="tms-hand-id")
    model = task.build()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model.W.weight.copy_(torch.randn(2, 4, generator=gen))
        model.b_final.copy_(0.1 * torch.randn(4, generator=gen))
    return task, model


def columns(model: TMSModel) -> Tensor:
    """[4, 2, 4]: W split into its columns, W[:, i] e_iᵀ."""
    W = model.W.weight.detach()
    return torch.stack([torch.outer(W[:, i], torch.eye(4)[i]) for i in range(4)])


def test_all_on_is_the_target_and_absent_sites_run_unchanged() -> None:
    task, model = tms_id()
    dec = Plain(model, {"W": columns(model), "identity": torch.eye(2)[None]})
    x = task.sample(256, torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x)
        assert torch.allclose(dec.forward_with(x, dec.all_on(256)), y, atol=1e-6)
        assert torch.allclose(dec.forward_with(x, {}), y)


def test_ablating_a_column_ablates_it_in_the_tied_layer_too() -> None:
    task, model = tms_id()
    dec = Plain(model, {"W": columns(model)})
    x = task.sample(64, torch.Generator().manual_seed(2))
    ablated = TMSModel(4, 2, identity=True)
    ablated.load_state_dict(model.state_dict())
    with torch.no_grad():
        ablated.W.weight[:, 1] = 0.0  # both W and its tied transpose lose feature 1
        want = ablated(x)
        per_input = dec.forward_with(x, {"W": torch.tensor([1.0, 0.0, 1.0, 1.0]).expand(64, -1)})
        shared = dec.forward_with(x, {"W": torch.tensor([1.0, 0.0, 1.0, 1.0])})  # a [C] mask broadcasts
    assert torch.allclose(per_input, want, atol=1e-6)
    assert torch.equal(per_input, shared)


def test_factored_ablation_matches_the_generic_path() -> None:
    task, model = tms_id()
    oracle = build_oracle(model, task.ground_truth(model))
    plain = Plain(model, {s: oracle.components(s) for s in oracle.sites})
    x = task.sample(128, torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(4)
    mask = {s: (torch.rand(128, oracle.n_components(s), generator=gen) > 0.4).float() for s in oracle.sites}
    with torch.no_grad():
        assert torch.allclose(oracle.forward_with(x, mask), plain.forward_with(x, mask), atol=1e-5)
    for s in oracle.sites:
        a, b = oracle.directions(s, "activation"), plain.directions(s, "activation")
        assert a is not None and b is not None
        assert torch.allclose((a * b).sum(1).abs(), torch.ones(a.shape[0]), atol=1e-5)  # same up to sign


def test_save_load_round_trip_and_unknown_kind(tmp_path: Path) -> None:
    task, model = tms_id()
    dec = build_oracle(model, task.ground_truth(model))
    dec.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["components.safetensors", "decomposition.json"]
    back = load_decomposition(tmp_path, model)
    assert isinstance(back, OracleDecomposition)
    assert all(torch.equal(back.components(s), dec.components(s)) for s in dec.sites)
    meta = json.loads((tmp_path / "decomposition.json").read_text())
    meta["kind"] = "nope"
    (tmp_path / "decomposition.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="unknown decomposition kind 'nope'"):
        load_decomposition(tmp_path, model)
