"""Reading and replacing activations of named submodules, on plain modules and a transformers model."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from mechscope.hooks import (
    SiteError,
    capture,
    get_module,
    read_activations,
    replace,
    replace_input,
    replace_output,
)


class Block(nn.Module):
    """Returns a tuple, like a transformer block: (hidden, extra)."""

    def __init__(self) -> None:
        super().__init__()
        self.mlp = nn.Linear(4, 4)

    def forward(self, hidden_states: Tensor) -> tuple[Tensor, Tensor]:
        return self.mlp(hidden_states), hidden_states.sum()


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(3, 4)
        self.block = Block()
        self.out = nn.Linear(4, 2)
        self.calls: list[str] = []

    def forward(self, x: Tensor) -> Tensor:
        h = self.inp(x)
        h, _ = self.block(hidden_states=h)  # keyword-only call, as transformers does
        self.calls.append("out")
        return self.out(h)


@pytest.fixture
def net() -> Net:
    torch.manual_seed(0)
    return Net()


def test_bad_site_name_lists_close_names(net: Net) -> None:
    with pytest.raises(SiteError) as err:
        get_module(net, "block.mpl")
    msg = str(err.value)
    assert "block.mpl" in msg and "block.mlp" in msg and "\n" not in msg
    with pytest.raises(SiteError), capture(net, ["nope"]):
        pass


def test_capture_input_and_output(net: Net) -> None:
    x = torch.randn(5, 3)
    with capture(net, ["inp", "block"], "output") as outs, capture(net, ["block"], "input") as ins:
        net(x)
    h = net.inp(x)
    assert torch.allclose(outs["inp"], h)
    assert torch.allclose(ins["block"], h)  # keyword argument `hidden_states` found
    assert torch.allclose(outs["block"], net.block.mlp(h))  # first tensor of the tuple


def test_replace_output_and_input(net: Net) -> None:
    x = torch.randn(5, 3)
    with replace_output(net, "block", lambda _inputs, out: torch.zeros_like(out)):
        y = net(x)
    assert torch.allclose(y, net.out.bias.expand(5, 2))
    with replace_input(net, "out", lambda h: 2 * h):
        y2 = net(x)
    with capture(net, ["out"], "input") as ins:
        y_ref = net(x)
    assert torch.allclose(y2, net.out(2 * ins["out"]))
    assert not torch.allclose(y2, y_ref)
    with replace(net, "inp", "output", lambda h: h + 1):
        y3 = net(x)
    assert not torch.allclose(y3, y_ref)
    assert torch.allclose(net(x), y_ref)  # hooks are gone after the context


def test_wrong_shape_replacement_is_a_clear_error(net: Net) -> None:
    msg = r"replacement output of 'inp' has shape \(5, 3\); expected \(5, 4\)"
    with pytest.raises(ValueError, match=msg), replace_output(net, "inp", lambda _i, out: out[:, :3]):
        net(torch.randn(5, 3))
    with pytest.raises(ValueError, match="where must be"), capture(net, ["inp"], "middle"):  # type: ignore[arg-type]
        pass


def test_read_activations_stops_early(net: Net) -> None:
    acts = read_activations(net, torch.randn(2, 3), ["inp"])
    assert acts["inp"].shape == (2, 4)
    assert net.calls == []  # the forward pass never reached the output layer


@pytest.mark.slow  # importing transformers alone takes seconds to a minute
def test_huggingface_model_sites() -> None:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=50, n_positions=16, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    ids = torch.randint(0, 50, (3, 7))
    with pytest.raises(SiteError, match=r"transformer\.h\.0\.mlp"):
        get_module(model, "transformer.h.0.mpl")
    with torch.no_grad():
        acts = read_activations(model, {"input_ids": ids}, ["transformer.h.1.mlp", "transformer.h.0"], "output")
        assert acts["transformer.h.1.mlp"].shape == (3, 7, 16)
        assert acts["transformer.h.0"].shape == (3, 7, 16)  # block output (first of its tuple)
        base = model(ids).logits
        with replace_output(model, "transformer.h.1.mlp", lambda _i, out: out * 0):
            ablated = model(ids).logits
        with capture(model, ["transformer.h.1.mlp"], "input") as ins:
            model(ids)
    assert ins["transformer.h.1.mlp"].shape == (3, 7, 16)
    assert not torch.allclose(base, ablated)
