from __future__ import annotations

from pathlib import Path

import pytest

from mechscope.config import ConfigError
from mechscope.real.activation_cache import ActivationCache
from mechscope.real.command import cache_activations, decompose_model


def test_user_mistakes_are_one_line_config_errors(gpt2_dir: Path, corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        cache_activations(model=str(tmp_path / "nope"), dataset=corpus, sites="x", out=tmp_path / "c")
    with pytest.raises(ConfigError, match=r"'transformer\.h\.9' matches no module"):
        cache_activations(model=str(gpt2_dir), dataset=corpus, sites="transformer.h.9", out=tmp_path / "c",
                          tokens=64, seq_len=8)  # fmt: skip
    with pytest.raises(ConfigError, match=r"\d+ were requested"):
        cache_activations(model=str(gpt2_dir), dataset=corpus, sites="transformer.h.1", out=tmp_path / "c",
                          tokens=10**8, seq_len=8)  # fmt: skip
    with pytest.raises(ConfigError, match="matches no module"):
        decompose_model(model=str(gpt2_dir), dataset=corpus, modules="nope.*", out=tmp_path / "s", tokens=64, seq_len=8)


def test_cache_command_writes_a_readable_cache(gpt2_dir: Path, corpus: Path, tmp_path: Path) -> None:
    cache_activations(model=str(gpt2_dir), dataset=corpus, sites="transformer.h.?", out=tmp_path / "c",
                      tokens=8 * 16, seq_len=8, shard_seqs=4)  # fmt: skip
    cache = ActivationCache(tmp_path / "c")
    assert list(cache.sites) == ["transformer.h.0", "transformer.h.1"] and cache.n_rows == 128
