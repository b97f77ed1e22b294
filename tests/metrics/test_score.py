"""`score` on hand-built decompositions of hand-built targets: every answer is known by hand."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from mechscope.core import active_matrix
from mechscope.decompose.base import Decomposition, Mask
from mechscope.decompose.dictionary import SparseCoder
from mechscope.decompose.dictionary_decomposition import DictionaryDecomposition, SiteCoder
from mechscope.decompose.oracle import OracleDecomposition, Rules, build_oracle
from mechscope.decompose.random_components import RandomDecomposition
from mechscope.metrics import eval_sets, score
from mechscope.zoo.base import Space
from mechscope.zoo.resid_mlp import ResidMLPConfig, ResidMLPTask
from mechscope.zoo.tms import TMSModel, TMSTask

Case = tuple[TMSTask, TMSModel]


def truth_parts(model: TMSModel) -> tuple[torch.Tensor, torch.Tensor, Rules]:
    """U [3, 2], V [3, 3], rules of the three true rank-1 mechanisms W[:, i] e_iᵀ."""
    return model.W.weight.detach().T.clone(), torch.eye(3), [(f"feature{i}", "pos", i) for i in range(3)]


def test_oracle_is_perfect(tms3: Case) -> None:
    task, model = tms3
    m = score(build_oracle(model, task.ground_truth(model)), task).metrics
    for key in ("mmcs", "mcc", "uniqueness", "coverage", "ml2r", "activity_f1", "activity_f1_data"):
        assert math.isclose(m[key], 1.0, abs_tol=1e-6), key
    assert m["faithfulness"] < 1e-12
    assert m["recovery_space"] == "parameter"
    assert m["spaces"]["activation"]["mmcs"] > 1 - 1e-6
    assert m["n_true"] == m["true_rank"] == 3
    assert m["n_alive"] == 3 and m["dead_frac"] == 0.0
    assert math.isclose(m["l0"], m["l0_true"])


def test_permuted_sign_flipped_copy_scores_one(tms3: Case) -> None:
    task, model = tms3
    U, V, rules = truth_parts(model)
    perm = [2, 0, 1]
    dec = OracleDecomposition(model, {"W": (-U[perm], -V[perm], [rules[i] for i in perm])})
    res = score(dec, task)
    assert math.isclose(res.metrics["mmcs"], 1.0, abs_tol=1e-6)
    assert math.isclose(res.metrics["spaces"]["activation"]["mmcs"], 1.0, abs_tol=1e-6)
    assert math.isclose(res.metrics["activity_f1"], 1.0)
    got = {(mt.space, mt.mechanism): mt.component for mt in res.matches}
    assert got[("parameter", "feature2")] == 0 and got[("parameter", "feature0")] == 1
    assert res.tensors["similarity.parameter.W"].shape == (3, 3)
    assert res.tensors["onehot_activity.W"].shape == (3, 3)


def test_duplicate_component_lowers_uniqueness_only(tms3: Case) -> None:
    task, model = tms3
    U, V, rules = truth_parts(model)
    dec = OracleDecomposition(
        model, {"W": (torch.cat([U, U[:1]]), torch.cat([V, V[:1]]), [*rules, rules[0]])}
    )
    m = score(dec, task).metrics
    assert math.isclose(m["uniqueness"], 3 / 4)  # four components, three distinct best matches
    assert math.isclose(m["mmcs"], 1.0, abs_tol=1e-6) and math.isclose(m["coverage"], 1.0)
    assert m["n_alive"] == 4 and m["n_components"] == 4


def test_missing_mechanism_by_hand(tms3: Case) -> None:
    task, model = tms3
    U, V, rules = truth_parts(model)
    m = score(OracleDecomposition(model, {"W": (U[:2], V[:2], rules[:2])}), task).metrics
    # T_2 lives in column 2 only: Frobenius-orthogonal to both remaining components.
    assert math.isclose(m["mmcs"], 2 / 3, abs_tol=1e-6)
    assert math.isclose(m["coverage"], 2 / 3)
    assert math.isclose(m["mcc"], 1.0, abs_tol=1e-6)  # both matched pairs are exact
    assert math.isclose(m["activity_f1"], 2 / 3)  # unmatched truth scores F1 = 0
    assert m["faithfulness"] > 1e-4  # feature 2 can no longer be reconstructed


def test_activity_f1_by_hand(tms3: Case) -> None:
    task, model = tms3
    U, V, rules = truth_parts(model)
    rules[0] = ("feature0", "dense", None)  # fires on every non-empty input
    res = score(OracleDecomposition(model, {"W": (U, V, rules)}), task)
    # onehot: truth 0 is active on input 0 only; component 0 fires on all 3 → tp 1, fp 2: F1 = 1/2.
    assert math.isclose(res.metrics["activity_f1"], (0.5 + 1 + 1) / 3)


def test_faithfulness_exact_and_shrunk(tms3: Case) -> None:
    task, model = tms3
    U, V, rules = truth_parts(model)
    exact = score(OracleDecomposition(model, {"W": (U, V, rules)}), task).metrics
    half = score(OracleDecomposition(model, {"W": (0.5 * U, V, rules)}), task).metrics
    assert exact["faithfulness"] == 0.0
    assert half["faithfulness"] > 1e-3
    assert math.isclose(half["ml2r"], 0.5, rel_tol=1e-6)
    assert math.isclose(half["mmcs"], 1.0, abs_tol=1e-6)  # direction is right, only the norm is off


def test_dense_group_scoring(tms3_id: Case) -> None:
    task, model = tms3_id
    U, V, rules = truth_parts(model)
    eye = torch.eye(2)
    id_rules: Rules = [("id.0", "dense", None), ("id.1", "dense", None)]
    full = {"W": (U, V, rules), "identity": (eye, eye, id_rules)}
    m = score(OracleDecomposition(model, full), task).metrics
    assert m["n_true"] == 4 and m["true_rank"] == 5
    assert math.isclose(m["dense_cos"], 1.0, abs_tol=1e-6) and m["dense_rank"] == 2
    assert math.isclose(m["mmcs"], 1.0, abs_tol=1e-6)  # the dense mechanism stays out of rank-1 averages
    # One identity part never fires: the group is half the identity.
    half_rules: Rules = [("id.0", "dense", None), ("id.1", "never", None)]
    half = dict(full, identity=(eye, eye, half_rules))
    mh = score(OracleDecomposition(model, half), task).metrics
    assert mh["dense_rank"] == 1
    assert math.isclose(mh["dense_cos"], 1 / math.sqrt(2), rel_tol=1e-5)
    assert math.isclose(mh["sites"]["identity"]["dense_l2r"], 1 / math.sqrt(2), rel_tol=1e-5)


def test_absent_space_keys_are_absent(tms3: Case) -> None:
    task, model = tms3
    W = model.W.weight.detach().T
    dec = RandomDecomposition(model, {}, {"W": W / W.norm(dim=1, keepdim=True)})
    m = score(dec, task).metrics
    assert m["recovery_space"] == "activation"
    assert "parameter" not in m["spaces"] and "ml2r" not in m and "mmcs_colwise" not in m
    assert math.isclose(m["mmcs"], 1.0, abs_tol=1e-6)


def test_eval_sets_are_fixed(tms3: Case) -> None:
    task, _ = tms3
    a, b = eval_sets(task), eval_sets(task)
    assert torch.equal(a.data, b.data) and a.data.shape == (4096, 3)
    assert torch.equal(a.onehot, 0.75 * torch.eye(3))


class TranscoderLike(Decomposition):
    """Latents at an MLP's output site with given write (decoder) and read (encoder) vectors."""

    kind = "test-transcoder"

    def __init__(self, target: nn.Module, site: str, writes: torch.Tensor, reads: torch.Tensor) -> None:
        super().__init__(target, [site])
        self.writes, self.reads = writes, reads

    def n_components(self, site: str) -> int:
        return int(self.writes.shape[0])

    def directions(self, site: str, space: Space) -> torch.Tensor | None:
        return self.writes if space == "activation" else None

    def read_directions(self, site: str) -> torch.Tensor:
        return self.reads

    def activity(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {self.sites[0]: torch.zeros(x.shape[0], self.writes.shape[0])}

    def forward_with(self, x: torch.Tensor, mask: Mask) -> torch.Tensor:
        return self.target(x)

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return {"w": self.writes, "r": self.reads}, {"site": self.sites[0]}

    @classmethod
    def from_state(
        cls, target: nn.Module, tensors: dict[str, torch.Tensor], config: dict[str, Any]
    ) -> Decomposition:
        return cls(target, config["site"], tensors["w"], tensors["r"])


def hand_resid_task() -> ResidMLPTask:
    return ResidMLPTask(ResidMLPConfig(n_features=6, d_embed=12, d_mlp=4, n_layers=1), name="resid-hand")


def hand_transcoder_truth() -> tuple[ResidMLPTask, nn.Module, str, list[Any], torch.Tensor, torch.Tensor]:
    """A tiny resid-MLP with its true transcoder at mlp_out: (task, model, site, mechanisms, writes, reads)."""
    task = hand_resid_task()
    model = task.build(0)
    site = "layers.0.mlp_out"
    mechs = task.ground_truth(model).in_space("activation", site)
    writes = torch.stack([m.direction for m in mechs])
    reads = torch.stack([m.read for m in mechs if m.read is not None])
    return task, model, site, mechs, writes, reads


def test_transcoder_read_side_is_scored() -> None:
    task, model, site, _mechs, writes, reads = hand_transcoder_truth()
    m = score(TranscoderLike(model, site, writes, reads), task, ablation=False).metrics
    assert m["recovery_space"] == "activation" and m["unscored_sites"] == {"activation": ["embed"]}
    assert math.isclose(m["read_mmcs"], 1.0, abs_tol=1e-6) and math.isclose(m["read_mcc"], 1.0, abs_tol=1e-6)
    wrong = score(TranscoderLike(model, site, writes, reads.roll(1, dims=0)), task, ablation=False).metrics
    assert math.isclose(wrong["read_mmcs"], 1.0, abs_tol=1e-6)  # every read exists somewhere…
    assert wrong["read_mcc"] < 0.9  # …but not on the latent that writes that feature


def test_parameter_method_on_dense_mlp_out_has_no_activation_space() -> None:
    task = hand_resid_task()
    model = task.build(0)
    oracle = build_oracle(model, task.ground_truth(model))
    m = score(OracleDecomposition(model, oracle.param), task, ablation=False).metrics  # no "embed" part
    assert list(m["spaces"]) == ["parameter"] and "unscored_sites" not in m
    assert m["sites"]["layers.0.mlp_out"]["recovery_space"] == "parameter"
    assert math.isclose(m["sites"]["layers.0.mlp_out"]["dense_cos"], 1.0, abs_tol=1e-6)
    assert "mmcs" not in m["sites"]["layers.0.mlp_out"]  # no rank-1 truth there


def test_l0_true_counts_only_the_scored_sites() -> None:
    """Issue 13: a method at mlp_out is scored on mlp_out's truth only, and so is l0_true (the
    unscored residual stream's ±W_E[i] would double it)."""
    task, model, site, mechs, writes, reads = hand_transcoder_truth()
    m = score(TranscoderLike(model, site, writes, reads), task, ablation=False).metrics
    data = eval_sets(task).data
    expected = float(active_matrix(mechs, data).float().sum(1).mean())
    embed = task.ground_truth(model).in_space("activation", "embed")
    assert m["unscored_sites"] == {"activation": ["embed"]}
    assert math.isclose(m["l0_true"], expected, rel_tol=1e-6) and m["sites"][site]["l0_true"] == m["l0_true"]
    assert float(active_matrix(embed, data).float().sum(1).mean()) > 0.5 * expected  # what it used to add


def test_uniqueness_denominator_is_every_component() -> None:
    """SAELens's definition: the oracle's W_in (I − Π) pieces (never active, zero on the data's
    span) are components too, so they count in the denominator."""
    task = hand_resid_task()
    model = task.build(0)
    dec = build_oracle(model, task.ground_truth(model))
    m = score(dec, task, ablation=False).metrics
    site = "layers.0.mlp_in"
    n_never = sum(1 for _, rule, _ in dec.param[site][2] if rule == "never")
    assert n_never > 0
    assert math.isclose(m["sites"][site]["uniqueness"], 6 / dec.n_components(site))
    assert math.isclose(m["mmcs"], 1.0, abs_tol=1e-6)


def test_a_latent_is_matched_to_the_signed_feature_on_its_side() -> None:
    """resid-mlp's residual stream carries ±W_E[i]. An SAE with a latent on every ±W_E[i], plus a
    duplicate on −W_E[0] a hair closer than the +W_E[0] latent: ranked by |cos| alone, the duplicate
    took +W_E[0]'s place and feature0+ scored F1 0, though its latent fires exactly on it."""
    task = hand_resid_task()
    model = task.build(0)
    E = task.ground_truth(model).in_space("activation", "embed")
    plus = torch.stack([m.direction for m in E if m.rule == "pos"])  # (6, 12) +W_E[i]
    g = torch.Generator().manual_seed(0)
    off = torch.randn(2, plus.shape[1], generator=g)
    rows = [plus[0] + 0.03 * off[0], *plus[1:], *(-plus), -plus[0] + 1e-3 * off[1]]  # +0 (off), +1…, −all, dup −0
    D = torch.stack(rows)
    D = D / D.norm(dim=1, keepdim=True)
    coder = SparseCoder(D.shape[1], D.shape[1], D.shape[0], "relu")
    with torch.no_grad():
        coder.W_enc.copy_(D)
        coder.W_dec.copy_(D)
        cross = float((plus @ plus.T).fill_diagonal_(0).abs().max())  # the features' largest overlap
        coder.b_enc.fill_(-0.75 * (1 + cross) / 2)  # fires on its own feature at 0.75, on no other
    m = score(DictionaryDecomposition(model, {"embed": SiteCoder(coder, ("embed", "output"))}), task,
              ablation=False).metrics
    assert math.isclose(m["sites"]["embed"]["activity_f1"], 1.0), m["sites"]["embed"]["activity_f1"]
    assert m["sites"]["embed"]["mcc"] > 0.9999  # SAELens's mcc still pairs by |cos|: the duplicate's 1.0
