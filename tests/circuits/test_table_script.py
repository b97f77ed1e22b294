"""benchmarks/circuits_table.py: its table never averages rows of different settings, and
--from-run scores a decompose run only when it is the fit the row would have made."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from mechscope.decompose.registry import get_method
from mechscope.zoo import get_task


def script() -> ModuleType:
    path = Path(__file__).parents[2] / "benchmarks" / "circuits_table.py"
    spec = importlib.util.spec_from_file_location("circuits_table", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["circuits_table"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_table_keeps_settings_apart() -> None:
    ct = script()
    row = {"task": "resid-mlp-3l", "method": "clt-topk", "edge_auroc": 0.6, "cpr": 0.9, "cmd": 0.1, "node_recall": 0.4}
    rows = [{**row, "seed": 0, "settings": {"steps": 400}},
            {**row, "seed": 0, "settings": {}, "edge_auroc": 0.8},
            {**row, "seed": 1, "settings": {}, "edge_auroc": 0.7},
            {**row, "seed": 1, "settings": {}, "edge_auroc": 0.9}]  # fmt: skip  (a rerun of seed 1 replaces it)
    lines = ct.table(rows, ["resid-mlp-3l"], ["clt-topk", "spd"]).splitlines()
    assert "| clt-topk | steps=400 | 1 | 0.600 |" in lines[2]
    assert "| clt-topk | defaults | 2 | 0.850 ± 0.071 |" in lines[3]
    assert "| spd | – | 0 | not run |" in lines[4]
    # rows from before the settings field read as this table's settings: boolean SPD ran 2,000 steps
    assert ct.settings("boolean-circuits", "spd", None) == {"steps": 2000}
    assert ct.settings("resid-mlp-2l", "spd", None) == {}
    assert ct.settings("resid-mlp-2l", "neurons", 400) == {}


def test_from_run_refuses_a_different_fit(tmp_path: Path) -> None:
    ct = script()
    task = get_task("resid-mlp-2l")
    method_config = get_method("spd").Cfg().resolved(task).model_dump()
    body = {"task": "resid-mlp-2l", "method": "spd", "seed": 1, "target_seed": 1, "method_config": method_config}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(body))
    with pytest.raises(ValueError, match="this row is"):
        ct.reuse_run(tmp_path, "resid-mlp-2l", "spd", 0, {}, None)  # another seed
    with pytest.raises(ValueError, match="lr_components"):
        body["method_config"] = {**method_config, "lr_components": 5e-4}
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(body))
        ct.reuse_run(tmp_path, "resid-mlp-2l", "spd", 1, {}, None)


def test_from_run_reads_a_table_saved_fit_only_for_its_own_row(tmp_path: Path) -> None:
    ct = script()
    settings = get_method("spd").Cfg().resolved(get_task("resid-mlp-2l")).model_dump()
    saved = tmp_path / "resid-mlp-2l" / "spd" / "seed1" / "decomposition"
    saved.mkdir(parents=True)
    (saved / "decomposition.json").write_text(json.dumps({"kind": "spd", "config": {"settings": {**settings, "C": 99}}}))
    with pytest.raises(ValueError, match="must be at"):
        ct.reuse_run(saved, "resid-mlp-2l", "spd", 0, {}, None)  # saved for seed 1, not 0
    with pytest.raises(ValueError, match="'C': \\(99, "):
        ct.reuse_run(saved, "resid-mlp-2l", "spd", 1, {}, None)
