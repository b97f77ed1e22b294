"""`decompose-model` runs the zoo's SPD loop (`spd.fit`) on a real model's token windows."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mechscope.config import ConfigError
from mechscope.decompose.spd import SPDConfig
from mechscope.real.models import LoadedModel, OutputModel, token_windows
from mechscope.real.spd_model import TokenTask, fit_spd, masked_loss_report


def test_spd_on_gpt2_reports_kl_under_masks(gpt2: LoadedModel, corpus: Path) -> None:
    ids = token_windows(gpt2.tokenizer, corpus, seq_len=8, n_tokens=8 * 20)
    model = OutputModel(gpt2.model, True)
    cfg = SPDConfig(modules=["transformer.h.0.mlp.c_*"], steps=2, batch_size=2, C=40, faithfulness_warmup_steps=300)
    dec = fit_spd(model, TokenTask(ids[:16], logits=True), cfg)
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
    cfg = SPDConfig(modules=["encoder.layer.3.intermediate.dense", "encoder.layer.3.output.dense"],
                    steps=2, batch_size=2, C=16, faithfulness_warmup_steps=20)  # fmt: skip
    dec = fit_spd(model, TokenTask(ids[:8], logits=False), cfg)
    report = masked_loss_report(dec, ids[8:], has_lm_head=False)
    for mask in ("ci", "stochastic", "all_on", "zero"):
        assert report[f"{mask}.mse"] >= 0 and -1 <= report[f"{mask}.cosine"] <= 1
    assert report["n_components"] == 32


def test_bad_module_is_a_clear_error(gpt2: LoadedModel) -> None:
    task = TokenTask(torch.zeros(4, 8, dtype=torch.long), logits=True)
    with pytest.raises(ConfigError, match="matches no module"):
        fit_spd(OutputModel(gpt2.model, True), task, SPDConfig(modules=["transformer.h.7.mlp"]))
    with pytest.raises(ConfigError, match=r"cannot decompose module 'transformer\.h\.0\.ln_1'"):
        fit_spd(OutputModel(gpt2.model, True), task, SPDConfig(modules=["transformer.h.0.ln_1"]))
    with pytest.raises(ConfigError, match="no ground truth"):
        task.ground_truth(gpt2.model)


def test_zoo_and_decompose_model_entry_points_give_the_same_components(tmp_path: Path, shared_cache: None) -> None:
    """One SPD engine: TMS 5-2's target decomposed by the zoo's `spd` method (fit_blind) and by
    `decompose-model`'s path (`run_decompose_model`: placement, progress, checkpoint dir, save,
    reload) from the same seed gives bit-identical components and causal importances."""
    from mechscope.decompose.base import load_decomposition
    from mechscope.decompose.registry import FitContext, fit_blind, get_method
    from mechscope.real.command import run_decompose_model
    from mechscope.zoo import get_task

    task = get_task("tms-5-2")
    target = task.make_target(0)
    cfg = SPDConfig(modules=["W"], steps=64, checkpoint_every=32)
    zoo = fit_blind(get_method("spd"), target, task, cfg, FitContext(seed=3))
    report = run_decompose_model(target, task, cfg, tmp_path, task.sample(256, torch.Generator().manual_seed(9)), seed=3)
    real = load_decomposition(tmp_path / "decomposition", target)
    assert report is not None and report["all_on.mse"] < 1e-2 and not (tmp_path / "spd-checkpoint.pt").exists()
    assert torch.equal(zoo.components("W"), real.components("W"))  # type: ignore[attr-defined]
    onehot = task.onehot()
    assert torch.equal(zoo.activity(onehot)["W"], real.activity(onehot)["W"])
