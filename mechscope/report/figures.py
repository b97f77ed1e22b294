"""Figures for run directories and the bench report (matplotlib, Agg, PNG embedded as base64).

Each function takes plain tensors/arrays and returns PNG bytes, so the report stays a pure
function of the stored results and opens offline.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from torch import Tensor

DPI = 80


def png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def data_uri(png_bytes: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes).decode()


def run_figures(tensors: Mapping[str, Tensor], directory: Path, max_side: int = 400) -> None:
    """One heatmap per 2-D matrix of a run (similarity, one-hot activity, CI pattern) into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, t in tensors.items():
        if t.dim() != 2 or max(t.shape) > max_side or name.startswith(("directions.", "true_directions.")):
            continue
        fig, ax = plt.subplots(figsize=(min(10, 2 + 0.25 * t.shape[1]), min(8, 1.5 + 0.25 * t.shape[0])))
        im = ax.imshow(t.float().numpy(), aspect="auto", cmap="viridis", interpolation="nearest")
        fig.colorbar(im, ax=ax)
        ax.set_title(name, fontsize=9)
        (directory / f"{name}.png").write_bytes(png(fig))


def geometry_2d(true_dirs: np.ndarray, panels: Sequence[tuple[str, np.ndarray | None, np.ndarray | None]]) -> bytes:
    """TMS feature geometry: true directions (black) vs each method's directions (colour = alive).

    true_dirs: [n_true, 2]; panels: (title, directions [C, 2] or None, alive bool[C] or None).
    """
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.4), squeeze=False)
    lim = 1.2 * max(1e-6, float(np.abs(true_dirs).max()))
    for ax, (title, found, alive) in zip(axes[0], panels, strict=True):
        for v in true_dirs:
            ax.annotate("", xy=(v[0], v[1]), xytext=(0, 0), arrowprops={"arrowstyle": "-|>", "color": "black", "lw": 2})
        if found is not None:
            scale = lim * 0.8 / max(1e-9, float(np.linalg.norm(found, axis=1).max()))
            for c, v in enumerate(found):
                on = alive is None or bool(alive[c])
                ax.annotate("", xy=(v[0] * scale, v[1] * scale), xytext=(0, 0),
                            arrowprops={"arrowstyle": "-|>", "color": "tab:red" if on else "lightgray",
                                        "lw": 1.2, "alpha": 0.9 if on else 0.5})
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=8)
    fig.suptitle("black: true feature directions W[:, i] · red: the method's alive directions (rescaled)", fontsize=8)
    return png(fig)


