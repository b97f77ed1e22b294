"""`pgd_faithfulness`: the worst admissible ablation, on hand-built decompositions of hand-built targets."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mechscope.config import ConfigError
from mechscope.decompose.dictionary import SparseCoder
from mechscope.decompose.dictionary_decomposition import DictionaryDecomposition, SiteCoder
from mechscope.decompose.oracle import OracleDecomposition, Rules, build_oracle
from mechscope.decompose.random_components import build_random
from mechscope.decompose.spd import SiteComponents, SPDDecomposition, select_sites
from mechscope.decompose.spd_presets import SPDSettings
from mechscope.metrics import eval_sets, score
from mechscope.metrics.faithfulness import faithfulness
from mechscope.metrics.pgd import pgd_faithfulness
from mechscope.zoo.resid_mlp import ResidMLPConfig, ResidMLPTask
from mechscope.zoo.tms import TMSModel, TMSTask

Case = tuple[TMSTask, TMSModel]


def truth_parts(model: TMSModel) -> tuple[torch.Tensor, torch.Tensor, Rules]:
    return model.W.weight.detach().T.clone(), torch.eye(3), [(f"feature{i}", "pos", i) for i in range(3)]


def resid_case() -> tuple[ResidMLPTask, nn.Module]:
    task = ResidMLPTask(ResidMLPConfig(n_features=6, d_embed=12, d_mlp=4, n_layers=1), name="resid-hand")
    return task, task.build(0)


def test_exact_only_under_its_own_masks() -> None:
    """The residual MLP's oracle plus a cancelling pair ±u vᵀ at mlp_in that claims never to be
    used but reads feature 0's embedding: all on, the pair sums to zero (faithfulness 0, as the
    honest oracle); switching one half off where feature 0 is on changes the output."""
    task, model = resid_case()
    truth = task.ground_truth(model)
    honest = build_oracle(model, truth)
    U, V, rules = honest.param["layers.0.mlp_in"]
    v = model.embed.weight.detach()[:, 0:1].T  # (1, d_embed): what feature 0 writes
    u = torch.ones(1, U.shape[1])
    pair: Rules = [("plus", "never", None), ("minus", "never", None)]
    param = dict(honest.param, **{"layers.0.mlp_in": (torch.cat([U, u, -u]), torch.cat([V, v, v]), rules + pair)})
    m = score(OracleDecomposition(model, param, honest.act), task, truth, ablation=False).metrics
    h = score(honest, task, truth, ablation=False).metrics
    assert m["faithfulness"] < 1e-12 and h["faithfulness"] < 1e-12
    assert h["pgd_faithfulness"] < 1e-12
    assert m["pgd_faithfulness"] > 1e-4  # clearly > 0: the pair only cancels when both are on
    assert m["sites"]["layers.0.mlp_in"]["pgd_faithfulness"] > 1e-4 > m["sites"]["layers.0.mlp_out"]["pgd_faithfulness"]
    assert m["pgd_steps"] == 4


def test_calibration_oracle_random_and_resid() -> None:
    """Oracle: its faithfulness (the residual MLP reads each feature only where it is active);
    random: far above it."""
    task, model = resid_case()
    truth = task.ground_truth(model)
    oracle = score(build_oracle(model, truth), task, truth, ablation=False).metrics
    random = score(build_random(model, truth, torch.Generator().manual_seed(0)), task, truth, ablation=False).metrics
    assert oracle["pgd_faithfulness"] < 1e-9 and oracle["faithfulness"] < 1e-9
    assert random["pgd_faithfulness"] > max(1e-4, random["faithfulness"])
    for site in ("layers.0.mlp_in", "layers.0.mlp_out"):  # two sites: each attacked on its own too
        assert random["sites"][site]["pgd_faithfulness"] <= random["pgd_faithfulness"] + 1e-12


def test_never_below_faithfulness_and_more_steps_never_lower(tms3: Case) -> None:
    task, model = tms3
    dec = build_random(model, task.ground_truth(model), torch.Generator().manual_seed(3))
    x = eval_sets(task).data
    f = faithfulness(dec, x, "mse")
    by_steps = [pgd_faithfulness(dec, x, "mse", k).total for k in (0, 1, 4)]
    assert f <= by_steps[0] <= by_steps[1] + 1e-12 and by_steps[0] <= by_steps[2] + 1e-12
    assert by_steps[2] > 1.2 * f


def test_bad_pgd_steps_is_one_line(tms3: Case) -> None:
    task, model = tms3
    dec = build_oracle(model, task.ground_truth(model))
    with pytest.raises(ConfigError, match=r"pgd_steps must be an integer ≥ 0.*got -1$"):
        score(dec, task, pgd_steps=-1)


def sae(model: nn.Module, activation: str, k: int | None = None) -> DictionaryDecomposition:
    """A 2-d SAE on TMS's hidden layer with the three true directions as latents (+ one extra)."""
    coder = SparseCoder(2, 2, 4, activation, k)  # type: ignore[arg-type]
    W = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [-0.6, 0.8]])
    with torch.no_grad():
        coder.W_enc.copy_(W)
        coder.W_dec.copy_(W)
        coder.b_enc.fill_(-0.05)
    return DictionaryDecomposition(model, {"W": SiteCoder(coder.eval(), ("W", "output"))})


