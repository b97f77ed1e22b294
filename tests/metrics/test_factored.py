"""Factored parameter truth (metrics/factored.py) scores what the dense truth scores, in little memory."""

from __future__ import annotations

import math
import time

import pytest
import torch
from torch import Tensor

from mechscope.core import GroundTruth, Mechanism
from mechscope.decompose.oracle import OracleDecomposition, build_oracle
from mechscope.decompose.random_components import build_random
from mechscope.metrics import factored as fz
from mechscope.metrics import recovery as rec
from mechscope.metrics import score
from mechscope.metrics.eval_sets import eval_sets
from mechscope.metrics.matching import parameter_similarity
from mechscope.zoo import get_task
from mechscope.zoo.stress import StressModel
from mechscope.zoo.synth_sae_bench import SynthConfig, SynthSAEBenchTask

pytestmark = pytest.mark.usefixtures("private_cache")


def densified(truth: GroundTruth) -> GroundTruth:
    """The same truth with every factored parameter mechanism stored as its dense matrix."""
    mechs = [
        Mechanism(m.name, m.space, m.site, m.matrix().clone(), m.rank, m.rule, m.feature, m.read)
        if m.factors is not None
        else m
        for m in truth.mechanisms
    ]
    return GroundTruth(mechs, truth.n_features, list(truth.represented), hierarchy=list(truth.hierarchy))


class DenseOracle(OracleDecomposition):
    """The oracle without its factors: the scorer must contract dense components with factored truth."""

    def factors(self, site: str) -> tuple[Tensor, Tensor] | None:
        return None


def assert_same(a: object, b: object, path: str = "") -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (path, set(a) ^ set(b))  # type: ignore[arg-type]
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")  # type: ignore[index]
    elif isinstance(a, float):
        assert isinstance(b, float) and math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6), (path, a, b)
    else:
        assert a == b, (path, a, b)


def test_factored_truth_scores_as_the_dense_one() -> None:
    task = SynthSAEBenchTask(SynthConfig(n_features=96, d=16, roots=1, depth=2), "synth-factored-test")
    target = task.make_target(0)
    truth = task.ground_truth(target)
    assert all(m.factors is not None and m.direction.is_meta for m in truth.in_space("parameter"))
    dense = densified(truth)
    assert torch.allclose(torch.stack([m.direction for m in dense.in_space("parameter")]).sum(0), target.W.weight)
    oracle = build_oracle(target, truth)
    assert torch.allclose(oracle.components("W"), build_oracle(target, dense).components("W"), atol=1e-6)
    random = build_random(target, truth, torch.Generator().manual_seed(3))
    sets = eval_sets(task, 1024)
    for dec in (oracle, DenseOracle(target, oracle.param, oracle.act), random):
        got = score(dec, task, truth, sets=sets, pgd_steps=0).metrics
        assert_same(got, score(dec, task, dense, sets=sets, pgd_steps=0).metrics)
        assert got["recovery_space"] == "parameter" and "mmcs_colwise" in got and "absorption" in got
        assert math.isclose(got["mmcs"], 1.0, abs_tol=1e-5) == (dec is not random)


def test_low_rank_inner_products_match_the_dense_ones() -> None:
    g = torch.Generator().manual_seed(0)
    T = fz.LowRank(torch.randn(7, 5, 2, generator=g).double(), torch.randn(7, 9, 2, generator=g).double())
    P = fz.LowRank(torch.randn(4, 5, 3, generator=g).double(), torch.randn(4, 9, 3, generator=g).double())
    want = parameter_similarity(P.dense(), T.dense())
    assert torch.allclose(fz.similarity(P, T), want, atol=1e-6)
    assert torch.allclose(fz.similarity(P.dense().float(), T), want, atol=1e-6)
    assert torch.allclose(fz.norms(T), T.dense().flatten(1).norm(dim=1))
    Q = torch.linalg.qr(torch.randn(9, 4, generator=g).double()).Q
    assert torch.allclose(fz.similarity(P.read(Q), T.read(Q)), parameter_similarity(P.dense() @ Q, T.dense() @ Q), atol=1e-6)
    # column-wise: single-column truths u e_jᵀ (one-hot reads) against the dense definition
    cols = fz.LowRank(torch.randn(3, 5, 1, generator=g).double(), torch.eye(9).double()[:, [1, 4, 6]].T.unsqueeze(-1))
    a, b = fz.colwise(P, cols), rec.colwise(P.dense(), cols.dense())
    assert a is not None and b is not None
    assert all(math.isclose(x, y, rel_tol=1e-9) for x, y in zip(a.cos + a.l2r, b.cos + b.l2r, strict=True))
    assert fz.colwise(P, T) is None  # a truth spread over several columns has no column-wise score


def test_4k_truth_fits_in_a_small_memory_budget() -> None:
    """synth-sae-bench-4k's truth dense is 4,096 × 192 × 4,096 floats (≈ 13 GB); factored ≈ 70 MB."""
    task = get_task("synth-sae-bench-4k")
    model = StressModel(4096, 192)  # the truth only reads W: a random one stands in for the built target
    t0 = time.perf_counter()
    truth = task.ground_truth(model)
    storages: dict[int, int] = {}
    for m in truth.mechanisms:
        for t in (m.direction, m.read, *(m.factors or ())):
            if t is not None and not t.is_meta:
                storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    total = sum(storages.values())
    assert len(truth.in_space("parameter")) == 4096 and total < 2**30, total
    assert time.perf_counter() - t0 < 20
    m = truth.in_space("parameter")[5]
    assert torch.equal(m.matrix()[:, 5], model.W.weight.detach()[:, 5]) and float(m.matrix()[:, :5].abs().sum()) == 0.0
