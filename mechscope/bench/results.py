"""The bench's results table: `results.parquet`, one row per cell, written atomically.

Columns (DESIGN.md): `task`, `method`, `seed`, `target_seed`, `config_hash`, `status`
(`ok` / `n/a` / `failed`), then — our additions — `knob` (the cell's point on a preset's sparsity
sweep, e.g. "k=4"; "" when not swept) and `knob_default` (whether that point is the sweep's default;
null when not swept, and for a *split* sweep's cells, each reported as its own method
`method@knob`, see `method_label`), then what the method is: `family` (its registry family,
"activation", "parameter", …), `peer` (trained by another library's own code), `peer_of` (the
mechscope method a peer is shown beside; null for ours), `sizing` ("blind" / "oracle" for a
dictionary, null where the method has no such setting), `samples_seen` (steps × batch the fit
consumed, `budget.py`), `converged` (stress rows: whether the method reaches the baseline bar on
`stress-iid` at this budget, `convergence.py`; null elsewhere), then every metric key flattened
with dots (`spaces.parameter.mmcs`, `sites.W.l0`; null where a cell has no such key), then `wall_s`,
`peak_mem_mb`. `reason` holds why a cell is `n/a` or how it failed. Lists are stored as JSON strings. Rows are ordered by the grid, and
column types are inferred from the values alone, so the same cells give the same file whichever
order they finished in — what lets a resumed bench equal an uninterrupted one.

The file is replaced with `os.replace` from a temp file in the same folder: a reader sees the old
table or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mechscope.files import atomic_write

RESULTS = "results.parquet"
KEY_COLUMNS = ["task", "method", "seed", "target_seed", "config_hash", "status"]
KNOB_COLUMNS = ["knob", "knob_default"]
METHOD_COLUMNS = ["family", "peer", "peer_of", "sizing", "samples_seen", "converged"]
TAIL_COLUMNS = ["wall_s", "peak_mem_mb"]
_SKIP = {"task", "method", "seed", "target_seed", "status", "error", "reason", "config_hash", *KNOB_COLUMNS,
         *METHOD_COLUMNS, *TAIL_COLUMNS}


def method_label(row: Mapping[str, Any]) -> str:
    """The name a row is reported under: its method, or `method@knob` for a cell of a split sweep
    (a knob with no default: `saelens-topk@preset=short` beside `saelens-topk@preset=default`)."""
    knob = row.get("knob") or ""
    return f"{row['method']}@{knob}" if knob and row.get("knob_default") is None else str(row["method"])


def peer_of(name: str) -> str | None:
    """The mechscope method a registered peer is shown beside (None for ours): the spec's own
    `peer_of` where it has one, else the naming rule `<library>-<variant>` → `sae-<variant>`
    (`standard`, SAELens's name for ReLU + L1, → `sae-relu`)."""
    from mechscope.decompose.registry import METHODS

    spec = METHODS.get(name)
    if spec is None or not spec.peer:
        return None
    own = getattr(spec, "peer_of", None)
    if isinstance(own, str) and own:
        return own
    variant = name.split("-", 1)[-1]
    return "sae-relu" if variant == "standard" else f"sae-{variant}"


def method_columns(name: str, config: Any = None) -> dict[str, Any]:
    """`family`, `peer`, `peer_of`, `sizing` of a registered method (and its resolved config)."""
    from mechscope.decompose.registry import METHODS

    spec = METHODS.get(name)
    return {"family": spec.family if spec else None, "peer": bool(spec and spec.peer),
            "peer_of": peer_of(name), "sizing": getattr(config, "sizing", None)}


def flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested metrics → dotted keys; lists become JSON strings."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, list | tuple):
            out[name] = json.dumps(value)
        else:
            out[name] = value
    return out


def make_row(metrics: Mapping[str, Any], config_hash: str, knob: str = "",
             knob_default: bool | None = None, method: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The table row of one cell from its metrics.json body, its point on a knob sweep and what
    the method is (`method_columns`)."""
    flat = flatten({k: v for k, v in metrics.items() if k not in _SKIP})
    about = dict(method or {})
    return {
        "task": metrics["task"],
        "method": metrics["method"],
        "seed": int(metrics["seed"]),
        "target_seed": int(metrics["target_seed"]),
        "config_hash": config_hash,
        "status": metrics.get("status", "ok"),
        "knob": knob,
        "knob_default": knob_default,
        **{k: about.get(k) for k in ("family", "peer", "peer_of", "sizing")},
        "samples_seen": metrics.get("samples_seen"),
        "converged": None,
        "reason": metrics.get("reason") or metrics.get("error"),
        **flat,
        "wall_s": metrics.get("wall_s"),
        "peak_mem_mb": metrics.get("peak_mem_mb"),
    }


def to_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Rows (dicts) → an arrow table with a deterministic column order and types."""
    rows = list(rows)
    fixed = {*KEY_COLUMNS, *KNOB_COLUMNS, *METHOD_COLUMNS, "reason", *TAIL_COLUMNS}
    metric_keys = sorted({k for r in rows for k in r} - fixed)
    columns = [*KEY_COLUMNS, *KNOB_COLUMNS, *METHOD_COLUMNS, "reason", *metric_keys, *TAIL_COLUMNS]
    arrays = {}
    for col in columns:
        values = [r.get(col) for r in rows]
        kind = _column_type(col, values)
        if kind == pa.string():  # mixed types: keep every value, as text
            values = [v if v is None or isinstance(v, str) else json.dumps(v) for v in values]
        arrays[col] = pa.array(values, type=kind)
    return pa.table(arrays)


def _column_type(col: str, values: list[Any]) -> pa.DataType:
    present = [v for v in values if v is not None]
    if col in ("seed", "target_seed"):
        return pa.int64()
    if col in ("knob_default", "peer", "converged"):
        return pa.bool_()
    if col in ("knob", "family", "peer_of", "sizing"):
        return pa.string()
    if col == "samples_seen":
        return pa.int64()
    if present and all(isinstance(v, bool) for v in present):
        return pa.bool_()
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pa.int64()
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return pa.float64()
    if not present and col in TAIL_COLUMNS:
        return pa.float64()
    return pa.string()


def write_results(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """Atomically (re)write the parquet table."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = to_table([{k: (v if not _needs_str(v) else str(v)) for k, v in r.items()} for r in rows])

    def write(tmp: Path) -> None:
        pq.write_table(table, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())

    atomic_write(path, write)  # a reader sees the old table or the new one; the mode follows the umask


def _needs_str(value: Any) -> bool:
    return value is not None and not isinstance(value, bool | int | float | str)


def read_results(path: str | Path) -> list[dict[str, Any]]:
    """The stored rows (empty if there is no table yet)."""
    try:
        # One open file handle: pyarrow opening the path itself may stat one version of the file and
        # read another when a writer replaces it in between.
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    try:
        rows: list[dict[str, Any]] = pq.read_table(pa.BufferReader(data)).to_pylist()
    except (pa.ArrowException, OSError, ValueError) as err:  # truncated, empty or not a parquet file
        from mechscope.config import ConfigError

        why = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(f"{str(path)!r} is not a readable results table ({why}); move it away to start "
                          "a new one") from None
    if rows and not all(k in rows[0] for k in ("task", "method", "seed", "config_hash", "status")):
        from mechscope.config import ConfigError

        raise ConfigError(f"{str(path)!r} is not a mechscope results table (no task/method/seed/config_hash "
                          "columns); move it away to start a new one")
    return rows
