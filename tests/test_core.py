"""The shared vocabulary: seed streams keep their historical values; a task's public facts are blind."""

from __future__ import annotations

import pytest
import torch

from mechscope.core import BlindFitError, TaskFacts, derive_seed, facts_of, seeded_generator
from mechscope.zoo import get_task


def _draw(gen: torch.Generator) -> torch.Tensor:
    return torch.rand(4, generator=gen)


def test_seed_streams_keep_the_values_every_cached_target_was_trained_with() -> None:
    # A one-argument generator is seeded with the seed itself; (seed, salt) is seed·1,000,003 + salt.
    assert torch.equal(_draw(seeded_generator(5)), _draw(torch.Generator().manual_seed(5)))
    assert torch.equal(_draw(seeded_generator(5, 3)), _draw(torch.Generator().manual_seed(5 * 1_000_003 + 3)))
    assert derive_seed(2, 7) == 2 * 1_000_003 + 7
    assert 0 <= derive_seed(2**62, 9) < 2**63


def test_task_facts_expose_inputs_and_sites_but_never_the_truth() -> None:
    task = get_task("resid-mlp-1l")
    facts = facts_of(task)
    assert isinstance(facts, TaskFacts) and facts_of(facts) is facts
    assert facts.name == task.name and facts.n_features == task.n_features
    assert facts.activation_sites() == task.activation_sites()
    x = facts.sample(8, torch.Generator().manual_seed(0))
    assert torch.equal(x, task.sample(8, torch.Generator().manual_seed(0)))
    with pytest.raises(BlindFitError, match="resid-mlp-1l"):
        facts.ground_truth(torch.nn.Linear(1, 1))
    control = facts_of(get_task("stress-iid-control"))
    assert control.base().name == "stress-iid"
