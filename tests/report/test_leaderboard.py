"""The terminal leaderboard: peers beside their variant, oracle-sized and n/a cells marked."""

from __future__ import annotations

from mechscope.report.leaderboard import leaderboard, order_methods


def test_leaderboard_table() -> None:
    rows = [
        {
            "task": "tms-40-10",
            "method": "sae-topk",
            "seed": 0,
            "status": "ok",
            "mmcs": 1.0,
            "activity_f1": 0.7,
        },
        {
            "task": "tms-40-10",
            "method": "sae-topk",
            "seed": 1,
            "status": "ok",
            "mmcs": 0.9,
            "activity_f1": 0.8,
        },
        {
            "task": "tms-40-10",
            "method": "saelens-topk",
            "seed": 0,
            "status": "ok",
            "mmcs": 0.88,
            "activity_f1": 0.47,
        },
        {
            "task": "tms-40-10",
            "method": "oracle",
            "seed": 0,
            "status": "ok",
            "mmcs": 1.0,
            "activity_f1": 1.0,
            "sizing": "oracle",
        },
        {"task": "flipflop", "method": "sae-topk", "seed": 0, "status": "n/a"},
        {
            "task": "tms-40-10",
            "method": "sae-topk",
            "seed": 0,
            "status": "ok",
            "mmcs": 0.1,
            "knob": "k=4",
            "knob_default": False,
        },
    ]
    text = leaderboard(rows, {"saelens-topk": "sae-topk"})
    header, flip, tms, legend = text.splitlines()
    assert header.split() == ["task", "oracle", "sae-topk", "saelens-topk†"]
    assert tms.split() == ["tms-40-10", "1.00/1.00*", "0.95/0.75", "0.88/0.47"]
    assert flip.split()[2] == "n/a" and "peer" in legend
    assert order_methods(
        ["saelens-topk", "sae-relu", "sae-topk", "x-peer"], {"saelens-topk": "sae-topk", "x-peer": "none"}
    ) == ["sae-relu", "sae-topk", "saelens-topk", "x-peer"]
