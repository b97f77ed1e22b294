"""`lm-sweep`: a grid of lm-decompose runs, one directory each, a table of splice metrics; on Ray too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mechscope.config import ConfigError
from mechscope.real.lm_command import app
from mechscope.real.lm_sweep import parse_grid

runner = CliRunner()
ARGS = ["lm-sweep", "--model", "local:tiny", "--site", "transformer.h.1", "--steps", "5", "--tokens", "4096"]


@pytest.fixture(autouse=True)
def lm_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path_factory.getbasetemp() / "lm-cache"))


def test_grid_is_the_cartesian_product_typed() -> None:
    grid = parse_grid(["k=4,8", "lr=1e-3", "method=sae-topk,sae-relu"])
    assert len(grid) == 4 and grid[0] == {"k": 4, "lr": 1e-3, "method": "sae-topk"}
    with pytest.raises(ConfigError, match="'bogus' is not an lm-decompose setting"):
        parse_grid(["bogus=1"])
    with pytest.raises(ConfigError, match=r"k='x': not a int"):
        parse_grid(["k=x"])


def _check(out: Path) -> None:
    rows = json.loads((out / "sweep.json").read_text())
    assert [r["run"] for r in rows] == ["k=2,n_latents=32", "k=4,n_latents=32"]
    assert rows[0]["l0"] <= 2 < rows[1]["l0"] <= 4  # each run got its own k
    assert all(r["ce_loss_recovered"] is not None for r in rows)
    assert (out / "k=4,n_latents=32" / "metrics.json").is_file() and "| run |" in (out / "sweep.md").read_text()


def test_sweep_runs_every_grid_point_and_skips_finished_ones(tmp_path: Path) -> None:
    res = runner.invoke(app, [*ARGS, "--out", str(tmp_path), "--grid", "k=2,4", "--grid", "n_latents=32"])
    assert res.exit_code == 0, res.output
    _check(tmp_path)
    assert "ce_loss_recovered" in res.stdout
    res = runner.invoke(app, [*ARGS, "--out", str(tmp_path), "--grid", "k=2,4", "--grid", "n_latents=32"])
    assert res.exit_code == 0 and "lm-sweep: k=2" not in res.stderr  # both finished: nothing reruns


@pytest.mark.slow
def test_sweep_on_ray(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    res = runner.invoke(app, [*ARGS, "--out", str(tmp_path), "--grid", "k=2,4", "--grid", "n_latents=32",
                              "--backend", "ray"])  # fmt: skip
    assert res.exit_code == 0, res.output
    _check(tmp_path)
    assert "done on Ray" in res.stderr
