"""Reading and replacing activations of named submodules of any torch model.

Sites are addressed by the model's own module paths (`"layers.0.mlp_in"`, `"encoder.layer.3.output"`),
as `model.named_modules()` spells them. Every hook is removed when its context exits, even on error.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn

OutputFn = Callable[[tuple[Any, ...], Tensor], Tensor]


class SiteError(KeyError):
    """A site name that does not exist in the model."""

    def __str__(self) -> str:
        return str(self.args[0])


def get_module(model: nn.Module, name: str) -> nn.Module:
    """The submodule called `name`, or a one-line error listing the closest names."""
    modules = dict(model.named_modules())
    if name in modules:
        return modules[name]
    close = difflib.get_close_matches(name, [n for n in modules if n], n=5, cutoff=0.4)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise SiteError(f"no module named {name!r} in {type(model).__name__}{hint}")


@contextmanager
def replace_output(model: nn.Module, name: str, fn: OutputFn) -> Iterator[None]:
    """Within the context, module `name` returns `fn(inputs, output)` instead of `output`."""
    module = get_module(model, name)
    handle = module.register_forward_hook(lambda _m, inputs, output: fn(inputs, output))
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def capture(model: nn.Module, names: list[str], where: str = "output") -> Iterator[dict[str, Tensor]]:
    """Record the input (`where="input"`) or output of each named module into the yielded dict."""
    store: dict[str, Tensor] = {}
    handles = []
    for name in names:
        module = get_module(model, name)

        def hook(_m: nn.Module, inputs: tuple[Any, ...], output: Any, name: str = name) -> None:
            store[name] = inputs[0] if where == "input" else output

        handles.append(module.register_forward_hook(hook))
    try:
        yield store
    finally:
        for h in handles:
            h.remove()
