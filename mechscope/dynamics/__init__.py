"""Fixed and slow points of recurrent networks, their linearisation, and ground-truth scores.

    from mechscope.dynamics import as_step, find_fixed_points, FinderConfig
    step = as_step(model)                     # nn.RNN / GRU / LSTM (or cells), or a model with step(h, u)
    fp = find_fixed_points(step, states, u, FinderConfig(), torch.Generator().manual_seed(0))
    fp.points, fp.kinds                       # [K, n]; "stable" / "saddle" / "unstable" / "marginal"

`run_fixed_points` (in `command`) is the whole `mechscope fixed-points` analysis.
"""

from mechscope.dynamics.finder import FinderConfig, FixedPoints, NoFixedPointsError, find_fixed_points
from mechscope.dynamics.linearize import Linearization, jacobians, linearize
from mechscope.dynamics.wrappers import StepFunction, as_step

__all__ = [
    "FinderConfig",
    "FixedPoints",
    "Linearization",
    "NoFixedPointsError",
    "StepFunction",
    "as_step",
    "find_fixed_points",
    "jacobians",
    "linearize",
]
