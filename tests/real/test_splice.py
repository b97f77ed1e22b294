"""Splice metrics on the tiny local LM: the definitions at their end points, and trained decompositions."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mechscope.decompose.dictionary import TopKOptions
from mechscope.decompose.sae import train_sae
from mechscope.decompose.spd import SPDDecomposition, select_sites, weight_matrix
from mechscope.decompose.spd_components import SiteComponents
from mechscope.decompose.spd_presets import resolve
from mechscope.hooks import SiteError
from mechscope.metrics.pgd import pgd_faithfulness
from mechscope.real.causal_lm import CORPUS, corpus_windows, local_lm
from mechscope.real.models import LoadedModel, OutputModel, load_model
from mechscope.real.splice import (
    ce_loss_recovered,
    evaluate_dictionary,
    evaluate_spd,
    lm_forward,
    next_token_kl,
    replaced,
    splice_losses,
    zero_ablated,
)
from mechscope.real.splice_pgd import pgd_splice

SITE = "transformer.h.1"  # the residual stream after the last block of the 2-layer tiny LM


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MECHSCOPE_CACHE", str(tmp_path_factory.getbasetemp() / "lm-cache"))
        return load_model(local_lm(CORPUS, "tiny", seed=0).path)


@pytest.fixture(scope="module")
def ids(lm: LoadedModel) -> torch.Tensor:
    return corpus_windows(lm.tokenizer, CORPUS, 32, split="held_out", block=256)[:24]


def test_definitions_at_their_end_points() -> None:
    assert ce_loss_recovered(2.0, 2.0, 5.0) == 1.0
    assert ce_loss_recovered(2.0, 5.0, 5.0) == 0.0
    assert ce_loss_recovered(2.0, 2.75, 5.0) == pytest.approx(0.75)
    assert ce_loss_recovered(2.0, 6.0, 5.0) < 0  # worse than ablating: negative, as SAELens reports it
    assert math.isnan(ce_loss_recovered(2.0, 2.0, 2.0))
    logits = torch.randn(2, 5, 7)
    assert float(next_token_kl(logits, logits).abs().max()) < 1e-6
    assert next_token_kl(logits, torch.randn(2, 5, 7)).shape == (2, 4)


def test_perfect_reconstruction_recovers_everything_and_zero_recovers_nothing(lm: LoadedModel, ids: torch.Tensor) -> None:
    m = lm.model
    perfect = splice_losses(lm_forward(m), replaced(m, SITE, lambda h: h.clone()), zero_ablated(m, SITE), ids)
    assert perfect.ce_loss_recovered == pytest.approx(1.0, abs=1e-6) and perfect.kl_spliced == pytest.approx(0, abs=1e-6)
    assert perfect.ce_zero_ablated > perfect.ce_clean + 0.5  # ablating the residual stream hurts
    zero = splice_losses(lm_forward(m), replaced(m, SITE, torch.zeros_like), zero_ablated(m, SITE), ids)
    assert zero.ce_loss_recovered == pytest.approx(0.0, abs=1e-6)
    assert zero.kl_spliced == pytest.approx(zero.kl_zero_ablated) and zero.kl_spliced > 0.1
    assert perfect.n_tokens == ids.shape[0] * (ids.shape[1] - 1)


def test_trained_sae_recovers_most_of_the_loss(lm: LoadedModel, ids: torch.Tensor) -> None:
    model = OutputModel(lm.model, True)
    train = corpus_windows(lm.tokenizer, CORPUS, 32, split="train", block=256)
    loader = [train[i : i + 32] for i in range(0, 1024, 32)]
    dec = train_sae(model, loader, SITE, TopKOptions(n_latents=128, k=8, steps=300, batch_size=256, buffer_size=8192))
    m = evaluate_dictionary(dec, ids)
    assert {"ce_loss_recovered", "kl_spliced", "fve", "l0", "dead_frac", "ce_clean", "ce_spliced", "ce_zero_ablated"} <= set(m)
    assert m["l0"] <= 8 and 0 <= m["dead_frac"] < 1
    assert m["fve"] > 0.6 and 0.6 < m["ce_loss_recovered"] <= 1.05, m
    assert 0 < m["kl_spliced"] < m["kl_zero_ablated"]
    # the spliced forward is the decomposition's own forward_with, and the clean CE the model's
    assert m["ce_clean"] < m["ce_spliced"] < m["ce_zero_ablated"]


def _exact_spd(model: nn.Module, modules: list[str]) -> SPDDecomposition:
    """SPD components that are the SVD of each weight, with causal importance 1 everywhere: the
    CI-masked forward is then the model itself."""
    sites = select_sites(model, modules)
    comps = nn.ModuleList()
    for site in sites:
        W = weight_matrix(site).detach().float()  # (d_out, d_in)
        U, S, Vh = torch.linalg.svd(W, full_matrices=False)
        c = SiteComponents(W.shape[0], W.shape[1], S.numel(), 4)
        with torch.no_grad():
            c.U.copy_(U * S)
            c.V.copy_(Vh)
            c.b2.fill_(5.0)  # ci_mlp ≡ 5 → hard sigmoid 1
        comps.append(c)
    return SPDDecomposition(model, sites, comps, resolve("fast", {"C": comps[0].U.shape[1], "ci_hidden": 4}, "real-model", "real"))


def test_spd_with_exact_components_splices_perfectly(lm: LoadedModel, ids: torch.Tensor) -> None:
    model = OutputModel(lm.model, True)
    dec = _exact_spd(model, ["transformer.h.0.mlp.c_fc", "transformer.h.0.mlp.c_proj"])
    m = evaluate_spd(dec, ids, "transformer.h.0.mlp")
    assert m["ce_loss_recovered"] == pytest.approx(1.0, abs=1e-3) and m["kl_spliced"] < 1e-5
    assert m["fve"] == pytest.approx(1.0, abs=1e-4) and m["dead_frac"] == 0
    assert m["l0"] == pytest.approx(m["n_components"])
    assert m["ce_zero_ablated"] > m["ce_clean"]


def test_bad_inputs_are_one_line_errors(lm: LoadedModel, ids: torch.Tensor, minilm: LoadedModel) -> None:
    for encoder in (minilm.model, OutputModel(minilm.model, logits=False), OutputModel(lm.model, logits=False)):
        with pytest.raises(ValueError, match="needs a causal LM with an LM head") as err:
            lm_forward(encoder)
        assert "\n" not in str(err.value)
    with pytest.raises(SiteError, match=r"no module named 'transformer\.h\.7'") as err2:
        replaced(lm.model, "transformer.h.7", torch.zeros_like)
    assert "\n" not in str(err2.value)
    with pytest.raises(ValueError, match=r"need token windows .*got shape \(0, 32\)"):
        splice_losses(lm_forward(lm.model), lm_forward(lm.model), zero_ablated(lm.model, SITE), ids[:0])


def test_pgd_masks_cannot_hurt_a_decomposition_that_claims_everything(lm: LoadedModel, ids: torch.Tensor) -> None:
    """CI = 1 everywhere: the admissible box is the point all-on, so the worst case is the CI case."""
    dec = _exact_spd(OutputModel(lm.model, True), ["transformer.h.0.mlp.c_fc", "transformer.h.0.mlp.c_proj"])
    ids = ids[:6]  # a few windows: the adversary runs 6 forwards and 4 backwards per chunk
    ci = evaluate_spd(dec, ids, "transformer.h.0.mlp")
    m = pgd_splice(dec, ids, ci["ce_clean"], ci["ce_zero_ablated"], steps=2)
    assert m["ce_loss_recovered_pgd"] == pytest.approx(1.0, abs=1e-3) and m["kl_spliced_pgd"] < 1e-5
    assert m["pgd_faithfulness"] < 1e-5 and m["pgd_steps"] == 2


def test_pgd_masks_find_the_harm_of_a_false_unimportance_claim(lm: LoadedModel, ids: torch.Tensor) -> None:
    """Exact components, but half of c_fc's claimed unimportant (CI 0) everywhere: all-on is still
    exact, yet the adversary may switch them off — it must find a large KL, and report the same
    worst case as metrics.pgd.pgd_faithfulness (it runs that adversary)."""
    dec = _exact_spd(OutputModel(lm.model, True), ["transformer.h.0.mlp.c_fc"])
    c = dec.comps[0]
    with torch.no_grad():
        c.b2[: c.b2.numel() // 2] = -5.0  # type: ignore[index]
    ids = ids[:6]  # a few windows: the adversary runs 6 forwards and 4 backwards per chunk
    ci = evaluate_spd(dec, ids, "transformer.h.0.mlp")
    m = pgd_splice(dec, ids, ci["ce_clean"], ci["ce_zero_ablated"], steps=4, batch_seqs=len(ids))
    assert m["kl_spliced_pgd"] > 10 * max(ci["kl_spliced"], 1e-3) or m["kl_spliced_pgd"] > 0.05
    assert m["ce_loss_recovered_pgd"] < ci["ce_loss_recovered"]
    assert m["pgd_faithfulness"] == pytest.approx(pgd_faithfulness(dec, ids, "logits", 4).total, rel=1e-6)
