"""Which tasks have a known circuit, and the decompositions a circuit table compares.

- `circuit_truth(task, target)`: the task's own `circuit_truth` (boolean-circuits), or the
  residual-MLP derivation (`resid_mlp_truth.py`); a one-line error for tasks without one.
- `fit_for_circuits(name, target, task, seed, ...)`: a multi-site decomposition by name —
  `sae-topk` fits one TopK SAE per MLP output (the "SAE at every site" graph), `neurons` is the
  neuron basis (no fit), every other name is a registered method fitted blind.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from mechscope.circuits.neurons import neuron_decomposition
from mechscope.circuits.resid_mlp_truth import resid_mlp_circuit
from mechscope.circuits.truth import CircuitTruth
from mechscope.core import Task
from mechscope.decompose.base import Decomposition
from mechscope.decompose.dictionary_decomposition import DictionaryDecomposition
from mechscope.decompose.registry import FitContext, fit_blind, get_method


def circuit_truth(task: Task, target: nn.Module) -> CircuitTruth:
    own = getattr(task, "circuit_truth", None)
    if callable(own):
        truth = own(target)
        assert isinstance(truth, CircuitTruth)
        return truth
    if task.family == "resid-mlp":
        return resid_mlp_circuit(target, task.ground_truth(target))
    raise ValueError(f"task {task.name!r} has no known circuit; circuit tasks: boolean-circuits, resid-mlp-*")


def fit_for_circuits(name: str, target: nn.Module, task: Task, seed: int, sets: dict[str, Any] | None = None) -> Decomposition:
    """The decomposition `name` of `target`, with components at every MLP of `task`."""
    sets = dict(sets or {})
    if name == "neurons":
        return neuron_decomposition(target, task.mlp_sites())
    spec = get_method(name)
    ctx = FitContext(seed=seed)
    if name.startswith("sae-"):
        coders = {}
        for i, (_, site) in enumerate(task.mlp_sites()):
            cfg = spec.Cfg(**{**sets, "site": site})
            dec = fit_blind(spec, target, task, cfg, FitContext(seed=seed * 101 + i))
            assert isinstance(dec, DictionaryDecomposition)
            coders.update(dec.coders)
        return DictionaryDecomposition(target, coders)
    if name == "spd" and "modules" not in sets:
        sets["modules"] = [p for pair in task.mlp_sites() for p in pair]
    return fit_blind(spec, target, task, spec.Cfg(**sets), ctx)
