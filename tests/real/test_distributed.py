"""2-process data-parallel training (torchrun, gloo on localhost) equals a 1-process run — through
the zoo's own trainers (`dictionary.train_coder`, `spd.fit`), launched as `-m mechscope.cli`.

Slow tier: each torchrun launch starts two fresh Python processes (~1 min on a shared CPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mechscope.config import ConfigError
from mechscope.decompose.parallel import Placement
from mechscope.decompose.sae import SAETopKConfig
from mechscope.decompose.spd import SPDConfig
from mechscope.real.activation_cache import ActivationCache, build_cache
from mechscope.real.models import LoadedModel, OutputModel, token_windows
from mechscope.real.spd_model import TokenTask, fit_spd
from mechscope.real.train import train_cached_coder

SITE = "transformer.h.1"


def _torchrun(args: list[str], tmp: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TORCHELASTIC_ERROR_FILE": str(tmp / "err.json")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "mechscope.cli", *args]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
def test_topk_sae_two_processes_match_one(gpt2: LoadedModel, corpus: Path, tmp_path: Path) -> None:
    ids = token_windows(gpt2.tokenizer, corpus, seq_len=8, n_tokens=8 * 64)
    build_cache(OutputModel(gpt2.model, True), ids, [SITE], tmp_path / "cache", shard_seqs=16)
    cfg = SAETopKConfig(n_latents=64, k=4, steps=40, batch_size=64, lr=3e-3, dead_after_steps=5)
    one = train_cached_coder(ActivationCache(tmp_path / "cache"), SITE, cfg, seed=0)
    _torchrun(["train-sae", "--cache", str(tmp_path / "cache"), "--site", SITE, "--out", str(tmp_path / "sae"),
               "--n-latents", "64", "--k", "4", "--steps", "40", "--batch-size", "64", "--lr", "3e-3", "--dead-after-steps", "5"], tmp_path)  # fmt: skip
    two = load_file(str(tmp_path / "sae" / "sae.safetensors"))
    assert set(two) == set(one.state_dict())
    for name, t in one.state_dict().items():
        torch.testing.assert_close(two[name], t, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.slow
def test_spd_two_processes_match_one(gpt2: LoadedModel, gpt2_dir: Path, corpus: Path, tmp_path: Path) -> None:
    tokens, seq = 8 * 24, 8
    ids = token_windows(gpt2.tokenizer, corpus, seq_len=seq, n_tokens=tokens)
    held = ids.shape[0] // 8
    cfg = SPDConfig(modules=["transformer.h.0.mlp.c_fc", "transformer.h.1.attn.c_proj"], steps=3, batch_size=4,
                    C=8, faithfulness_warmup_steps=5, importance_coeff=1e-4)  # fmt: skip
    one = fit_spd(OutputModel(gpt2.model, True), TokenTask(ids[:-held], logits=True), cfg, seed=0)
    _torchrun(["decompose-model", "--model", str(gpt2_dir), "--dataset", str(corpus), "--out", str(tmp_path / "spd"),
               "--modules", "transformer.h.0.mlp.c_fc,transformer.h.1.attn.c_proj", "--tokens", str(tokens),
               "--seq-len", str(seq), "--steps", "3", "--batch-size", "4", "--C", "8",
               "--faithfulness-warmup-steps", "5"], tmp_path)  # fmt: skip
    two = load_file(str(tmp_path / "spd" / "decomposition" / "components.safetensors"))
    mine, _ = one.state()
    assert set(two) == set(mine)
    for name, t in mine.items():
        torch.testing.assert_close(two[name], t, rtol=1e-4, atol=1e-5, msg=name)


def test_uneven_batch_is_a_clear_error(gpt2: LoadedModel, corpus: Path) -> None:
    ids = token_windows(gpt2.tokenizer, corpus, seq_len=8, n_tokens=64)
    cfg = SPDConfig(modules=["transformer.h.0.mlp.c_fc"], steps=1, batch_size=4, faithfulness_warmup_steps=0)
    with pytest.raises(ConfigError, match=r"batch_size=4 must be divisible by the number of processes \(3\)"):
        fit_spd(OutputModel(gpt2.model, True), TokenTask(ids, logits=True), cfg, placement=Placement(0, 3))
