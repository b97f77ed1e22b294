"""Plugins: a third-party package's `mechscope.methods` entry point becomes a registered method."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mechscope.decompose import METHODS, FitContext, load_plugins
from mechscope.decompose.registry import fit_blind
from mechscope.zoo.resid_mlp import ResidMLPConfig, ResidMLPTask

PLUGIN_DIR = Path(__file__).parents[1] / "data" / "plugin_pkg"
"""A tiny installed package: a module plus its .dist-info with entry_points.txt."""


@pytest.fixture
def plugin_on_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    yield
    METHODS.pop("plugin-pca", None)
    sys.modules.pop("mechscope_pca_plugin", None)


def test_entry_point_registers_and_fits(plugin_on_path: None) -> None:
    assert "plugin-pca" not in METHODS
    assert load_plugins() == ["plugin-pca"]
    assert load_plugins() == []  # once only
    from mechscope.bench.run import CellRequest, method_names, resolve

    assert "plugin-pca" in method_names()
    assert resolve(CellRequest("tms-40-10", "plugin-pca")).na_reason is None  # the bench can plan it
    task = ResidMLPTask(ResidMLPConfig(n_features=12, d_embed=32, d_mlp=6, n_layers=1, feature_prob=0.1), "r")
    dec = fit_blind(
        METHODS["plugin-pca"], task.build(0).eval(), task, METHODS["plugin-pca"].Cfg(), FitContext()
    )
    assert dec.n_components("embed") == 64  # ± each of the 32 principal directions


def test_broken_plugin_is_one_warning_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    info = tmp_path / "broken_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[mechscope.methods]\nbroken = no_such_module:SPEC\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_plugins() == []
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "plugin 'broken'" in err[0] and "no_such_module" in err[0]


def test_mechscope_methods_lists_the_plugin() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PLUGIN_DIR), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-m", "mechscope.cli", "methods"], env=env, capture_output=True,
                         text=True, timeout=300, check=True).stdout  # fmt: skip
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert "plugin-pca" in lines and "principal directions" in lines["plugin-pca"]
    if "saelens-topk" in lines:
        assert "[peer]" in lines["saelens-topk"] and "[peer]" not in lines["sae-topk"]
