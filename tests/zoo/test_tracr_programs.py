"""Compiled (tracr) programs: the torch module reproduces tracr's residual stream, computes the
program, and its true circuit is calibrated (oracle 1, random ≈ 0.5)."""

import pytest
import torch

from mechscope.circuits.score import calibration_aurocs
from mechscope.zoo import get_task
from mechscope.zoo.tracr_programs import PROGRAMS, CompiledProgramTask


@pytest.mark.parametrize("program", PROGRAMS)
def test_torch_module_matches_tracr(program: str) -> None:
    task = get_task(f"tracr-{program}")
    assert isinstance(task, CompiledProgramTask)
    model = task.make_target(0)
    for n in range(1, task.layout["max_seq_len"] + 1):
        ids = task.tensors[f"check/len{n}/tokens"]
        x = torch.nn.functional.one_hot(ids, task.n_features).float()
        ref = task.tensors[f"check/len{n}/residual"]
        torch.testing.assert_close(model.residual(x), ref, atol=1e-3, rtol=1e-4)
        # padded to the full length, the real positions are unchanged (PAD keys are masked)
        T = task.layout["max_seq_len"] + 1
        pad = torch.full((ids.shape[0], T - ids.shape[1]), task.layout["tokens"].index("PAD"))
        xp = torch.nn.functional.one_hot(torch.cat([ids, pad], 1), task.n_features).float()
        torch.testing.assert_close(model.residual(xp)[:, : n + 1], ref, atol=1e-3, rtol=1e-4)
        decoded = model(x)[:, 1:].argmax(-1)
        assert torch.equal(decoded, task.tensors[f"check/len{n}/decoded"])


def test_programs_compute_reverse_and_sort() -> None:
    for program, fn in (("reverse", lambda s: s[::-1]), ("sort", sorted)):
        task = get_task(f"tracr-{program}")
        assert isinstance(task, CompiledProgramTask)
        model = task.make_target(0)
        seqs = [["3", "1", "2"], ["2", "2", "1", "3", "1"], ["1"]]
        y = model(task.encode(seqs)).argmax(-1)
        outs = task.layout["outputs"]
        for s, row in zip(seqs, y, strict=True):
            assert [outs[int(i)] for i in row[1 : len(s) + 1]] == fn(s), program


@pytest.mark.parametrize("program", PROGRAMS)
def test_compiled_truth_calibration(program: str) -> None:
    task = get_task(f"tracr-{program}")
    truth = task.circuit_truth(task.make_target(0))  # type: ignore[attr-defined]
    assert truth.edges and truth.excluded and not (truth.edges & truth.excluded)
    names = {(truth.nodes[p].name, truth.nodes[q].name) for p, q in truth.edges}
    if program == "reverse":  # the documented chain: BOS → length → opp_idx → opp_idx-1; tokens → out
        assert ("tok:BOS", "length_5:3") in names and ("length_5:3", "opp_idx_4:1") in names
        assert ("opp_idx_4:1", "opp_idx-1_3:0") in names and ("tok:2", "out:2") in names
        assert ("tok:2", "out:1") not in names
    oracle, random_mean = calibration_aurocs(truth, n_random=20)
    assert oracle == 1.0 and abs(random_mean - 0.5) < 0.05