def test_dictionary_box_start_and_error_term(tms3: Case) -> None:
    task, model = tms3
    x = eval_sets(task).data[:256]
    for dec in (sae(model, "relu"), sae(model, "topk", 1)):
        adm = dec.admissible(x)
        assert adm.lo["W"].shape == (256, 5)  # 4 latents + the error term
        with torch.no_grad():
            start = dec.forward_admissible(x, adm.start)
            clean = dec.forward_admissible(x, {"W": torch.cat([adm.start["W"][:, :4], torch.ones(256, 1)], 1)})
            torch.testing.assert_close(start, dec.forward_with(x, dec.all_on(256)))
            torch.testing.assert_close(clean, model(x))  # error term fully on: the clean activation
    # a silent ReLU latent has nothing to give; TopK's dropped latents have their pre-activation
    relu, topk = sae(model, "relu"), sae(model, "topk", 1)
    m_relu = score(relu, task, ablation=False).metrics
    m_topk = score(topk, task, ablation=False).metrics
    assert m_relu["pgd_faithfulness"] >= m_relu["faithfulness"]
    assert m_topk["pgd_faithfulness"] > 2 * m_topk["faithfulness"]


def test_spd_box_is_its_causal_importance() -> None:
    model = TMSModel(3, 2, identity=False)
    with torch.no_grad():
        model.W.weight.copy_(torch.tensor([[1.0, 0.0, 0.6], [0.0, 1.0, 0.8]]))
    comp = SiteComponents(2, 3, 4, 8)
    with torch.no_grad():
        comp.V.zero_()
        comp.V[:3] = torch.eye(3)
        comp.U[:, :3] = model.W.weight
    s = SPDSettings(steps=1, batch_size=1, lr=1.0, C=4, importance_coeff=0.0, pnorm=1.0)
    dec = SPDDecomposition(model, select_sites(model, ["W"]), nn.ModuleList([comp]), s)
    x = torch.rand(64, 3)
    adm = dec.admissible(x)
    torch.testing.assert_close(adm.lo["W"], dec.activity(x)["W"].clamp(0, 1))
    assert bool((adm.hi["W"] == 1).all()) and bool((adm.start["W"] == 1).all())
    worst = pgd_faithfulness(dec, x, "mse")
    assert not math.isnan(worst.total) and worst.total >= faithfulness(dec, x, "mse")


def test_pgd_steps_is_a_run_setting_that_reaches_the_scorer(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--set pgd_steps=N` (decompose and bench): bounded ≥ 0, its default the scorer's, recorded in
    config.yaml when set, and the metrics say which N scored them."""
    from pathlib import Path

    import yaml

    from mechscope.bench.run import CellRequest, recorded_request, resolve, run_cell
    from mechscope.config import RunConfig
    from mechscope.metrics.pgd import PGD_STEPS

    assert RunConfig().pgd_steps == PGD_STEPS
    with pytest.raises(ConfigError, match=r"pgd_steps.*-1"):
        resolve(CellRequest("tms-5-2", "oracle", 0, ("pgd_steps=-1",)))
    assert "pgd_steps" not in resolve(CellRequest("tms-5-2", "oracle", 0)).resolved_config()  # old hashes stay
    monkeypatch.setenv("MECHSCOPE_CACHE", str(Path(str(tmp_path)) / "cache"))
    run_dir = Path(str(tmp_path)) / "run"
    m = run_cell(resolve(CellRequest("tms-5-2", "oracle", 0, ("pgd_steps=1",))), run_dir)
    assert m["pgd_steps"] == 1
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["pgd_steps"] == 1
    assert resolve(recorded_request(run_dir / "config.yaml")).run_config.pgd_steps == 1
