"""The report's dynamics section reads a fixed-point run dir: spectra figure and counts table."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from mechscope.dynamics.command import run_fixed_points
from mechscope.report.data import run_dir
from mechscope.report.dynamics import dynamics_section, load_points


def test_dynamics_section_from_a_run_dir(tmp_path: Path) -> None:
    d = run_dir(tmp_path, "linear-rnn", "fixed-points", 0)  # where the bench lays a cell out
    m = run_fixed_points("linear-rnn", 0, None, ["n_starts=16", "max_iters=50"], d)
    inputs = load_points(d / "tensors.safetensors")
    assert len(inputs) == len(m["inputs"]) and all(abs(i["eigvals"]).max() < 1 for i in inputs)
    cells = {("linear-rnn", "fixed-points"): SimpleNamespace(seeds=[0], knob="")}
    page = dynamics_section(tmp_path, "linear-rnn", ["fixed-points"], cells)
    assert page.count("<img") == 2 and "eigenvalue spectra" in page
    assert f"<td>{m['inputs'][0]['n_stable']}</td>" in page
    assert dynamics_section(tmp_path / "empty", "linear-rnn", ["fixed-points"], cells) == ""


def test_importance_map_draws_live_components_only() -> None:
    import numpy as np

    from mechscope.report.dynamics import importance_png

    ci = np.zeros((3, 10))
    ci[0, 2], ci[2, 7] = 0.9, 0.5
    png = importance_png(ci, np.array([1, 0, 0]), "t")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert importance_png(np.zeros((2, 4)), np.array([0, 0]), "none")[:4] == b"\x89PNG"
