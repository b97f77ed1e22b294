"""Transcoders: read an MLP's input, replace its output; n/a where the target has no MLP."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mechscope.config import ConfigError
from mechscope.decompose import FitContext, get_method, load_decomposition
from mechscope.decompose.dictionary_decomposition import DictionaryDecomposition
from mechscope.decompose.saelens_export import export_saelens
from mechscope.decompose.transcoder import TranscoderJumpReLUConfig, TranscoderTopKConfig, fit
from mechscope.zoo import get_task
from mechscope.zoo.resid_mlp import ResidMLPConfig, ResidMLPModel, ResidMLPTask

FAST = {"steps": 60, "batch_size": 128, "buffer_size": 1024}


def small_resid() -> tuple[ResidMLPTask, ResidMLPModel]:
    """A small untrained residual MLP (the transcoder mechanics need no trained target)."""
    cfg = ResidMLPConfig(n_features=12, d_embed=32, d_mlp=6, n_layers=2, feature_prob=0.1)
    task = ResidMLPTask(cfg, "resid-small")
    return task, task.build(0).eval()


def fitted(cfg: TranscoderTopKConfig | TranscoderJumpReLUConfig) -> tuple[ResidMLPTask, DictionaryDecomposition]:
    task, model = small_resid()
    return task, fit(model, task, cfg, FitContext(seed=0))


def test_registered_and_na_without_an_mlp() -> None:
    for name in ("transcoder-topk", "transcoder-jumprelu"):
        spec = get_method(name)
        assert spec.applies_to(get_task("tms-40-10")) is not None  # TMS has no MLP: n/a, not zero
        assert spec.applies_to(get_task("resid-mlp-1l")) is None


def test_one_transcoder_per_mlp_reads_input_writes_output() -> None:
    task, dec = fitted(TranscoderTopKConfig(**FAST))
    assert dec.sites == ["layers.0.mlp_out", "layers.1.mlp_out"]
    C = dec.n_components("layers.0.mlp_out")
    assert C == 96  # blind: 8 × the width of the MLP input (rank 12: 12 features embedded in 32 dims)
    assert dec.directions("layers.0.mlp_out", "activation").shape == (C, 32)  # type: ignore[union-attr]
    assert dec.read_directions("layers.0.mlp_out").shape == (C, 32)
    assert dec.coders["layers.1.mlp_out"].read == ("layers.1.mlp_in", "input")
    x = task.sample(40, torch.Generator().manual_seed(3))
    # sized per site: layer 1 reads the stream after layer 0's MLP wrote into it (rank 12 + 6 = 18)
    assert dec.activity(x)["layers.1.mlp_out"].shape == (40, 8 * 18)
    # Every latent off: each MLP's output is exactly its transcoder's decoder bias.
    model = dec.target
    assert isinstance(model, ResidMLPModel)
    off = dec.forward_with(x, {s: torch.zeros(dec.n_components(s)) for s in dec.sites})
    with torch.no_grad():
        r = model.embed(x)
        for layer, site in zip(model.layers, dec.sites, strict=True):
            r = r + dec.coder(site).b_dec
            assert layer is not None
        want = model.unembed(r)
    assert torch.allclose(off, want, atol=1e-5)


def test_save_load_and_site_choice(tmp_path: Path) -> None:
    task, dec = fitted(TranscoderJumpReLUConfig(site="layers.1.mlp_out", **FAST))
    assert dec.sites == ["layers.1.mlp_out"]
    dec.save(tmp_path)
    back = load_decomposition(tmp_path, dec.target)
    x = task.sample(16, torch.Generator().manual_seed(4))
    assert torch.equal(back.forward_with(x, back.all_on(16)), dec.forward_with(x, dec.all_on(16)))
    with pytest.raises(ConfigError, match=r"allowed: layers\.0\.mlp_out, layers\.1\.mlp_out"):
        fit(dec.target, task, TranscoderTopKConfig(site="layers.2.mlp_out", **FAST), FitContext())


def test_export_refuses_what_saelens_cannot_load(tmp_path: Path) -> None:
    _, dec = fitted(TranscoderTopKConfig(site="layers.0.mlp_out", **FAST))
    with pytest.raises(ValueError, match="SAELens has no topk transcoder"):
        export_saelens(dec, "layers.0.mlp_out", tmp_path)


@pytest.mark.slow  # importing SAELens takes tens of seconds
def test_export_jumprelu_transcoder_loads_in_saelens(tmp_path: Path) -> None:
    sae_lens = pytest.importorskip("sae_lens")
    _, dec = fitted(TranscoderJumpReLUConfig(site="layers.0.mlp_out", **FAST))
    out = export_saelens(dec, "layers.0.mlp_out", tmp_path / "tc")
    tc = sae_lens.SAE.load_from_disk(out)
    a = torch.randn(20, 32)
    coder = dec.coder("layers.0.mlp_out")
    with torch.no_grad():
        assert torch.allclose(tc.decode(tc.encode(a)), coder(a), atol=1e-5)
