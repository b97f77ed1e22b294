"""report.html: self-contained, with the leaderboard rows and the embedded figures."""

from __future__ import annotations

import re
from pathlib import Path

from mechscope.bench.grid import plan_bench, run_bench
from mechscope.report import build_report


def test_report_has_leaderboard_rows_and_embedded_figures(tmp_path: Path) -> None:
    tasks, methods = ["tms-5-2", "tms-5-2-id"], ["oracle", "random"]
    plan = plan_bench(tmp_path, tasks=tasks, methods=methods, seeds=2, sets=["task.steps=100"])
    run_bench(plan, workers=1, show=False)
    page = build_report(tmp_path).read_text()

    # Leaderboard: one row per (task, method), mean ± std over the 2 seeds, coloured cells.
    board = page.split("id='leaderboard'")[1].split("</table>")[0]
    for task in tasks:
        assert f"<td colspan='12'>{task}</td>" in board or f">{task}</td>" in board
    rows = re.findall(r"<tr><td class='name'>(\w+)</td><td>(\d+)</td>", board)
    assert rows == [(m, "2") for _ in tasks for m in methods]
    assert "± " in board and "rgb(" in board
    # The oracle's mmcs is 1.000 and coloured full green; random sits at the red floor.
    assert "background:rgb(120,255,140)'>1.000" in board
    # Figures: inline PNGs only, nothing fetched from outside.
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) >= 2 * len(tasks)
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "Missed, split, merged" in page and "True feature geometry" in page


def test_report_marks_peers_oracle_sized_and_not_converged(tmp_path: Path) -> None:
    from mechscope.bench.convergence import mark_converged
    from mechscope.bench.results import RESULTS, write_results

    def row(task: str, method: str, mmcs: float, **more: object) -> dict[str, object]:
        return {"task": task, "method": method, "seed": 0, "target_seed": 0, "config_hash": "h", "status": "ok",
                "knob": "", "knob_default": None, "family": "activation", "peer": False, "peer_of": None,
                "sizing": "blind", "samples_seen": 1_536_000, "mmcs": mmcs, "activity_f1": 0.5, **more}

    rows = [row("stress-iid", "sae-relu", 0.86), row("stress-dense", "sae-relu", 0.7),
            row("stress-iid", "sae-topk", 0.99, sizing="oracle"), row("stress-dense", "sae-topk", 0.8),
            row("stress-iid", "saelens-topk", 0.97, peer=True, peer_of="sae-topk", knob="preset=short")]
    write_results(tmp_path / RESULTS, mark_converged(rows))
    page = build_report(tmp_path).read_text()
    board = page.split("id='leaderboard'")[1].split("</table>")[0]
    names = re.findall(r"<tr><td class='name'>(.*?)</td><td>\d+</td>", board)
    assert names[:3] == ["sae-relu° <span class='std'>not converged at this budget</span>",
                         "sae-topk* <span class='std'>oracle-sized</span>",
                         "saelens-topk@preset=short† <span class='std'>peer of sae-topk</span>"]
    assert "samples_seen" in board and "1.54e+06" in board
    stress = page.split("id='stress'")[1].split("<h2")[0]
    assert "not converged at this budget (stress-iid 0.860)" in stress
