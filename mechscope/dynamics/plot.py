"""The fixed-point figure: trajectories and fixed points in the trajectories' top two PCs."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from torch import Tensor

from mechscope.dynamics.finder import FixedPoints

COLOURS = {"stable": "tab:blue", "saddle": "tab:orange", "unstable": "tab:red", "marginal": "tab:purple"}


def plot_fixed_points(trajectories: Tensor, results: list[FixedPoints], labels: list[str], path: Path) -> None:
    """One panel per input: trajectories [B, T, n] (grey) and points coloured by stability;
    slow points (q above the fixed-point level) are drawn hollow."""
    flat = trajectories.reshape(-1, trajectories.shape[-1])
    mean = flat.mean(0)
    _, _, vt = torch.linalg.svd(flat - mean, full_matrices=False)
    pcs = vt[:2].T  # (n, 2)
    n_panels = min(len(results), 4)
    fig, axes = plt.subplots(1, n_panels, figsize=(4.2 * n_panels, 4), squeeze=False)
    for ax, fp, label in zip(axes[0], results[:n_panels], labels[:n_panels], strict=True):
        proj = (trajectories - mean) @ pcs  # (B, T, 2)
        for traj in proj[:20]:
            ax.plot(traj[:, 0], traj[:, 1], color="0.75", lw=0.6, zorder=1)
        pts = ((fp.points - mean) @ pcs) if fp.points.shape[0] else torch.zeros(0, 2)
        for kind, colour in COLOURS.items():
            for fixed, face in ((True, colour), (False, "none")):
                sel = [i for i, k in enumerate(fp.kinds) if k == kind and bool(fp.is_fixed[i]) == fixed]
                if sel:
                    tag = kind if fixed else f"{kind} (slow)"
                    ax.scatter(pts[sel, 0], pts[sel, 1], facecolors=face, edgecolors=colour, s=36, label=tag, zorder=2)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("PC1")
        ax.set_ylabel("PC2")
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
