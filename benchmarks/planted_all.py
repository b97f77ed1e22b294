"""The planted-mechanism check for every registered method, each with its random-init control.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python benchmarks/planted_all.py --out planted.json [--spd-steps 2000]

K = 8 rank-1 feature → output rules planted in MiniLM layer 5 (`mechscope.real.planted`), scored by
`mechscope.metrics.score` exactly as on the zoo; then the same for the model with every weight
re-initialised at random (scored against the planted directions). Prints one markdown table
(real | control per metric) and writes every row to `--out`. CPU seconds per fit + score, one thread.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from mechscope.real.planted import run_planted

COLUMNS = ("mmcs", "coverage", "activity_f1", "latent_f1", "mcc", "faithfulness", "l0")


def _fmt(v: Any) -> str:
    return "—" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def table(rows: list[dict[str, Any]]) -> str:
    """One line per method: each metric as `planted / control`, then status and CPU seconds."""
    by: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["method"], {})["control" if "control" in r["model"] else "planted"] = r
    head = "| method | " + " | ".join(f"{c} (planted / control)" for c in COLUMNS) + " | CPU s (planted / control) |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 2)]
    for name, pair in by.items():
        p, c = pair.get("planted", {}), pair.get("control", {})
        if p.get("status", "ok") != "ok":
            lines.append(f"| {name} | {p['status']} |" + " |" * len(COLUMNS))
            continue
        cells = [f"{_fmt(p.get(k))} / {_fmt(c.get(k))}" for k in COLUMNS]
        cpu = f"{_fmt(p.get('cpu_s'))} / {_fmt(c.get('cpu_s'))}"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {cpu} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--methods", default="all", help="comma-separated registered methods, or 'all'")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--spd-steps", type=int, default=None, help="override SPD's fast 400 steps")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    settings = {"spd": {"steps": args.spd_steps}} if args.spd_steps else {}
    if settings:
        from mechscope.real.planted import FAST_SETTINGS

        settings = {"spd": {**FAST_SETTINGS["spd"], **settings["spd"]}}

    def show(row: dict[str, Any]) -> None:
        print(" ".join(f"{k}={_fmt(v)}" for k, v in row.items()), flush=True)

    rows = run_planted(None, args.methods.split(","), args.seed, True, settings, on_row=show)
    args.out.write_text(json.dumps(rows, indent=1))
    print(table(rows))


if __name__ == "__main__":
    main()
