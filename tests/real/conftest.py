"""Shared real models for the tests: MiniLM from its pip package and a tiny random GPT-2 (no network)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mechscope.real.models import LoadedModel, load_model, minilm_path, tiny_gpt2

CORPUS = Path(__file__).parents[1] / "data" / "licenses_corpus.txt"


@pytest.fixture(scope="session")
def corpus() -> Path:
    return CORPUS


@pytest.fixture(scope="session")
def gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"), seed=0, n_layer=2, d=32)


@pytest.fixture(scope="session")
def gpt2(gpt2_dir: Path) -> LoadedModel:
    return load_model(gpt2_dir)


@pytest.fixture(scope="session")
def minilm() -> LoadedModel:
    return load_model(minilm_path())
