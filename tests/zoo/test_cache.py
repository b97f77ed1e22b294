"""The target cache: a second make_target loads, never retrains; keys follow config and seed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mechscope.zoo import resid_mlp, tms
from mechscope.zoo.cache import target_path
from mechscope.zoo.resid_mlp import ResidMLPConfig, ResidMLPTask
from mechscope.zoo.tms import TMSConfig, TMSTask


def _count_calls(monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> list[int]:
    """Wrap the real trainer so the test can count how often it runs."""
    real = getattr(module, name)
    calls: list[int] = []

    def counted(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def test_tms_second_call_hits_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path))
    calls = _count_calls(monkeypatch, tms, "train_tms")
    task = TMSTask(TMSConfig(steps=30, restarts=1), "tms-cache-test")
    a = task.make_target(0)
    b = task.make_target(0)
    assert len(calls) == 1
    assert torch.equal(a.W.weight, b.W.weight)  # type: ignore[union-attr,arg-type]
    info = json.loads((target_path(task.name, task.config, 0) / "info.json").read_text())
    assert {"n_represented", "feature_norms", "eval_loss", "attempts", "attempt"} <= set(info)
    task.make_target(1)  # another seed is another target
    TMSTask(TMSConfig(steps=31, restarts=1), "tms-cache-test").make_target(0)  # so is another config
    assert len(calls) == 3
    assert len(list((tmp_path / "targets").iterdir())) == 3


def test_resid_mlp_second_call_hits_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path))
    calls = _count_calls(monkeypatch, resid_mlp, "train_resid_mlp")
    cfg = ResidMLPConfig(n_features=10, d_embed=30, d_mlp=4, steps=10, batch_size=128)
    task = ResidMLPTask(cfg, "resid-cache-test")
    a = task.make_target(0)
    b = task.make_target(0)
    assert len(calls) == 1
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb)
    info = json.loads((target_path(task.name, cfg, 0) / "info.json").read_text())
    assert info["eval_loss"] > 0


@pytest.mark.parametrize("damage", ["truncate", "garbage", "delete-weights", "bad-info", "wrong-hash"])
def test_a_damaged_target_is_reported_removed_and_rebuilt_once(
    damage: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path))
    calls = _count_calls(monkeypatch, tms, "train_tms")
    task = TMSTask(TMSConfig(steps=20), "tms-damage-test")
    good = task.make_target(0).W.weight.detach().clone()  # type: ignore[union-attr,operator]
    entry = target_path(task.name, task.config, 0)
    weights, info = entry / "target.safetensors", entry / "info.json"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:40])
    elif damage == "garbage":
        weights.write_bytes(b"\x00" * 7)
    elif damage == "delete-weights":
        weights.unlink()
    elif damage == "bad-info":
        info.write_text("{not json")
    else:
        body = json.loads(info.read_text())
        info.write_text(json.dumps({**body, "sha256": "0" * 64}))
    with caplog.at_level("WARNING", logger="mechscope"):
        rebuilt = task.make_target(0).W.weight.detach()  # type: ignore[union-attr,operator]
    assert len(calls) == 2
    assert str(entry) in caplog.text and "damaged" in caplog.text
    assert torch.equal(rebuilt, good)  # training is deterministic: the repaired entry is the original
    task.make_target(0)  # repaired: the next run loads it
    assert len(calls) == 2
    assert [p.name for p in (tmp_path / "targets").iterdir()] == [entry.name]  # no trash left behind


def test_cached_files_follow_the_umask(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path))
    old = os.umask(0o022)
    try:
        task = TMSTask(TMSConfig(steps=5), "tms-umask-test")
        task.make_target(0)
    finally:
        os.umask(old)
    entry = target_path(task.name, task.config, 0)
    assert (entry / "target.safetensors").stat().st_mode & 0o777 == 0o644
    assert entry.stat().st_mode & 0o777 == 0o755
