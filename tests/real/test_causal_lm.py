"""The local causal LM: trained on the shipped corpus, cached, loaded through `from_pretrained`."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from mechscope.config import ConfigError
from mechscope.real import causal_lm
from mechscope.real.causal_lm import (
    CORPUS,
    PRESETS,
    corpus_windows,
    encode_text,
    lm_path,
    local_lm,
    split_blocks,
)
from mechscope.real.models import load_model
from mechscope.real.splice import next_token_ce


@pytest.fixture(scope="module")
def lm_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "lm-cache"  # shared by the LM test modules: trained once


@pytest.fixture
def cache_env(lm_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MECHSCOPE_CACHE", str(lm_cache))
    return lm_cache


def test_tiny_lm_learns_the_corpus_and_loads_like_a_users_gpt2(cache_env: Path) -> None:
    lm = local_lm(CORPUS, "tiny", seed=0)
    assert lm.path.parent == cache_env / "lms" and lm.path == lm_path(CORPUS, PRESETS["tiny"], 0)
    loaded = load_model(lm.path)  # the path a user's GPT-2 takes: AutoModelForCausalLM + AutoTokenizer
    assert loaded.has_lm_head and type(loaded.model).__name__ == "GPT2LMHeadModel"
    vocab = len(loaded.tokenizer)
    # learned something: well below the uniform next-token loss ln(V) on text it never trained on
    assert lm.info["held_out_ce"] < 0.8 * math.log(vocab)
    held = corpus_windows(loaded.tokenizer, CORPUS, 32, split="held_out", block=256)
    with torch.no_grad():
        ce = float(next_token_ce(loaded.model(held[:64]).logits, held[:64]))
    assert abs(ce - lm.info["held_out_ce"]) < 0.3  # the stored number is the loaded model's


def test_cached_lm_is_reused_not_retrained(cache_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = local_lm(CORPUS, "tiny", seed=0)

    def no_training(*_a: object, **_k: object) -> None:
        raise AssertionError("trained again although the model is cached")

    monkeypatch.setattr(causal_lm, "train_lm", no_training)
    again = local_lm(CORPUS, "tiny", seed=0)
    assert again.path == first.path and again.info["sha256"] == first.info["sha256"]


def test_same_seed_same_model_and_damage_is_rebuilt(cache_env: Path) -> None:
    lm = local_lm(CORPUS, "tiny", seed=0)
    sha = lm.info["sha256"]
    weights = lm.path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64])  # truncated: a damaged entry
    rebuilt = local_lm(CORPUS, "tiny", seed=0)
    assert rebuilt.info["sha256"] == sha  # retrained deterministically to the same bytes


def test_tokenizer_round_trips_text_with_newlines(cache_env: Path) -> None:
    tok = load_model(local_lm(CORPUS, "tiny", seed=0).path).tokenizer
    text = "Permission is hereby granted, free of charge,\nto any person obtaining a copy — ünïcode.\n\n"
    ids = encode_text(tok, text)
    assert tok.decode(ids.tolist()) == text


def test_held_out_blocks_are_disjoint_from_training() -> None:
    ids = torch.arange(1000)
    train, held = split_blocks(ids, 10, 5)
    assert set(train.tolist()).isdisjoint(held.tolist()) and train.numel() + held.numel() == 1000
    assert held[:10].tolist() == list(range(40, 50))


def test_bad_corpus_and_preset_are_one_line_errors(tmp_path: Path, cache_env: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(ValueError, match="is empty") as err:
        local_lm(empty, "tiny")
    assert "\n" not in str(err.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        local_lm(tmp_path / "nope.txt", "tiny")
    with pytest.raises(ConfigError, match="unknown LM preset 'huge'; allowed: demo, tiny"):
        local_lm(CORPUS, "huge")
    short = tmp_path / "short.txt"
    short.write_text("MIT License\n")
    with pytest.raises(ValueError, match="need ≥"):
        local_lm(short, "tiny")