def matrix_panels(panels: Sequence[tuple[str, np.ndarray]], xlabel: str, ylabel: str, vmax: float | None = None,
                  cmap: str = "viridis") -> bytes:
    """Several heatmaps side by side (similarity matrices or activity patterns, already permuted)."""
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(2.8 * n + 0.6, 2.8), squeeze=False)
    im = None
    for ax, (title, mat) in zip(axes[0], panels, strict=True):
        im = ax.imshow(mat, aspect="auto", cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.set_xlabel(xlabel, fontsize=7)
        ax.set_ylabel(ylabel, fontsize=7)
        ax.tick_params(labelsize=6)
    if im is not None:
        fig.colorbar(im, ax=list(axes[0]), shrink=0.8)
    return png(fig)


def tradeoff(points: Sequence[tuple[str, str, float, float]]) -> bytes:
    """Recovery vs L0: one point per (task, method): (task, method, l0 / l0_true, mmcs)."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    methods = sorted({m for _, m, _, _ in points})
    tasks = sorted({t for t, _, _, _ in points})
    cmap = plt.get_cmap("tab10")
    markers = "osD^v<>pPX*h"
    for (task, method, x, y) in points:
        ax.scatter(x, y, color=cmap(methods.index(method) % 10), marker=markers[tasks.index(task) % len(markers)],
                   s=40, alpha=0.85, edgecolors="black", linewidths=0.4)
    for i, m in enumerate(methods):
        ax.scatter([], [], color=cmap(i % 10), label=m)
    for j, t in enumerate(tasks):
        ax.scatter([], [], color="gray", marker=markers[j % len(markers)], label=t)
    ax.set_xscale("log")
    ax.axvline(1.0, color="gray", lw=0.8, ls="--")
    ax.set_xlabel("L0 / true L0  (firing components per input, relative to the true mechanisms)")
    ax.set_ylabel("mmcs (recovery)")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.set_title("recovery vs L0 across methods (mean over seeds)", fontsize=9)
    return png(fig)


Series = tuple[str, Sequence[float], Sequence[float], Sequence[float], Sequence[float], Sequence[float]]
"""(method, knob values, mmcs mean, mmcs std, activity_f1 mean, activity_f1 std) over seeds."""


def knob_curves(title: str, panels: Sequence[tuple[str, Sequence[Series], float | None]], line: float = 0.9) -> bytes:
    """Recovery vs a sparsity knob: one panel per knob (k, l1_coef, …) with its floor (random's mmcs,
    dotted) or None; one colour per method; mmcs solid, activity_f1 dashed, bars ± std over seeds."""
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(3.4 * n + 1.6, 3.0), squeeze=False)
    methods = sorted({s[0] for _, series, _ in panels for s in series})
    cmap = plt.get_cmap("tab10")
    for ax, (knob, series, floor) in zip(axes[0], panels, strict=True):
        xs_all = [x for s in series for x in s[1]]
        for method, xs, m, ms, f, fs in series:
            colour = cmap(methods.index(method) % 10)
            ax.errorbar(xs, m, yerr=ms, color=colour, marker="o", ms=4, lw=1.4, capsize=2, label=f"{method} mmcs")
            ax.errorbar(xs, f, yerr=fs, color=colour, marker="s", ms=3, lw=1.0, ls="--", capsize=2, alpha=0.8,
                        label=f"{method} activity_f1")
        if xs_all and min(xs_all) > 0 and max(xs_all) / min(xs_all) >= 4:
            ax.set_xscale("log")
        ticks = sorted(set(xs_all))
        ax.set_xticks(ticks, [f"{x:g}" for x in ticks])
        ax.minorticks_off()
        ax.axhline(line, color="gray", lw=0.8, ls="--")
        if floor is not None:
            ax.axhline(floor, color="black", lw=0.8, ls=":", label="random mmcs")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(knob, fontsize=8)
        ax.set_ylabel("recovery", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, loc="lower left", frameon=False)
    fig.suptitle(title, fontsize=9)
    return png(fig)


def recovery_vs_probability(points: Sequence[tuple[str, np.ndarray, np.ndarray]], line: float = 0.9) -> bytes:
    """Per-feature recovery (best similarity, mean over seeds) vs the feature's firing probability,
    one colour per method: dots per feature, a line through log-spaced bins."""
    fig, ax = plt.subplots(figsize=(7.0, 3.8))
    cmap = plt.get_cmap("tab10")
    for i, (method, probs, sims) in enumerate(points):
        colour = cmap(i % 10)
        ax.scatter(probs, sims, color=colour, s=10, alpha=0.45)
        centres, means = binned(probs, sims)
        ax.plot(centres, means, color=colour, lw=1.6, marker="o", ms=3, label=method)
    ax.set_xscale("log")
    ax.axhline(line, color="gray", lw=0.8, ls="--")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("firing probability of the feature")
    ax.set_ylabel("best similarity (recovery of that feature)")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.set_title("how fast recovery falls as features get rarer (mean over seeds)", fontsize=9)
    return png(fig)


def binned(probs: np.ndarray, values: np.ndarray, n_bins: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Mean of `values` in `n_bins` log-spaced bins of `probs` (empty bins dropped): (geometric centres, means)."""
    lo, hi = float(probs.min()), float(probs.max())
    if not lo > 0 or hi <= lo:
        return np.array([lo]), np.array([float(values.mean())])
    edges = np.geomspace(lo, hi * (1 + 1e-9), n_bins + 1)
    which = np.clip(np.searchsorted(edges, probs, side="right") - 1, 0, n_bins - 1)
    keep = [b for b in range(n_bins) if (which == b).any()]
    centres = np.array([np.sqrt(edges[b] * edges[b + 1]) for b in keep])
    means = np.array([float(values[which == b].mean()) for b in keep])
    return centres, means
