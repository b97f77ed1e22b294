"""`mechscope score`: a dictionary the user brings (SAELens dir, sparsify checkpoint, run dir), scored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import save_file

import mechscope
from mechscope.cli import app
from mechscope.decompose import FitContext, get_method
from mechscope.decompose.saelens_export import export_saelens
from mechscope.score_command import ScoreError
from mechscope.zoo import get_task


@pytest.fixture(scope="module")
def fitted() -> tuple[object, object]:
    task = get_task("tms-40-10")
    target = task.make_target(0)
    spec = get_method("sae-topk")
    dec = spec.fit(target, task, spec.Cfg(steps=200, batch_size=256, buffer_size=2048), FitContext(seed=0))
    return task, dec


def test_saelens_dir_scores_like_the_decomposition_itself(fitted: tuple, tmp_path: Path) -> None:
    task, dec = fitted
    direct = mechscope.score(dec, task)
    path = export_saelens(dec, "W", tmp_path / "sae")
    via_file = mechscope.score(path, "tms-40-10", site="W", out=tmp_path / "run")
    assert via_file["mmcs"] == pytest.approx(direct["mmcs"], abs=1e-6)
    assert via_file["activity_f1"] == pytest.approx(direct["activity_f1"], abs=1e-6)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["mmcs"] == via_file["mmcs"]
    again = mechscope.score(tmp_path / "run", "tms-40-10")  # a mechscope run dir
    assert again["mmcs"] == pytest.approx(direct["mmcs"], abs=1e-6)


def test_sparsify_checkpoint(fitted: tuple, tmp_path: Path) -> None:
    task, dec = fitted
    c = dec.coder("W")
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    # sparsify: z = TopK(ReLU(encoder(x − b_dec))), x̂ = z W_dec + b_dec — the same function as ours
    tensors = {"encoder.weight": c.W_enc, "encoder.bias": c.b_enc, "W_dec": c.W_dec, "b_dec": c.b_dec}
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(ckpt / "sae.safetensors"))
    cfg = {
        "activation": "topk",
        "k": c.k,
        "num_latents": c.n_latents,
        "expansion_factor": 8,
        "normalize_decoder": True,
        "multi_topk": False,
        "skip_connection": False,
        "transcode": False,
        "d_in": 10,
    }
    (ckpt / "cfg.json").write_text(json.dumps(cfg))
    got = mechscope.score(ckpt, "tms-40-10")  # checked against sparsify's own encode/decode when installed
    assert got["mmcs"] == pytest.approx(mechscope.score(dec, task)["mmcs"], abs=1e-6)


def test_bad_inputs_are_one_line_errors(
    fitted: tuple, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, dec = fitted
    path = export_saelens(dec, "W", tmp_path / "sae")
    with pytest.raises(ScoreError, match=r"is not a dictionary"):
        mechscope.score(tmp_path, "tms-40-10")
    with pytest.raises(ScoreError, match=r"unknown site 'X'.*available sites: W \(width 10\)"):
        mechscope.score(path, "tms-40-10", site="X")
    with pytest.raises(ScoreError, match=r"d_in=10.*expects width 2; available sites: W \(width 2\)"):
        mechscope.score(path, "tms-5-2", site="W")
    with pytest.raises(SystemExit) as exit_:
        app(["score", "tms-5-2", "--sae", str(path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and str(path) in err[0] and "width 2" in err[0]


def test_score_writes_the_reports_page_for_one_run(
    fitted: tuple, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, dec = fitted
    path = export_saelens(dec, "W", tmp_path / "sae")
    out = tmp_path / "scored"
    with pytest.raises(SystemExit) as exit_:
        app(["score", "tms-40-10", "--sae", str(path), "--out", str(out)])
    printed = capsys.readouterr().out
    assert exit_.value.code == 0 and f"report: {out / 'report.html'}" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    page = (out / "report.html").read_text()
    # the bench report's page (report/html.py), with this dictionary as its one leaderboard row
    board = page.split("id='leaderboard'")[1].split("</table>")[0]
    assert ">score<" in board and f"{metrics['mmcs']:.3f}" in board
    assert "True feature geometry" in page or "Similarity of true mechanisms" in page
    assert "data:image/png;base64," in page and "Missed, split, merged" in page
