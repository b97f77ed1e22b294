"""`mechscope lm-sweep`: many `lm-decompose` runs over a grid of settings, locally or on Ray.

    mechscope lm-sweep --site transformer.h.0.mlp --method spd --grid importance_coeff=1e-4,1e-3 \
        --grid pnorm=1,2 --out sweeps/spd                           # 4 runs, one after another
    mechscope lm-sweep ... --backend ray                            # the same runs as Ray tasks

Every grid axis is a `lm-decompose` setting (`n_latents`, `k`, `steps`, `lr`, `importance_coeff`,
`pnorm`, `seed`, `method`, `site`, …); the runs are its cartesian product. Each run is exactly
`lm-decompose` (`lm_command._lm_decompose`) into `OUT/<name>/` (name: the grid values, e.g.
`importance_coeff=1e-3,pnorm=1`); a finished run (its metrics.json present) is skipped. With
`--backend ray` each run is a Ray task (`ray_backend.check_ray` for the missing-Ray error; the
cluster from `RAY_ADDRESS`, else a local instance) that runs in a scratch folder and sends its files
back, as the bench's Ray backend does, so no shared file system is needed. The sweep ends with one
table of the splice metrics per run (`OUT/sweep.json`, `OUT/sweep.md`).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mechscope.config import ConfigError

if TYPE_CHECKING:  # lm_command registers this module's command: import it lazily (no cycle)
    from mechscope.real.lm_command import Run

Opt = typer.Option
COLUMNS = (
    "ce_loss_recovered",
    "kl_spliced",
    "ce_loss_recovered_pgd",
    "kl_spliced_pgd",
    "fve",
    "l0",
    "dead_frac",
    "wall_s",
)


def parse_grid(items: list[str]) -> list[dict[str, Any]]:
    """["k=16,32", "seed=0,1"] → the 4 override dicts, values typed as Run's fields."""
    from mechscope.real.lm_command import Run

    fields = {f.name: f for f in dataclasses.fields(Run)}
    axes: list[tuple[str, list[Any]]] = []
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not values:
            raise ConfigError(f"--grid {item!r} is not KEY=V1,V2,…")
        if key not in fields or key in ("out", "site"):
            allowed = ", ".join(k for k in fields if k not in ("out", "site"))
            raise ConfigError(f"--grid key {key!r} is not an lm-decompose setting; allowed: {allowed}")
        axes.append((key, [_typed(key, fields[key].default, v) for v in values.split(",")]))
    return [
        dict(zip([k for k, _ in axes], combo, strict=True))
        for combo in itertools.product(*[v for _, v in axes])
    ]


def _typed(key: str, default: Any, value: str) -> Any:
    kind = type(default) if default is not None else (float if key == "lr" else str)
    try:
        if kind is bool:
            return value.lower() in ("1", "true", "yes")
        return kind(value) if kind in (int, float) else value
    except ValueError:
        raise ConfigError(f"--grid {key}={value!r}: not a {kind.__name__}") from None


def run_name(overrides: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in overrides.items()) or "run"


def _in_scratch(run: Run) -> tuple[dict[str, Any] | None, dict[str, bytes]]:
    """One run in a scratch folder (a Ray worker's); its metrics and files (relative path → bytes)."""
    from mechscope.real.lm_command import _lm_decompose

    scratch = Path(tempfile.mkdtemp(prefix="mechscope-lm-run-"))
    try:
        metrics = _lm_decompose(dataclasses.replace(run, out=scratch))
        files = {str(p.relative_to(scratch)): p.read_bytes() for p in scratch.rglob("*")
                 if p.is_file() and "activations" not in p.parts}  # fmt: skip
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return metrics, files


def _land(directory: Path, files: dict[str, bytes]) -> None:
    """A worker's run lands as a unit: written beside it, then renamed into place."""
    work = directory.parent / f".{directory.name}.partial"
    shutil.rmtree(work, ignore_errors=True)
    for rel, data in files.items():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_bytes(data)
    shutil.rmtree(directory, ignore_errors=True)
    work.rename(directory)


def run_sweep(
    base: Run, grid: list[dict[str, Any]], out: Path, backend: str = "local"
) -> list[dict[str, Any]]:
    """Every grid point as an lm-decompose run under `out`; returns one row per run."""
    from mechscope.real.lm_command import _lm_decompose

    if backend not in ("local", "ray"):
        raise ConfigError(f"unknown --backend {backend!r}; allowed: local, ray")
    runs = {run_name(o): dataclasses.replace(base, **o, out=out / run_name(o)) for o in grid}
    todo = {n: r for n, r in runs.items() if not (r.out / "metrics.json").is_file()}
    if backend == "ray" and todo:
        import ray

        from mechscope.bench.ray_backend import check_ray

        check_ray()
        if not ray.is_initialized():
            ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
        remote = ray.remote(num_cpus=1)(_in_scratch)
        pending = {remote.remote(r): n for n, r in todo.items()}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                name = pending.pop(ref)
                _, files = ray.get(ref)
                _land(runs[name].out, files)
                print(f"lm-sweep: {name} done on Ray", file=sys.stderr, flush=True)
    else:
        for name, r in todo.items():
            print(f"lm-sweep: {name}", file=sys.stderr, flush=True)
            _lm_decompose(r)
    rows = []
    for name, r in runs.items():
        m = json.loads((r.out / "metrics.json").read_text())
        rows.append({"run": name, **{k: m.get(k) for k in (*COLUMNS, "samples_seen")}})
    return rows


def sweep_table(rows: list[dict[str, Any]]) -> str:
    """A markdown table: one row per run, the splice metrics as columns."""
    cols = [c for c in COLUMNS if any(r.get(c) is not None for r in rows)]
    lines = ["| run | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for r in rows:
        cells = [
            f"{r[c]:.4g}" if isinstance(r.get(c), float) else ("–" if r.get(c) is None else str(r[c]))
            for c in cols
        ]
        lines.append(f"| {r['run']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def lm_sweep(
    site: Annotated[str, Opt(help="module to decompose (as lm-decompose)")],
    out: Annotated[Path, Opt(help="sweep directory: one run directory per grid point")],
    grid: Annotated[list[str], Opt(help="KEY=V1,V2,… (repeat for more axes); keys: lm-decompose settings")],
    model: Annotated[str, Opt()] = "local:demo",
    method: Annotated[str, Opt()] = "sae-topk",
    steps: Annotated[int | None, Opt(help="[2000]; spd [600]")] = None,
    tokens: Annotated[int, Opt()] = 1_000_000,
    backend: Annotated[str, Opt(help="local or ray")] = "local",
    dashboard: Annotated[bool, Opt(help="write each run's dashboard/")] = False,
) -> None:
    """Run lm-decompose over a grid of settings (locally or as Ray tasks) and tabulate the splice metrics."""
    from mechscope.files import atomic_text
    from mechscope.real.lm_command import Run, _user_errors

    def go() -> None:
        spd = method == "spd"
        base = Run(site=site, out=out, model=model, method=method, steps=steps or (600 if spd else 2_000),
                   n_latents=256 if spd else 1_024, batch_size=16 if spd else 1_024, tokens=tokens, dashboard=dashboard)  # fmt: skip
        rows = run_sweep(base, parse_grid(grid), out, backend)
        table = sweep_table(rows)
        atomic_text(out / "sweep.json", json.dumps(rows, indent=1))
        atomic_text(out / "sweep.md", table + "\n")
        print(table)

    _user_errors(go)
