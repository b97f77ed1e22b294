"""`train-lm` / `lm-decompose` at scale: torchrun data parallelism (gloo on CPU) trains what one
process trains; a device that is not there is a one-line error.

Slow tier: each torchrun launch starts two fresh Python processes (~1 min on a shared CPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from mechscope.real.causal_lm import PRESETS, lm_path, local_lm
from mechscope.real.lm_command import app

runner = CliRunner()


def _torchrun(args: list[str], tmp: Path, cache: Path) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "MECHSCOPE_CACHE": str(cache),
           "TORCHELASTIC_ERROR_FILE": str(tmp / "err.json")}  # fmt: skip
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "mechscope.cli", *args]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b)
    for name, t in a.items():
        torch.testing.assert_close(b[name], t, rtol=1e-3, atol=1e-4, msg=name)


@pytest.mark.slow
def test_train_lm_two_processes_match_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A few steps: at the tiny preset's lr 1e-2, Adam turns float-order noise in near-zero gradients
    into visible weight differences after 60 steps (measured: ~3 % on a bias), so the equality of
    the two runs is checked where it is exact, early."""
    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path / "one"))
    cfg = PRESETS["tiny"].model_copy(update={"steps": 4})
    one = local_lm(cfg=cfg)
    out = _torchrun(["train-lm", "--preset", "tiny", "--steps", "4"], tmp_path, tmp_path / "two")
    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path / "two"))
    two_dir = lm_path(one.info["corpus"], cfg, 0)
    assert str(two_dir) in out and out.count("held_out_ce") == 1  # rank 0 alone prints the summary
    _close(load_file(str(one.path / "model.safetensors")), load_file(str(two_dir / "model.safetensors")))


@pytest.mark.slow
def test_lm_decompose_two_processes_match_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("MECHSCOPE_CACHE", str(cache))
    local_lm(cfg="tiny")  # trained once, read by both runs
    args = ["lm-decompose", "--model", "local:tiny", "--site", "transformer.h.1", "--n-latents", "64", "--k", "4",
            "--steps", "30", "--batch-size", "256", "--tokens", "8192", "--no-dashboard"]  # fmt: skip
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "one")])
    assert res.exit_code == 0, res.output
    out = _torchrun([*args, "--out", str(tmp_path / "two")], tmp_path, cache)
    assert out.count("ce_loss_recovered") == 1
    comp = "decomposition/components.safetensors"
    _close(load_file(str(tmp_path / "one" / comp)), load_file(str(tmp_path / "two" / comp)))


def test_missing_device_is_one_line(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    for cmd in (
        ["train-lm", "--preset", "tiny"],
        ["lm-decompose", "--site", "transformer.h.1", "--out", str(tmp_path)],
    ):
        res = runner.invoke(app, [*cmd, "--device", "cuda"])
        assert res.exit_code != 0 and "no CUDA GPU is available" in str(res.exception), res.output
        assert "\n" not in str(res.exception)
