from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mechscope.real.models import LoadedModel, OutputModel, load_model, resolve_sites, token_windows


def test_missing_model_path_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        load_model(tmp_path)


def test_gpt2_has_lm_head_and_conv1d(gpt2: LoadedModel) -> None:
    assert gpt2.has_lm_head
    kinds = {type(m).__name__ for m in gpt2.model.modules()}
    assert "Conv1D" in kinds
    ids = torch.randint(0, 100, (2, 5))
    assert gpt2.outputs(ids).shape == (2, 5, gpt2.tokenizer.vocab_size)


def test_output_model_keeps_module_names(minilm: LoadedModel) -> None:
    wrapped = OutputModel(minilm.model, logits=False)
    assert {n for n, _ in wrapped.named_modules()} == {n for n, _ in minilm.model.named_modules()}
    ids = torch.tensor([[101, 2023, 2003, 102]])
    assert torch.equal(wrapped(ids), minilm.model(input_ids=ids).last_hidden_state)


def test_sites_by_name_and_glob(minilm: LoadedModel) -> None:
    assert resolve_sites(minilm.model, ["encoder.layer.2.output"]) == ["encoder.layer.2.output"]
    got = resolve_sites(minilm.model, ["encoder.layer.?.output.dense"])  # fnmatch: * would cross dots
    assert got == [f"encoder.layer.{i}.output.dense" for i in range(6)]
    with pytest.raises(KeyError, match=r"'encoder.layer.9.output' matches no module.*closest"):
        resolve_sites(minilm.model, ["encoder.layer.9.output"])


def test_token_windows_and_too_small_dataset(minilm: LoadedModel, corpus: Path, tmp_path: Path) -> None:
    ids = token_windows(minilm.tokenizer, corpus, seq_len=16, n_tokens=1_000)
    assert ids.shape == (62, 16) and ids.dtype == torch.long
    small = tmp_path / "small.txt"
    small.write_text("just a few words\n")
    with pytest.raises(ValueError, match=r"small.txt has 4 tokens; 64 were requested"):
        token_windows(minilm.tokenizer, small, seq_len=16, n_tokens=64)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        token_windows(minilm.tokenizer, tmp_path / "missing.txt", 16, 64)
