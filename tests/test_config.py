"""Settings: one parser for `--set`, per-task tables resolved once, resolved configs recorded and hashed."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mechscope.bench.run import CellRequest, resolve
from mechscope.config import Config, ConfigError, RunConfig, assign, parse_sets
from mechscope.decompose import spd_presets
from mechscope.decompose.spd import SPDConfig

NullPaths = Callable[[object], list[str]]


class _Small(Config):
    n: int = 1
    lr: float = 1e-3
    name: str = "a"
    modules: list[str] = ["W"]  # noqa: RUF012 (pydantic copies defaults)


def test_values_are_parsed_once_by_the_fields_own_types() -> None:
    sets = parse_sets(["n=3", "lr=1e-2", "name=3", "modules=[\"W\", \"identity\"]", "method.name=paper"])
    got = assign(sets, {"method": _Small}, {"method": "m"})["method"]
    assert got == {"n": 3, "lr": 1e-2, "name": "paper", "modules": ["W", "identity"]}
    assert isinstance(got["lr"], float) and isinstance(got["n"], int)
    with pytest.raises(ConfigError, match=r"bad value for m setting 'n': 'x' \("):
        assign(parse_sets(["n=x"]), {"method": _Small}, {"method": "m"})
    with pytest.raises(ConfigError, match="--set expects KEY=VALUE"):
        parse_sets(["n"])


def test_a_bare_key_in_task_and_method_is_an_error_naming_both() -> None:
    with pytest.raises(ConfigError, match=r"'lr' exists in more than one config: say which, task\.lr / method\.lr"):
        resolve(CellRequest("tms-5-2", "spd", sets=("lr=1e-3",)))
    cell = resolve(CellRequest("tms-5-2", "spd", sets=("method.lr=7e-3",)))
    assert cell.method_config.lr == 7e-3 and cell.task.config.lr != 7e-3  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r"unknown setting .bogus.; allowed: .*method.lr.*target_seed.*task.lr"):
        resolve(CellRequest("tms-5-2", "spd", sets=("bogus=1",)))


def test_target_seed_is_an_ordinary_run_setting() -> None:
    assert resolve(CellRequest("tms-5-2", "oracle", seed=4)).target_seed == 4
    assert resolve(CellRequest("tms-5-2", "oracle", seed=4, sets=("target_seed=2",))).target_seed == 2
    assert resolve(CellRequest("tms-5-2", "oracle", seed=4, sets=("run.target_seed=1",))).target_seed == 1
    with pytest.raises(ConfigError, match=r"bad value for run setting 'target_seed': '-1'"):
        resolve(CellRequest("tms-5-2", "oracle", sets=("target_seed=-1",)))
    assert RunConfig().target_seed == 0


def test_spd_settings_resolve_from_the_table_with_nonull_paths(null_paths: NullPaths) -> None:
    fast = resolve(CellRequest("tms-5-2", "spd"))
    cfg = fast.resolved_config()
    assert null_paths(cfg) == []
    m = fast.method_config
    assert isinstance(m, SPDConfig)
    assert (m.C, m.init, m.modules, m.steps, m.lr_components) == (20, "data", ["W"], 1_000, m.lr)
    assert m.resolved(fast.task) is m  # resolving a resolved config changes nothing
    paper = resolve(CellRequest("tms-5-2", "spd", sets=("preset=paper",))).method_config
    assert (paper.C, paper.steps, paper.batch_size, paper.init) == (20, 40_000, 4096, "random")  # type: ignore[attr-defined]
    ident = resolve(CellRequest("tms-5-2-id", "spd")).method_config
    assert ident.modules == ["W", "identity"]  # type: ignore[attr-defined]
    resid = resolve(CellRequest("resid-mlp-1l", "spd", sets=("method.lr=1e-2",))).method_config
    assert (resid.lr, resid.lr_components) == (1e-2, 1e-4)  # type: ignore[attr-defined]
    # A user's value wins over the table; a bench preset's soft rule sits between.
    soft = resolve(CellRequest("tms-5-2", "spd", sets=("method.C=7",), preset_sets=("method.C=9", "method.steps=5")))
    assert (soft.method_config.C, soft.method_config.steps) == (7, 5)  # type: ignore[attr-defined]


def test_a_table_change_changes_the_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    before = resolve(CellRequest("tms-5-2", "spd")).config_hash
    row = {**spd_presets.FAST["tms-5-2"], "C": 21}
    monkeypatch.setitem(spd_presets.FAST, "tms-5-2", row)
    after = resolve(CellRequest("tms-5-2", "spd"))
    assert after.method_config.C == 21 and after.config_hash != before  # type: ignore[attr-defined]


def test_fixed_points_record_their_inputs_and_task_settings(null_paths: NullPaths) -> None:
    cell = resolve(CellRequest("integrator", "fixed-points"))
    m = cell.method_config
    assert (m.keep_slow, m.q_slow, m.inputs) == (True, 1e-4, [[0.0]])  # type: ignore[attr-defined]
    assert null_paths(cell.resolved_config()) == []
    lin = resolve(CellRequest("linear-rnn", "fixed-points")).method_config
    assert len(lin.inputs) == 4 and lin.keep_slow is False  # type: ignore[attr-defined]
    assert resolve(CellRequest("tms-5-2", "fixed-points")).na_reason is not None
    assert resolve(CellRequest("linear-rnn", "spd")).na_reason is not None
