"""Step functions: any recurrent model seen as one map h' = F(h, u) on a flat state.

The finder only needs `step(h, u) -> h` on batches (`h: [B, n]`, `u: [B, m]`). This module builds
that map for the recurrent layers torch ships — `nn.RNN`, `nn.GRU`, `nn.LSTM` (any number of
layers) and their cells — by re-writing the cell equations from the module's own weights, so the
map is differentiable, batched and works under `torch.func` (the fused cuDNN/VF kernels do not).
An LSTM's state is its pair (h, c) concatenated; a stacked layer's state is all layers
concatenated. Models that already expose `step(h, u)` with `state_size` and `input_size` (the
linear RNN, the selective SSM, the trained SSM / DeltaNet stacks of `zoo.recurrent_cells`, whose
state is all layers' states joined) are used as they are, cast to float64, with their
`readout_slice` if they have one.

    step = as_step(model)              # a StepFunction
    h_next = step(h, u)                # [B, n]
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

RECURRENT = (nn.RNN, nn.GRU, nn.LSTM, nn.RNNCell, nn.GRUCell, nn.LSTMCell)


@dataclass(frozen=True)
class StepFunction:
    """h' = F(h, u) on flat batched states, with the sizes the finder checks against."""

    fn: Callable[[Tensor, Tensor], Tensor]
    state_size: int
    input_size: int
    hidden_size: int
    """The part of the state a readout sees (LSTM: h without c; stacked: the last layer's h)."""
    readout_slice: tuple[int, int]
    """state[..., a:b] is what the model's readout reads."""

    def __call__(self, h: Tensor, u: Tensor) -> Tensor:
        return self.fn(h, u)


def find_recurrent(model: nn.Module) -> nn.Module:
    """The one recurrent layer inside `model`, or a one-line ValueError naming what is allowed."""
    if isinstance(model, RECURRENT):
        return model
    found = [m for m in model.modules() if isinstance(m, RECURRENT)]
    if len(found) == 1:
        return found[0]
    name = type(model).__name__
    if not found:
        raise ValueError(
            f"model {name} is not recurrent: it has no nn.RNN/GRU/LSTM (or cell) and no step(h, u) method"
        )
    raise ValueError(f"model {name} has {len(found)} recurrent layers; fixed points need exactly one")


def as_step(model: nn.Module, dtype: torch.dtype = torch.float64) -> StepFunction:
    """The step function of `model`, computed in `dtype` (float64 by default: Newton and the
    marginal band at 1 − 1e-3 both need more than float32's 7 digits)."""
    own_step = getattr(model, "step", None)
    if callable(own_step) and hasattr(model, "state_size") and hasattr(model, "input_size"):
        n, m = int(model.state_size), int(model.input_size)  # type: ignore[arg-type]
        if any(p.is_floating_point() and p.dtype != dtype for p in model.parameters()):
            # a trained float32 stack: analyse a float64 copy (the caller's model is untouched)
            own_step = getattr(copy.deepcopy(model).to(dtype), "step")  # noqa: B009
        a, b = getattr(model, "readout_slice", (0, n))  # a stack's readout reads only its output part
        return StepFunction(own_step, n, m, b - a, (int(a), int(b)))
    rnn = find_recurrent(model)
    if getattr(rnn, "bidirectional", False):
        raise ValueError(f"model {type(model).__name__} is bidirectional: it has no forward-time state")
    if getattr(rnn, "proj_size", 0):
        raise ValueError("LSTM with proj_size is not supported; use proj_size=0")
    layers = _layer_weights(rnn, dtype)
    hidden = int(rnn.hidden_size)  # type: ignore[arg-type]
    kind = _kind(rnn)
    per_layer = 2 * hidden if kind == "lstm" else hidden
    n_layers = len(layers)
    nonlin = torch.relu if getattr(rnn, "nonlinearity", "tanh") == "relu" else torch.tanh

    def fn(h: Tensor, u: Tensor) -> Tensor:
        outs = []
        x = u
        for i, w in enumerate(layers):
            s = h[..., i * per_layer : (i + 1) * per_layer]
            if kind == "rnn":
                s_new = nonlin(x @ w[0].T + w[2] + s @ w[1].T + w[3])
                x = s_new
            elif kind == "gru":
                s_new = _gru(x, s, w)
                x = s_new
            else:
                s_new = _lstm(x, s, w, hidden)
                x = s_new[..., :hidden]
            outs.append(s_new)
        return torch.cat(outs, dim=-1)

    last = (n_layers - 1) * per_layer
    return StepFunction(fn, n_layers * per_layer, int(rnn.input_size), hidden, (last, last + hidden))  # type: ignore[arg-type]


