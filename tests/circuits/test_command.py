"""`mechscope circuit RUN_DIR`: graph + scores from a run directory; bad input is one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mechscope.cli import app


@pytest.fixture(autouse=True)
def _private_cache(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path_factory.mktemp("cache")))


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        app(args)
    out = capsys.readouterr()
    return int(exit_info.value.code or 0), out.out, out.err


def test_circuit_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rd = tmp_path / "run"
    code, _, _ = run(["decompose", "boolean-circuits", "transcoder-topk", "--steps", "30", "--out", str(rd)], capsys)
    assert code == 0
    code, out, err = run(["circuit", str(rd), "--json"], capsys)
    assert code == 0, err
    body = json.loads(out)
    assert {"edge_auroc", "cpr", "cmd", "node_recall", "ablation_pearson"} <= body.keys()
    assert (rd / "circuit" / "graph.safetensors").is_file() and (rd / "circuit" / "circuit.json").is_file()
    code, _, err = run(["circuit", str(rd), "--inputs", "nope"], capsys)
    assert code == 2 and err.count("\n") == 1 and "onehot, data" in err


def test_one_site_run_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rd = tmp_path / "one"
    code, _, _ = run(["decompose", "boolean-circuits", "sae-topk", "--steps", "20", "--set", "site=layers.0.mlp_out",
                      "--out", str(rd)], capsys)  # fmt: skip
    assert code == 0
    code, _, err = run(["circuit", str(rd)], capsys)
    assert code == 2 and err.count("\n") == 1 and "two or more sites" in err
