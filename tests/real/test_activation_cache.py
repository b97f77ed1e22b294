from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mechscope.hooks import capture
from mechscope.real.activation_cache import ActivationCache, build_cache
from mechscope.real.models import LoadedModel, OutputModel, token_windows

SITES = ["transformer.h.0.mlp.c_fc", "transformer.h.1"]


@pytest.fixture(scope="module")
def ids(gpt2: LoadedModel, corpus: Path) -> torch.Tensor:
    return token_windows(gpt2.tokenizer, corpus, seq_len=8, n_tokens=8 * 40)


def _model(gpt2: LoadedModel) -> OutputModel:
    return OutputModel(gpt2.model, True)


class _Interrupt(Exception):
    pass


def test_cache_rows_match_a_direct_forward(gpt2: LoadedModel, ids: torch.Tensor, tmp_path: Path) -> None:
    model = _model(gpt2)
    build_cache(model, ids, ["transformer.h.*.mlp.c_fc"], tmp_path, shard_seqs=16, batch_seqs=8)
    cache = ActivationCache(tmp_path)
    assert list(cache.sites) == ["transformer.h.0.mlp.c_fc", "transformer.h.1.mlp.c_fc"]
    assert cache.n_rows == 40 * 8 and len(cache.maps) == 3
    with torch.no_grad(), capture(model, ["transformer.h.1.mlp.c_fc"]) as acts:
        model(ids)
    direct = acts["transformer.h.1.mlp.c_fc"].reshape(-1, 128)
    idx = torch.tensor([319, 0, 130, 5, 200])
    torch.testing.assert_close(cache.rows("transformer.h.1.mlp.c_fc", idx), direct[idx])
    with pytest.raises(KeyError, match="not in the cache"):
        cache.rows("transformer.h.0", idx)


def test_interrupted_build_resumes_without_duplicates(gpt2: LoadedModel, ids: torch.Tensor, tmp_path: Path) -> None:
    model = _model(gpt2)
    full = build_cache(model, ids, SITES, tmp_path / "full", shard_seqs=8)

    def stop_after_two(i: int) -> None:
        if i == 1:
            raise _Interrupt

    part = tmp_path / "part"
    with pytest.raises(_Interrupt):
        build_cache(model, ids, SITES, part, shard_seqs=8, on_shard=stop_after_two)
    (part / ".shard_00002.safetensors.tmp").write_bytes(b"half-written")  # a write cut short
    with pytest.raises(ValueError, match="incomplete"):
        ActivationCache(part)
    seen: list[int] = []
    build_cache(model, ids, SITES, part, shard_seqs=8, on_shard=seen.append)
    assert seen == [2, 3, 4]  # only the missing shards were computed
    a, b = ActivationCache(full), ActivationCache(part)
    assert a.n_rows == b.n_rows == 320
    assert sorted(p.name for p in part.iterdir()) == sorted(p.name for p in (tmp_path / "full").iterdir())
    for site in SITES:
        assert torch.equal(a.all(site), b.all(site))
    with pytest.raises(ValueError, match="another model"):
        build_cache(model, ids[:20], SITES, part, shard_seqs=8)


def test_shuffled_source_visits_every_row_once_per_epoch(gpt2: LoadedModel, ids: torch.Tensor, tmp_path: Path) -> None:
    build_cache(_model(gpt2), ids[:10], ["transformer.h.1"], tmp_path, shard_seqs=4, dtype="float16")
    cache = ActivationCache(tmp_path)
    every = cache.all("transformer.h.1")  # (80, 32)
    source = cache.source("transformer.h.1", torch.Generator().manual_seed(0))
    x, y = source(80)
    assert x is y and not torch.equal(x, every)
    key = lambda t: sorted(map(tuple, t.tolist()))  # noqa: E731
    assert key(x) == key(every)
    assert cache.disk_bytes() < 80 * 32 * 4  # float16 storage