def _kind(rnn: nn.Module) -> str:
    if isinstance(rnn, (nn.GRU, nn.GRUCell)):
        return "gru"
    if isinstance(rnn, (nn.LSTM, nn.LSTMCell)):
        return "lstm"
    return "rnn"


def _layer_weights(rnn: nn.Module, dtype: torch.dtype) -> list[tuple[Tensor, Tensor, Tensor, Tensor]]:
    """(W_ih, W_hh, b_ih, b_hh) per layer, detached and cast; absent biases become zeros."""
    cells = isinstance(rnn, (nn.RNNCell, nn.GRUCell, nn.LSTMCell))
    n_layers = 1 if cells else int(rnn.num_layers)  # type: ignore[arg-type]
    out = []
    for layer in range(n_layers):
        suffix = "" if cells else f"_l{layer}"
        w_ih = getattr(rnn, f"weight_ih{suffix}").detach().to(dtype)
        w_hh = getattr(rnn, f"weight_hh{suffix}").detach().to(dtype)
        b_ih = getattr(rnn, f"bias_ih{suffix}", None)
        b_hh = getattr(rnn, f"bias_hh{suffix}", None)
        zeros = torch.zeros(w_ih.shape[0], dtype=dtype)
        out.append(
            (
                w_ih,
                w_hh,
                zeros if b_ih is None else b_ih.detach().to(dtype),
                zeros if b_hh is None else b_hh.detach().to(dtype),
            )
        )
    return out


def _gru(x: Tensor, h: Tensor, w: tuple[Tensor, Tensor, Tensor, Tensor]) -> Tensor:
    """torch's GRU: r, z gates; the candidate's hidden term is gated by r after its bias."""
    gi = x @ w[0].T + w[2]  # (B, 3H): r, z, n
    gh = h @ w[1].T + w[3]
    i_r, i_z, i_n = gi.chunk(3, dim=-1)
    h_r, h_z, h_n = gh.chunk(3, dim=-1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return (1 - z) * n + z * h


def _lstm(x: Tensor, hc: Tensor, w: tuple[Tensor, Tensor, Tensor, Tensor], hidden: int) -> Tensor:
    """torch's LSTM on the concatenated state (h, c) -> (h', c')."""
    h, c = hc[..., :hidden], hc[..., hidden:]
    gates = x @ w[0].T + w[2] + h @ w[1].T + w[3]  # (B, 4H): i, f, g, o
    i, f, g, o = gates.chunk(4, dim=-1)
    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h_new = torch.sigmoid(o) * torch.tanh(c_new)
    return torch.cat([h_new, c_new], dim=-1)


def readout_fn(model: nn.Module, step: StepFunction) -> Callable[[Tensor], Tensor]:
    """Maps states [K, n] to the model's outputs (its `readout` Linear, else the readout slice)."""
    a, b = step.readout_slice
    lin = getattr(model, "readout", None)
    if isinstance(lin, nn.Linear):
        w, bias = lin.weight.detach().double(), lin.bias.detach().double()
        return lambda h: h[..., a:b].double() @ w.T + bias
    return lambda h: h[..., a:b]
