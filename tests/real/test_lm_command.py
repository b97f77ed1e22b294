"""`train-lm` and `lm-decompose`: plain progress lines off a terminal, a summary table, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mechscope.real.lm_command import LineProgress, app
from mechscope.real.models import minilm_path

runner = CliRunner()


@pytest.fixture(autouse=True)
def lm_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path_factory.getbasetemp() / "lm-cache"))


def test_line_progress_prints_every_tenth(capsys: pytest.CaptureFixture[str]) -> None:
    bar = LineProgress("stage", tty=False)
    for i in range(1, 101):
        bar(i, 100)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 11 and lines[0].startswith("stage: 1/100") and lines[-1].startswith("stage: 100/100 (100%)")


def test_train_lm_then_decompose_writes_a_scored_run(tmp_path: Path) -> None:
    res = runner.invoke(app, ["train-lm", "--preset", "tiny"])
    assert res.exit_code == 0, res.output
    assert "held_out_ce" in res.stdout and "lms/gpt2-" in res.stdout
    out = tmp_path / "run"
    res = runner.invoke(app, ["lm-decompose", "--model", "local:tiny", "--site", "transformer.h.1", "--out", str(out),
                              "--n-latents", "64", "--k", "4", "--steps", "60", "--batch-size", "256", "--tokens", "8192"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "training sae-topk: 60/60 (100%)" in res.stderr  # plain progress lines: stderr is not a terminal here
    assert "ce_loss_recovered" in res.stdout and "kl_spliced" in res.stdout and "dashboard:" in res.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"ce_loss_recovered", "kl_spliced", "fve", "l0", "dead_frac", "samples_seen", "config_hash"} <= set(metrics)
    assert metrics["l0"] <= 4 and metrics["ce_loss_recovered"] > 0.5
    assert (out / "config.yaml").is_file() and (out / "decomposition" / "decomposition.json").is_file()
    assert (out / "dashboard" / "index.html").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", str(minilm_path()), "--site", "encoder.layer.3"], "needs a causal LM with an LM head"),
        (["--model", "local:tiny", "--site", "transformer.h.9"], "no module named 'transformer.h.9'"),
        (["--model", "local:tiny", "--site", "transformer.h.1", "--method", "pca"], "unknown method 'pca'; allowed:"),
        (["--model", "local:huge", "--site", "transformer.h.1"], "unknown LM preset 'huge'"),
        (["--model", "/nonexistent/gpt2", "--site", "transformer.h.1"], "does not exist"),
    ],
)
def test_bad_input_is_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    res = runner.invoke(app, ["lm-decompose", *args, "--out", str(tmp_path / "r"), "--steps", "2"])
    assert res.exit_code != 0
    err = str(res.exception)
    assert message in err and "\n" not in err, err


def test_empty_corpus_is_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    res = runner.invoke(app, ["lm-decompose", "--model", "local:tiny", "--site", "transformer.h.1", "--dataset", str(empty),
                              "--out", str(tmp_path / "r")])  # fmt: skip
    assert res.exit_code != 0 and "is empty" in str(res.exception) and "\n" not in str(res.exception)
