"""`latent_f1` by hand, and mcc / uniqueness / latent_* against SAELens's own functions."""

from __future__ import annotations

import math

import pytest
import torch

from mechscope.decompose.dictionary import SparseCoder
from mechscope.decompose.dictionary_decomposition import DictionaryDecomposition, SiteCoder
from mechscope.decompose.oracle import build_oracle
from mechscope.metrics import eval_sets, score
from mechscope.metrics.latent_f1 import latent_scores, mean_scores
from mechscope.zoo.tms import TMSConfig, TMSModel, TMSTask

Case = tuple[TMSTask, TMSModel]


def test_latent_scores_by_hand() -> None:
    sim = torch.tensor([[0.9, 0.1, 0.2, 0.0], [0.3, 0.8, 0.7, 0.0]])  # latents 0 → truth 0; 1, 2 → 1; 3 → 0
    t, f = True, False
    active = torch.tensor([[t, f], [t, t], [f, t], [f, f]])
    fires = torch.tensor([[t, f, f, f], [f, t, t, f], [t, t, f, f], [f, f, t, f]])
    s = latent_scores(sim, active, fires)
    # latent 0 (truth 0 on 0,1): fires 0,2 → tp 1 fp 1 fn 1: p = r = F1 = 1/2
    # latent 1 (truth 1 on 1,2): fires 1,2 → p = r = F1 = 1
    # latent 2 (truth 1): fires 1,3 → tp 1 fp 1 fn 1: 1/2;   latent 3: dead → 0
    assert torch.allclose(s.f1, torch.tensor([0.5, 1.0, 0.5, 0.0], dtype=torch.float64))
    assert torch.allclose(s.precision, s.recall)
    m = mean_scores([s])
    assert math.isclose(m["latent_f1"], 0.5) and math.isclose(m["latent_recall"], 0.5)
    # F1 is averaged per latent, not the harmonic mean of the averages:
    s2 = latent_scores(torch.tensor([[1.0]]), torch.tensor([[t], [t], [f]]), torch.tensor([[t], [f], [f]]))
    assert (float(s2.precision[0]), float(s2.recall[0])) == (1.0, 0.5)
    assert math.isclose(float(s2.f1[0]), 2 / 3)


def test_oracle_latents_are_perfect(tms3: Case) -> None:
    task, model = tms3
    m = score(build_oracle(model, task.ground_truth(model)), task).metrics
    for key in ("latent_f1", "latent_precision", "latent_recall"):
        assert math.isclose(m[key], 1.0), key
        assert math.isclose(m["sites"]["W"][key], 1.0) and math.isclose(m["spaces"]["activation"][key], 1.0)


def random_sae_case() -> tuple[TMSTask, DictionaryDecomposition, torch.Tensor]:
    """A 20-feature, 8-dim TMS with unit random columns and a random ReLU SAE of 30 latents."""
    g = torch.Generator().manual_seed(0)
    task = TMSTask(TMSConfig(n_features=20, n_hidden=8, feature_prob=0.1), name="tms-rand")
    model = task.build()
    W = torch.randn(8, 20, generator=g)
    with torch.no_grad():
        model.W.weight.copy_(W / W.norm(dim=0))
    coder = SparseCoder(8, 8, 30, "relu", generator=g)
    with torch.no_grad():
        coder.b_enc.fill_(-0.3)
    return (
        task,
        DictionaryDecomposition(model, {"W": SiteCoder(coder, ("W", "output"))}),
        model.W.weight.detach().T,
    )


def test_random_sae_is_partly_right() -> None:
    task, dec, _ = random_sae_case()
    m = score(dec, task, ablation=False).metrics
    assert 0.0 < m["latent_f1"] < 0.5 and m["latent_f1"] == m["sites"]["W"]["latent_f1"]


def test_matches_saelens_definitions() -> None:
    evals = pytest.importorskip("sae_lens.synthetic.evals")
    task, dec, gt = random_sae_case()
    m = score(dec, task, ablation=False).metrics
    x = eval_sets(task).data
    W_dec = dec.directions("W", "activation")
    assert W_dec is not None
    assert math.isclose(m["mcc"], evals.mean_correlation_coefficient(W_dec, gt), abs_tol=1e-5)
    assert math.isclose(m["uniqueness"], evals.feature_uniqueness(W_dec, gt), abs_tol=1e-9)
    with torch.no_grad():
        latents = dec.activity(x)["W"]
    c = evals.compute_classification_metrics(latents, x, W_dec, gt)
    assert math.isclose(m["latent_f1"], c.f1_score, abs_tol=1e-5)
    assert math.isclose(m["latent_precision"], c.precision, abs_tol=1e-5)
    assert math.isclose(m["latent_recall"], c.recall, abs_tol=1e-5)
