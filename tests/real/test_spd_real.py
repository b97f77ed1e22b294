from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mechscope.config import ConfigError
from mechscope.real.models import LoadedModel, OutputModel, token_windows
from mechscope.real.spd_real import RealSPDConfig, fit_spd_real, masked_loss_report


def test_spd_on_gpt2_reports_kl_under_masks(gpt2: LoadedModel, corpus: Path) -> None:
    ids = token_windows(gpt2.tokenizer, corpus, seq_len=8, n_tokens=8 * 20)
    model = OutputModel(gpt2.model, True)
    cfg = RealSPDConfig(modules=["transformer.h.0.mlp.c_*"], steps=2, batch_size=2, C=40,
                        faithfulness_warmup_steps=300)  # fmt: skip
    dec = fit_spd_real(model, ids[:16], cfg, has_lm_head=True)
    assert dec.sites == ["transformer.h.0.mlp.c_fc", "transformer.h.0.mlp.c_proj"]
    assert {s.kind for s in dec.site_info} == {"conv1d"}
    report = masked_loss_report(dec, ids[16:], has_lm_head=True)
    assert set(report) == {"ci.kl", "stochastic.kl", "all_on.kl", "zero.kl", "l0_ci", "n_components"}
    assert all(v >= 0 and v == v for v in report.values())
    assert report["n_components"] == 80 and 0 <= report["l0_ci"] <= 80
    acts = dec.activity(ids[16:18])
    assert acts["transformer.h.0.mlp.c_fc"].shape == (2 * 8, 40)  # per token


def test_spd_on_minilm_mlp_reports_mse_and_cosine(minilm: LoadedModel, corpus: Path) -> None:
    ids = token_windows(minilm.tokenizer, corpus, seq_len=8, n_tokens=8 * 12)
    model = OutputModel(minilm.model, False)
    cfg = RealSPDConfig(modules=["encoder.layer.3.intermediate.dense", "encoder.layer.3.output.dense"],
                        steps=2, batch_size=2, C=16, faithfulness_warmup_steps=20)  # fmt: skip
    dec = fit_spd_real(model, ids[:8], cfg, has_lm_head=False)
    report = masked_loss_report(dec, ids[8:], has_lm_head=False)
    for mask in ("ci", "stochastic", "all_on", "zero"):
        assert report[f"{mask}.mse"] >= 0 and -1 <= report[f"{mask}.cosine"] <= 1
    assert report["n_components"] == 32


def test_bad_module_is_a_clear_error(gpt2: LoadedModel) -> None:
    ids = torch.zeros(4, 8, dtype=torch.long)
    with pytest.raises(ConfigError, match="matches no module"):
        fit_spd_real(OutputModel(gpt2.model, True), ids, RealSPDConfig(modules=["transformer.h.7.mlp"]), True)
    with pytest.raises(ConfigError, match=r"cannot decompose module 'transformer\.h\.0\.ln_1'"):
        fit_spd_real(OutputModel(gpt2.model, True), ids, RealSPDConfig(modules=["transformer.h.0.ln_1"]), True)
