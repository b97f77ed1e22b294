"""results.parquet: flattening, deterministic schema, atomic replacement."""

from __future__ import annotations

import threading
from pathlib import Path

import pyarrow as pa

from mechscope.bench.results import flatten, make_row, read_results, to_table, write_results


def _metrics(seed: int, status: str = "ok") -> dict[str, object]:
    body: dict[str, object] = {"task": "tms-5-2", "method": "oracle", "seed": seed, "target_seed": seed,
                               "status": status}
    if status == "ok":
        body |= {"mmcs": 0.5 + seed, "n_alive": 5, "spaces": {"parameter": {"mmcs": 1.0}}, "represented": [0, 1],
                 "wall_s": 0.1, "peak_mem_mb": 10.0}
    else:
        body["reason"] = "does not apply"
    return body


def test_flatten_nests_with_dots_and_lists_as_json() -> None:
    assert flatten({"a": 1, "spaces": {"parameter": {"mmcs": 0.9}}, "r": [1, 2]}) == {
        "a": 1, "spaces.parameter.mmcs": 0.9, "r": "[1, 2]"}


def test_schema_is_deterministic_and_absent_metrics_are_null() -> None:
    rows = [make_row(_metrics(0), "h0"), make_row(_metrics(1, "n/a"), "h1")]
    table = to_table(rows)
    assert table.column_names[:6] == ["task", "method", "seed", "target_seed", "config_hash", "status"]
    assert table.column_names[-2:] == ["wall_s", "peak_mem_mb"]
    assert table.schema.field("mmcs").type == pa.float64()
    assert table.schema.field("n_alive").type == pa.int64()
    assert table.column("mmcs").to_pylist() == [0.5, None]
    assert to_table(list(reversed(rows))).schema == table.schema


def test_readers_never_see_a_half_written_table(tmp_path: Path) -> None:
    path = tmp_path / "results.parquet"
    write_results(path, [make_row(_metrics(0), "h")])
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        n = 1
        while not stop.is_set():
            n = n % 200 + 1
            write_results(path, [make_row(_metrics(i), "h") for i in range(n)])

    thread = threading.Thread(target=writer)
    thread.start()
    reads = 0
    try:
        for _ in range(300):
            try:
                rows = read_results(path)
                assert rows and rows[0]["seed"] == 0
                reads += 1
            except Exception as err:  # a torn file would raise here
                errors.append(err)
    finally:
        stop.set()
        thread.join()
    assert not errors and reads == 300
    assert not [p for p in tmp_path.iterdir() if p.name != "results.parquet"]  # no temp files left
