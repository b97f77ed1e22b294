"""The allowed range of every kind of numeric setting, as types the configs declare.

A config field typed `Prob` or `LearningRate` rejects a bad value when the config is built, so a
user's `--set feature_prob=1.5` fails at once with one line naming the key, the value and the range
— never minutes later inside torch, never as a silently meaningless run.

    class TMSConfig(Config):
        feature_prob: Prob = 0.05
        steps: Steps = 10_000
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

MAX_STEPS = 10_000_000
"""More optimisation steps than any run here needs: a larger value is a typo, not a plan."""
MAX_BATCH = 1 << 20

Prob = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
"""A probability in (0, 1]."""
Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
"""A fraction in [0, 1]."""
Count = Annotated[int, Field(ge=1)]
"""A size or count ≥ 1."""
Natural = Annotated[int, Field(ge=0)]
"""A count ≥ 0."""
Steps = Annotated[int, Field(ge=1, le=MAX_STEPS)]
"""Optimisation steps, 1 … 10,000,000."""
BatchSize = Annotated[int, Field(ge=1, le=MAX_BATCH)]
"""Examples per step, 1 … 1,048,576."""
LearningRate = Annotated[float, Field(gt=0, le=10, allow_inf_nan=False)]
"""A finite learning rate in (0, 10]."""
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
"""A finite coefficient ≥ 0 (weight decay, loss weights)."""
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
"""A finite value > 0."""
