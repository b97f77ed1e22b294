"""Every registered method fits and scores on a CUDA device (`gpu` marker: skipped without one).

The same test runs on the CPU in the default suite, so the code path it drives — fit through
`fit_blind` with `FitContext(device=...)`, then the project's scorer — is exercised everywhere;
on a GPU it also checks that what was trained lives on that device."""

from __future__ import annotations

import math

import pytest
import torch

from mechscope.decompose.registry import METHODS, FitContext, MethodSpec, fit_blind, get_method
from mechscope.metrics import score
from mechscope.zoo import get_task

get_method("oracle")  # fill the registry before parametrising over it
TASKS = ("tms-5-2", "resid-mlp-1l")
"""The first of these that a method applies to is where it is smoke-tested."""
QUICK = {"steps": 20, "batch_size": 64, "buffer_size": 1_024}


def _task_for(spec: MethodSpec) -> str:
    for name in TASKS:
        if spec.applies_to(get_task(name)) is None:
            return name
    raise AssertionError(f"no smoke-test task for method {spec.name!r}; add one to TASKS")


def _smoke(method: str, device: str) -> None:
    spec = get_method(method)
    task = get_task(_task_for(spec))
    quick = {k: v for k, v in QUICK.items() if k in spec.Cfg.model_fields}
    if "faithfulness_warmup_steps" in spec.Cfg.model_fields:
        quick["faithfulness_warmup_steps"] = 5
    cfg = spec.Cfg.model_validate(quick)
    target = task.make_target(0).to(device)
    dec = fit_blind(spec, target, task, cfg, FitContext(seed=0, device=device))
    for site in dec.sites:
        for space in ("parameter", "activation"):
            d = dec.directions(site, space)  # type: ignore[arg-type]
            assert d is None or d.device.type == torch.device(device).type, (method, site, space, d.device)
    metrics = score(dec, task).metrics
    assert math.isfinite(metrics["mmcs"]) and math.isfinite(metrics["faithfulness"]), metrics


@pytest.mark.gpu
@pytest.mark.parametrize("method", sorted(m for m, s in METHODS.items() if s.family != "dynamics"))
def test_every_method_fits_and_scores_on_cuda(method: str, shared_cache: None) -> None:
    _smoke(method, "cuda")


@pytest.mark.parametrize("method", sorted(m for m, s in METHODS.items() if s.family != "dynamics"))
def test_every_method_fits_and_scores_on_cpu_through_the_same_path(method: str, shared_cache: None) -> None:
    _smoke(method, "cpu")
