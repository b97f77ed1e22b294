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


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from mechscope.cli import app

    with pytest.raises(SystemExit) as exit_:
        app(args)
    _, err = capsys.readouterr()
    code = exit_.value.code
    return (code if isinstance(code, int) else 1), err


def test_bad_real_model_invocations_are_one_line_exit_2(
    gpt2_dir: Path, corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """issue 18: `--shard-seqs 0`, `--out <existing file>`, `train-sae --steps 0` and friends."""
    a_file = tmp_path / "a-file"
    a_file.write_text("mine")
    cache = tmp_path / "c"
    cache_activations(model=str(gpt2_dir), dataset=corpus, sites="transformer.h.1", out=cache, tokens=8 * 16,
                      seq_len=8, shard_seqs=4)  # fmt: skip
    capsys.readouterr()
    base = ["--model", str(gpt2_dir), "--dataset", str(corpus), "--tokens", "64", "--seq-len", "8"]
    sae = ["train-sae", "--cache", str(cache), "--site", "transformer.h.1"]
    cases = [
        (["cache-activations", *base, "--sites", "transformer.h.1", "--out", str(tmp_path / "x"), "--shard-seqs", "0"], "shard-seqs"),
        (["cache-activations", *base, "--sites", "transformer.h.1", "--out", str(a_file)], "existing file"),
        ([*sae, "--out", str(a_file)], "existing file"),
        ([*sae, "--out", str(tmp_path / "s"), "--steps", "0"], "steps"),
        ([*sae, "--out", str(tmp_path / "s"), "--lr", "inf"], "--lr"),
        ([*sae, "--out", str(tmp_path / "s"), "--batch-size", "0"], "batch-size"),
        ([*sae, "--out", str(tmp_path / "s"), "--activation", "gelu"], "--activation"),
        (["train-sae", "--cache", str(tmp_path / "nope"), "--site", "s", "--out", str(tmp_path / "s")], "not an activation cache"),
        ([*sae, "--out", str(tmp_path / "s"), "--device", "cuda:0" if not _has_cuda() else "tpu"], "device"),
        (["decompose-model", *base, "--modules", "transformer.h.0.mlp.c_fc", "--out", str(a_file)], "existing file"),
        (["decompose-model", *base, "--modules", "transformer.h.0.mlp.c_fc", "--out", str(tmp_path / "d"), "--C", "0"], "C"),
    ]  # fmt: skip
    for args, says in cases:
        code, err = _cli(args, capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and says in err and "Traceback" not in err, (args, err)
    assert a_file.read_text() == "mine"


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def test_progress_is_plain_lines_when_stderr_is_not_a_terminal(
    gpt2_dir: Path, corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "c"
    code, err = _cli(["cache-activations", "--model", str(gpt2_dir), "--dataset", str(corpus), "--sites",
                      "transformer.h.1", "--out", str(cache), "--tokens", "128", "--seq-len", "8", "--shard-seqs", "4"], capsys)  # fmt: skip
    assert code == 0 and "mechscope: caching activations · shards: 4/4" in err
    code, err = _cli(["train-sae", "--cache", str(cache), "--site", "transformer.h.1", "--out", str(tmp_path / "s"),
                      "--n-latents", "16", "--k", "2", "--steps", "3", "--batch-size", "16"], capsys)  # fmt: skip
    assert code == 0 and "mechscope: SAE transformer.h.1 · steps: 3/3" in err
    assert (tmp_path / "s" / "sae.safetensors").exists()
    code, err = _cli(["train-sae", "--cache", str(cache), "--site", "transformer.h.1", "--out", str(tmp_path / "j"),
                      "--activation", "jumprelu", "--n-latents", "16", "--steps", "3", "--batch-size", "16"], capsys)  # fmt: skip
    assert code == 0 and (tmp_path / "j" / "metrics.json").exists()
