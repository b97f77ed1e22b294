"""Must-show: an SAE on a MiniLM layer, trained from the activation cache, reaches FVE ≥ 0.8 at L0 ≤ 64
on held-out text."""

from __future__ import annotations

from pathlib import Path

import pytest

from mechscope.decompose.sae import SAETopKConfig
from mechscope.real.activation_cache import ActivationCache, build_cache
from mechscope.real.models import LoadedModel, OutputModel, token_windows
from mechscope.real.train import sae_eval, train_sae_cached

SITE = "encoder.layer.1.output"


@pytest.mark.slow
def test_minilm_sae_explains_80_percent_of_variance(minilm: LoadedModel, corpus: Path, tmp_path: Path) -> None:
    ids = token_windows(minilm.tokenizer, corpus, seq_len=32, n_tokens=34_816)  # 1088 sequences
    model = OutputModel(minilm.model, False)
    build_cache(model, ids[:-64], [SITE], tmp_path / "train", shard_seqs=64)
    build_cache(model, ids[-64:], [SITE], tmp_path / "held", shard_seqs=64)
    cfg = SAETopKConfig(n_latents=512, k=64, steps=600, batch_size=512, lr=4e-3)
    dec = train_sae_cached(model, ActivationCache(tmp_path / "train"), SITE, cfg, seed=0)
    held = sae_eval(dec.coder(SITE), ActivationCache(tmp_path / "held").all(SITE))
    assert held["l0"] <= 64
    assert held["fve"] >= 0.8, held
