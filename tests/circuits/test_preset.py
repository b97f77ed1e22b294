"""The `circuits` bench preset plans (every setting lands on a real field) over the circuit tasks."""

from pathlib import Path

from mechscope.bench.grid import plan_bench
from mechscope.bench.presets import get_preset
from mechscope.zoo import TASKS


def test_circuits_preset_plans(tmp_path: Path) -> None:
    preset = get_preset("circuits")
    assert all(t in TASKS for t in preset.tasks) and "tracr-reverse" in preset.tasks
    plan_bench(tmp_path / "bench", preset="circuits", tasks=["boolean-circuits", "tracr-sort"], methods=None, seeds=1)
