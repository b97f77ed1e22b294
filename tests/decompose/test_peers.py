"""Peer rows: SAELens's own trainer behind our registry, its SAEs converted and checked equal."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mechscope.decompose import METHODS, FitContext, get_method
from mechscope.decompose.import_dictionary import (
    DictionaryFormatError,
    quiet_import,
    require_equal,
    saelens_coder,
)
from mechscope.decompose.registry import fit_blind
from mechscope.decompose.saelens_peers import PEER_OF, PEERS, _training_sae
from mechscope.zoo.resid_mlp import ResidMLPConfig, ResidMLPTask

needs_saelens = pytest.mark.skipif(
    importlib.util.find_spec("sae_lens") is None, reason="sae-lens not installed"
)


@needs_saelens
def test_peers_registered_beside_their_own_variant() -> None:
    for name in PEERS:
        spec = METHODS[name]
        assert spec.peer and spec.family == "activation"
        own = get_method(PEER_OF[name])
        assert not own.peer and own.family == spec.family
    assert not any(s.peer for n, s in METHODS.items() if n not in PEERS and not n.startswith("sparsify-"))


@needs_saelens
@pytest.mark.parametrize("variant", ["standard", "topk", "batchtopk", "jumprelu", "matryoshka"])
def test_saelens_inference_files_convert_exactly(variant: str, tmp_path: Path) -> None:
    quiet_import("sae_lens")
    torch.manual_seed(0)
    sae = _training_sae(variant, 12, 48, 3)  # type: ignore[arg-type]
    with torch.no_grad():  # a trained-looking SAE: biases, thresholds and decoder norms away from init
        for p in sae.parameters():
            p.add_(0.05 * torch.randn_like(p))
        if hasattr(sae, "threshold"):
            sae.threshold.abs_()
        if variant in ("batchtopk", "matryoshka"):
            sae.topk_threshold.fill_(0.05)
    sae.save_inference_model(tmp_path)
    import sae_lens

    inference = sae_lens.SAE.load_from_disk(str(tmp_path))
    cfg, tensors = (
        json.loads((tmp_path / "cfg.json").read_text()),
        load_file(str(tmp_path / "sae_weights.safetensors")),
    )
    coder = saelens_coder(cfg, tensors)
    x = torch.randn(256, 12)
    require_equal(coder, inference.encode, inference.decode, x, variant)  # raises if not within 1e-5
    assert float((coder.encode(x) > 0).float().mean()) > 0  # the check saw firing latents
    tensors["b_enc"] = tensors["b_enc"] + 0.01
    with pytest.raises(DictionaryFormatError, match="differs from the library's"):
        require_equal(saelens_coder(cfg, tensors), inference.encode, inference.decode, x, variant)


@needs_saelens
def test_peer_fit_uses_our_blind_sizes_and_budget() -> None:
    task = ResidMLPTask(ResidMLPConfig(n_features=12, d_embed=32, d_mlp=6, n_layers=1, feature_prob=0.1), "r")
    target = task.build(0).eval()
    small = {"steps": 8, "batch_size": 64, "buffer_size": 512}
    ours = fit_blind(
        get_method("sae-topk"), target, task, get_method("sae-topk").Cfg(**small), FitContext(seed=1)
    )
    peer_spec = get_method("saelens-topk")
    peer = fit_blind(peer_spec, target, task, peer_spec.Cfg(preset="short", **small), FitContext(seed=1))
    assert peer.n_components("embed") == ours.n_components("embed") == 8 * 12
    assert peer.coder("embed").k == ours.coder("embed").k


@pytest.mark.skipif(importlib.util.find_spec("sparsify") is None, reason="eai-sparsify not installed")
def test_sparsify_peer_trains_with_our_sizes() -> None:
    task = ResidMLPTask(ResidMLPConfig(n_features=12, d_embed=32, d_mlp=6, n_layers=1, feature_prob=0.1), "r")
    target = task.build(0).eval()
    spec = get_method("sparsify-topk")
    assert spec.peer and spec.family == "activation"
    small = {"steps": 8, "batch_size": 64, "buffer_size": 512}
    ours = fit_blind(get_method("sae-topk"), target, task, get_method("sae-topk").Cfg(**small), FitContext(seed=1))
    peer = fit_blind(spec, target, task, spec.Cfg(**small), FitContext(seed=1))  # its checkpoint, checked on load
    assert peer.n_components("embed") == ours.n_components("embed") and peer.coder("embed").k == ours.coder("embed").k
