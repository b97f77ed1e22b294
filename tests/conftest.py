"""Test tiers: fast by default; `--runslow` adds the ground-truth recovery runs; `gpu` tests run where
CUDA is available and skip elsewhere."""

import os
from collections.abc import Callable, Iterator

import pytest
import torch

SHARED_CACHE = os.environ.get("MECHSCOPE_CACHE")
"""The cache the session started with, where the real zoo targets live."""


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="run slow recovery tests")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not torch.cuda.is_available():
        skip_gpu = pytest.mark.skip(reason="gpu: no CUDA device here")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip_gpu)
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture(autouse=True)
def _deterministic_threads() -> None:
    torch.set_num_threads(int(os.environ.get("MECHSCOPE_TEST_THREADS", "2")))


@pytest.fixture(scope="module")
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A throw-away target cache for one test module (small targets built or trained once there)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MECHSCOPE_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture
def shared_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real zoo targets live in the shared cache, even after `private_cache` swapped it."""
    if SHARED_CACHE is None:
        monkeypatch.delenv("MECHSCOPE_CACHE", raising=False)
    else:
        monkeypatch.setenv("MECHSCOPE_CACHE", SHARED_CACHE)


def _null_paths(value: object, path: str = "") -> list[str]:
    if value is None:
        return [path]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _null_paths(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _null_paths(v, f"{path}[{i}]")]
    return []


@pytest.fixture
def null_paths() -> Callable[[object], list[str]]:
    """Where a resolved config still says `null` (dotted paths): a run must record what ran."""
    return _null_paths
