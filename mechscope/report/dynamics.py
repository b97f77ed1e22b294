"""The report's dynamics section for a fixed-point (dynamics) task: per method's seed-0 run dir,

- the fixed points projected on the trajectories' top two PCs, with trajectories (the run's own
  `figures/fixed_points.png`, drawn by `mechscope.dynamics.plot`);
- the eigenvalue spectrum of every kept point's Jacobian against the unit circle, coloured by the
  point's stability (read from the run's `tensors.safetensors`): memories sit inside the circle, a
  saddle has one real eigenvalue outside, an oscillator's point a complex pair outside, a line
  attractor an eigenvalue at +1;
- a table of point counts per kind and input.

- with `--set spd=true` (GRU flip-flop targets, `mechscope.dynamics.spd_memories`): the SPD
  subcomponent × fixed-point causal-importance map — rows the fixed points (stable first), columns
  the subcomponents of W_ih and W_hh that are important (g > 0.1) at some point.
"""

from __future__ import annotations

import html
import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from safetensors.numpy import load_file

from mechscope.report import figures
from mechscope.report.data import run_dir

KINDS = ("stable", "saddle", "unstable", "marginal")
"""The codes a fixed-point run's `tensors.safetensors` stores (`command.KIND_CODES`), in order."""
COLOURS = {"stable": "tab:blue", "saddle": "tab:orange", "unstable": "tab:red", "marginal": "tab:purple"}
MAX_PANELS = 4


def load_points(path: Path) -> list[dict[str, np.ndarray]]:
    """Per analysis input: {"input", "kind", "eigvals" (complex [K, n]), "is_fixed"} and, from an
    `spd=true` run, "spd_importance" [K, C] on the first input."""
    t = load_file(str(path))
    out = []
    i = 0
    while f"input{i}.kind" in t:
        out.append({
            "input": t[f"input{i}.input"],
            "kind": t[f"input{i}.kind"],
            "is_fixed": t[f"input{i}.is_fixed"].astype(bool),
            "eigvals": t[f"input{i}.eigvals_real"] + 1j * t[f"input{i}.eigvals_imag"],
        } | ({"spd_importance": t[f"input{i}.spd_importance"]} if f"input{i}.spd_importance" in t else {}))
        i += 1
    return out


def importance_png(ci: np.ndarray, kinds: np.ndarray, title: str, threshold: float = 0.1) -> bytes:
    """Subcomponent × fixed-point causal importance: rows the points (stable first), columns the
    subcomponents important somewhere (g > threshold)."""
    order = np.argsort(kinds, kind="stable")
    live = np.nonzero(ci.max(axis=0) > threshold)[0]
    shown = ci[order][:, live] if live.size else np.zeros((ci.shape[0], 1))
    fig, ax = plt.subplots(figsize=(min(2 + 0.25 * shown.shape[1], 12), min(1.5 + 0.25 * shown.shape[0], 10)))
    im = ax.imshow(shown, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    ax.set_yticks(range(len(order)), [f"{KINDS[int(kinds[j])]} {j}" for j in order], fontsize=6)
    ax.set_xticks(range(live.size), [str(int(c)) for c in live], fontsize=6, rotation=90)
    ax.set_xlabel("SPD subcomponent (W_ih then W_hh)")
    ax.set_title(title, fontsize=8)
    fig.colorbar(im, ax=ax, label="causal importance")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def spectra_png(inputs: list[dict[str, np.ndarray]], title: str) -> bytes:
    """One panel per input: every kept point's eigenvalues on the complex plane, unit circle dashed."""
    n = min(len(inputs), MAX_PANELS)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.6), squeeze=False)
    circle = np.exp(1j * np.linspace(0, 2 * np.pi, 200))
    for ax, inp in zip(axes[0], inputs[:n], strict=True):
        ax.plot(circle.real, circle.imag, "k--", lw=0.7)
        for code, kind in enumerate(KINDS):
            sel = inp["kind"] == code
            if sel.any():
                ev = inp["eigvals"][sel].ravel()
                ax.scatter(ev.real, ev.imag, s=6, alpha=0.5, color=COLOURS[kind], label=f"{kind} ({int(sel.sum())})")
        ax.set_aspect("equal")
        ax.set_title(f"{title}  u={np.round(inp['input'], 3).tolist()}", fontsize=8)
        ax.set_xlabel("Re λ")
        ax.set_ylabel("Im λ")
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def counts_table(inputs: list[dict[str, np.ndarray]]) -> str:
    head = "<tr><th>input</th>" + "".join(f"<th>{k}</th>" for k in KINDS) + "<th>slow</th></tr>"
    rows = []
    for inp in inputs:
        fixed = inp["is_fixed"]
        cells = "".join(f"<td>{int(((inp['kind'] == c) & fixed).sum())}</td>" for c in range(len(KINDS)))
        u = html.escape(str(np.round(inp["input"], 3).tolist()))
        rows.append(f"<tr><td class='name'>{u}</td>{cells}<td>{int((~fixed).sum())}</td></tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def dynamics_section(bench: Path, task: str, methods: list[str], cells: dict[Any, Any]) -> str:
    """The HTML for one dynamics task ("" when no run dir has fixed points)."""
    out: list[str] = []
    for m in methods:
        c = cells[(task, m)]
        d = run_dir(bench, task, m, min(c.seeds), c.knob)
        pngs = sorted((d / "figures").glob("*.png"))[:3]
        out.extend(f"<img alt='{html.escape(p.stem)}' src='{figures.data_uri(p.read_bytes())}'>" for p in pngs)
        path = d / "tensors.safetensors"
        if path.exists():
            inputs = load_points(path)
            if inputs:
                png = spectra_png(inputs, f"{task} · {m}")
                out.append(f"<img alt='eigenvalue spectra' src='{figures.data_uri(png)}'>")
                out.append(counts_table(inputs))
                if "spd_importance" in inputs[0]:
                    png = importance_png(inputs[0]["spd_importance"], inputs[0]["kind"], f"{task} · {m} · SPD")
                    out.append(f"<img alt='SPD importance at fixed points' src='{figures.data_uri(png)}'>")
    if not out:
        return ""
    return (
        "<h3>Dynamics (seed 0): fixed points on the top PCs with trajectories, Jacobian spectra per point</h3>"
        + "".join(out)
    )
