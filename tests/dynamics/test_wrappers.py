"""Step functions rebuilt from torch's recurrent layers reproduce the layers exactly."""

import pytest
import torch
from torch import nn

from mechscope.dynamics.wrappers import as_step

G = torch.Generator().manual_seed(0)


@pytest.mark.parametrize("layer", [nn.RNN, nn.GRU, nn.LSTM])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_step_matches_the_torch_layer(layer: type[nn.Module], num_layers: int) -> None:
    torch.manual_seed(0)
    rnn = layer(3, 5, num_layers=num_layers, batch_first=True).double()
    step = as_step(rnn)
    lstm = layer is nn.LSTM
    assert step.state_size == num_layers * 5 * (2 if lstm else 1)
    u = torch.randn(4, 7, 3, generator=G, dtype=torch.float64)
    out, _ = rnn(u)  # (B, T, H): the last layer's h
    h = torch.zeros(4, step.state_size, dtype=torch.float64)
    for t in range(7):
        h = step(h, u[:, t])
        a, b = step.readout_slice
        assert torch.allclose(h[:, a:b], out[:, t], atol=1e-12)


@pytest.mark.parametrize("cell", [nn.RNNCell, nn.GRUCell, nn.LSTMCell])
def test_step_matches_the_torch_cell(cell: type[nn.Module]) -> None:
    torch.manual_seed(1)
    c = cell(3, 4).double()
    step = as_step(c)
    h0 = torch.randn(2, step.state_size, generator=G, dtype=torch.float64)
    u = torch.randn(2, 3, generator=G, dtype=torch.float64)
    if cell is nn.LSTMCell:
        ref_h, ref_c = c(u, (h0[:, :4], h0[:, 4:]))
        ref = torch.cat([ref_h, ref_c], dim=-1)
    else:
        ref = c(u, h0)
    assert torch.allclose(step(h0, u), ref, atol=1e-12)


def test_relu_rnn_and_a_wrapped_model() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.RNN(2, 3, nonlinearity="relu", bias=False)
            self.readout = nn.Linear(3, 1)

    net = Net()
    step = as_step(net)
    h = torch.randn(2, 3, dtype=torch.float64)
    u = torch.randn(2, 2, dtype=torch.float64)
    w_ih, w_hh = net.rnn.weight_ih_l0.double(), net.rnn.weight_hh_l0.double()
    assert torch.allclose(step(h, u), torch.relu(u @ w_ih.T + h @ w_hh.T))


def test_not_recurrent_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="not recurrent"):
        as_step(nn.Sequential(nn.Linear(3, 3), nn.ReLU()))
    with pytest.raises(ValueError, match="bidirectional"):
        as_step(nn.GRU(2, 2, bidirectional=True))
