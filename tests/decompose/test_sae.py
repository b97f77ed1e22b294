"""SAEs behind the Decomposition interface: fit, directions, activity, ablation, save/load, export."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from mechscope.config import ConfigError
from mechscope.decompose import FitContext, get_method, load_decomposition
from mechscope.decompose.dictionary_decomposition import DictionaryDecomposition
from mechscope.decompose.sae import SAEJumpReLUConfig, SAEReLUConfig, SAETopKConfig, fit, train_sae
from mechscope.decompose.saelens_export import export_saelens
from mechscope.hooks import SiteError
from mechscope.zoo import get_task
from mechscope.zoo.tms import TMSModel, TMSTask

FAST = {"steps": 150, "batch_size": 256, "buffer_size": 2048}


def pentagon() -> tuple[TMSTask, TMSModel]:
    """A clean TMS 5-2 target built by hand (no training): W's columns a regular pentagon."""
    task = get_task("tms-5-2")
    assert isinstance(task, TMSTask)
    model = task.build()
    angles = torch.arange(5) * 2 * math.pi / 5
    with torch.no_grad():
        model.W.weight.copy_(1.1 * torch.stack([angles.cos(), angles.sin()]))  # (2, 5)
        model.b_final.fill_(-0.2)
    return task, model.eval()


def fitted(cfg: SAETopKConfig | SAEReLUConfig | SAEJumpReLUConfig) -> DictionaryDecomposition:
    task, model = pentagon()
    return fit(model, task, cfg, FitContext(seed=0))


def test_all_variants_registered_with_na_rules() -> None:
    names = ["sae-relu", "sae-topk", "sae-batchtopk", "sae-jumprelu"]
    for name in names:
        spec = get_method(name)
        assert spec.family == "activation"
        assert spec.applies_to(get_task("tms-5-2")) is None
        assert spec.applies_to(get_task("flipflop-3bit")) is not None  # dynamics: n/a


def test_decomposition_interface_on_tms() -> None:
    task, model = pentagon()
    dec = fitted(SAETopKConfig(**FAST))
    assert dec.sites == ["W"]
    C = dec.n_components("W")
    assert C == 16 and dec.coder("W").k == 1  # blind: 8 × width 2; k ≤ width / 2 = 1
    assert dec.directions("W", "activation").shape == (C, 2)  # type: ignore[union-attr]
    assert dec.directions("W", "parameter") is None
    x = task.sample(64, torch.Generator().manual_seed(1))
    acts = dec.activity(x)["W"]
    assert acts.shape == (64, C) and (acts >= 0).all() and ((acts > 0).sum(-1) <= 1).all()
    assert dec.reconstruct(x)["W"].shape == (64, 2)
    full = dec.forward_with(x, dec.all_on(64))
    none = dec.forward_with(x, {"W": torch.zeros(C)})
    with torch.no_grad():
        y = model(x)
        y_none = model.W_T(dec.coder("W").b_dec.expand(64, 2)).add(model.b_final).relu()
    assert torch.allclose(none, y_none, atol=1e-6)  # every latent off: only the decoder bias remains
    assert float((full - y).pow(2).mean()) < float((none - y).pow(2).mean())


def test_recovers_the_pentagon_quickly() -> None:
    task, model = pentagon()
    dec = fitted(SAETopKConfig(steps=400, batch_size=256, buffer_size=4096, lr=5e-3))
    T = task.ground_truth(model).in_space("activation")
    D = torch.nn.functional.normalize(dec.directions("W", "activation"), dim=1)  # type: ignore[arg-type]
    cos = torch.stack([(D @ m.direction / m.direction.norm()).abs().max() for m in T])
    assert float(cos.mean()) > 0.95


def test_save_load_round_trip(tmp_path: Path) -> None:
    for cfg in (SAETopKConfig(**FAST), SAEJumpReLUConfig(**FAST), SAEReLUConfig(**FAST)):
        dec = fitted(cfg)
        dec.save(tmp_path / cfg.activation)
        back = load_decomposition(tmp_path / cfg.activation, dec.target)
        x = torch.rand(32, 5)
        assert torch.equal(back.activity(x)["W"], dec.activity(x)["W"])
        assert torch.equal(back.forward_with(x, back.all_on(32)), dec.forward_with(x, dec.all_on(32)))


def test_clear_errors() -> None:
    task, model = pentagon()
    with pytest.raises(SiteError, match="did you mean W"):
        fit(model, task, SAETopKConfig(site="Ww", **FAST), FitContext())
    with pytest.raises(ConfigError, match="k=17 is larger than the dictionary"):
        fit(model, task, SAETopKConfig(k=17, **FAST), FitContext())
    dec = fitted(SAETopKConfig(**FAST))
    with pytest.raises(ValueError, match="dictionary expects"):
        dec.coder("W").encode(torch.randn(3, 4))
    with pytest.raises(ValueError, match="mask for site 'W' has 3 columns"):
        dec.forward_with(torch.rand(4, 5), {"W": torch.ones(3)})


def test_export_writes_saelens_layout(tmp_path: Path) -> None:
    dec = fitted(SAETopKConfig(**FAST))
    out = export_saelens(dec, "W", tmp_path / "sae")
    cfg = json.loads((out / "cfg.json").read_text())
    assert cfg["architecture"] == "topk" and cfg["d_in"] == 2 and cfg["d_sae"] == 16 and cfg["k"] == 1
    assert (out / "sae_weights.safetensors").exists()


@pytest.mark.slow  # importing SAELens takes tens of seconds
@pytest.mark.parametrize("cfg", [SAETopKConfig(**FAST), SAEJumpReLUConfig(**FAST), SAEReLUConfig(**FAST)])
def test_export_loads_in_saelens(tmp_path: Path, cfg: SAETopKConfig) -> None:
    sae_lens = pytest.importorskip("sae_lens")
    dec = fitted(cfg)
    sae = sae_lens.SAE.load_from_disk(export_saelens(dec, "W", tmp_path / "sae"))
    h = torch.randn(50, 2)
    with torch.no_grad():
        assert torch.allclose(sae.encode(h), dec.coder("W").encode(h), atol=1e-5)
        assert torch.allclose(sae.decode(sae.encode(h)), dec.coder("W")(h), atol=1e-5)


def test_train_sae_on_any_model_with_a_loader() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    loader = [torch.randn(4, 10, 6) for _ in range(8)]  # [batch, seq, d]: tokens become rows
    dec = train_sae(model, loader, "0", SAETopKConfig(n_latents=16, k=2, steps=20, batch_size=32, buffer_size=128))
    assert dec.activity(loader[0])["0"].shape == (40, 16)
    assert dec.forward_with(loader[0], {"0": torch.ones(4, 16)}).shape == (4, 10, 3)
    with pytest.raises(ConfigError, match="needs n_latents"):
        train_sae(model, loader, "0", SAETopKConfig())


@pytest.mark.slow
def test_sae_topk_recovers_tms_40_10() -> None:
    from mechscope.metrics.score import score

    task = get_task("tms-40-10")
    target = task.make_target(0)
    spec = get_method("sae-topk")
    dec = spec.fit(target, task, spec.Cfg(), FitContext(seed=0))
    metrics = score(dec, task, ablation=False).metrics
    assert metrics["recovery_space"] == "activation"
    assert metrics["mmcs"] >= 0.95, metrics
