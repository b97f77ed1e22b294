"""Score a dictionary the user brings — a SAELens SAE, a sparsify checkpoint or a mechscope run —
on a zoo task's site, with the same scorer and the same run-directory files as `decompose`.

    import mechscope
    metrics = mechscope.score("out/my-sae", "tms-40-10", site="W")       # a path …
    metrics = mechscope.score(decomposition, "tms-40-10")                 # … or a Decomposition

    mechscope score tms-40-10 --sae out/my-sae [--site W] [--out DIR] [--json]

With `out`, DIR gets what a bench cell's run dir holds — metrics.json, tensors.safetensors,
matches.json, figures/, decomposition/ — and report.html, the page `mechscope report` draws for a
bench, with this dictionary as its one row (`report.html.build_run_report`).

A dictionary file is converted into mechscope's `SparseCoder` and, where the library is installed,
checked equal to the library's own encode/decode on a batch (`import_dictionary`). Every mistake
— a path that is not a dictionary, a width that is not the site's, an unknown site — is one
`ScoreError` line naming the path, the expected width and the available sites.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mechscope.config import ConfigError
from mechscope.core import Task
from mechscope.decompose.base import Decomposition, load_decomposition
from mechscope.decompose.dictionary_decomposition import DictionaryDecomposition, SiteCoder
from mechscope.decompose.import_dictionary import DictionaryFormatError, dictionary_format, load_dictionary
from mechscope.hooks import capture


class ScoreError(ConfigError):
    """A user mistake in `score`: one line naming the bad value and what is allowed (exit 2)."""


def site_widths(target: nn.Module, task: Task) -> dict[str, int]:
    """{site: width of its output} for the task's activation sites and MLP outputs."""
    sites = sorted({*task.activation_sites(), *(out for _, out in task.mlp_sites())})
    x = task.sample(2, torch.Generator().manual_seed(0))
    with torch.no_grad(), capture(target, sites, "output") as acts:
        target(x)
    return {s: int(acts[s].shape[-1]) for s in sites}


def _describe(widths: dict[str, int]) -> str:
    return ", ".join(f"{s} (width {w})" for s, w in widths.items()) or "(none)"


def load_for_task(path: str | Path, task: Task, target: nn.Module, site: str | None = None) -> Decomposition:
    """The dictionary at `path` as a Decomposition of `target` at `site` (checked)."""
    path = Path(path)
    widths = site_widths(target, task)
    if site is not None and site not in widths:
        raise ScoreError(
            f"unknown site {site!r} for task {task.name!r}; available sites: {_describe(widths)}"
        )
    try:
        kind = dictionary_format(path)
    except DictionaryFormatError as err:
        raise ScoreError(str(err)) from err
    if kind == "mechscope":
        directory = path / "decomposition" if (path / "decomposition").is_dir() else path
        try:
            return load_decomposition(directory, target)
        except Exception as err:
            raise ScoreError(
                f"{path}: not a decomposition of {task.name!r}'s target ({type(err).__name__}: {err})"
            ) from err
    try:
        coder = load_dictionary(path)
    except DictionaryFormatError as err:
        raise ScoreError(str(err)) from err
    if site is None:
        fitting = [s for s, w in widths.items() if w == coder.d_in and s in task.activation_sites()]
        if len(fitting) != 1:
            raise ScoreError(f"{path}: choose a site with --site (the dictionary reads width {coder.d_in}); "
                             f"available sites: {_describe(widths)}")  # fmt: skip
        site = fitting[0]
    if coder.d_in != widths[site] or coder.d_out != widths[site]:
        raise ScoreError(f"{path}: the dictionary has d_in={coder.d_in}, d_out={coder.d_out}; site {site!r} of "
                         f"{task.name!r} expects width {widths[site]}; available sites: {_describe(widths)}")  # fmt: skip
    return DictionaryDecomposition(target, {site: SiteCoder(coder, (site, "output"))})


def score(
    decomposition_or_path: Decomposition | str | Path, task: Task | str, site: str | None = None,
    target_seed: int = 0, out: str | Path | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Score a Decomposition (or the dictionary at a path) against `task`'s ground truth; returns
    the metrics.json body, also written with figures into `out` when given."""
    from mechscope.bench.run import plain, report_tensors, write_matches
    from mechscope.files import atomic_text
    from mechscope.metrics import score as score_decomposition
    from mechscope.zoo import get_task

    task = get_task(task) if isinstance(task, str) else task
    if isinstance(decomposition_or_path, Decomposition):
        dec = decomposition_or_path
        target = dec.target
        source = type(dec).__name__
    else:
        target = task.make_target(target_seed)
        dec = load_for_task(decomposition_or_path, task, target, site)
        source = str(decomposition_or_path)
    truth = task.ground_truth(target)
    result = score_decomposition(dec, task, truth)
    metrics = plain({"task": task.name, "method": "score", "dictionary": source, "target_seed": target_seed,
                     "sites": dec.sites, "status": "ok", **result.metrics})  # fmt: skip
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        from safetensors.torch import save_file

        from mechscope.report.figures import run_figures

        tensors = {**result.tensors, **report_tensors(dec, truth)}
        save_file(
            {k: v.detach().float().contiguous().cpu() for k, v in tensors.items()},
            str(out / "tensors.safetensors"),
        )
        run_figures(tensors, out / "figures")
        dec.save(out / "decomposition")
        write_matches(out, dec, truth, result)
        atomic_text(out / "metrics.json", json.dumps(metrics, indent=2))
        from mechscope.report.html import build_run_report

        build_run_report(out, metrics)
    return dict(metrics)
