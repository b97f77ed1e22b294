"""A private target cache per test session, so bench tests never touch the user's cache."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def target_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mechscope-cache")


@pytest.fixture(autouse=True)
def _private_cache(monkeypatch: pytest.MonkeyPatch, target_cache: Path) -> None:
    monkeypatch.setenv("MECHSCOPE_CACHE", str(target_cache))
