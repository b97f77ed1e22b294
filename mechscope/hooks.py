"""Reading and replacing activations of named submodules of any torch model.

Sites are addressed by the model's own module paths (`"layers.0.mlp_in"`, `"transformer.h.3.mlp"`),
as `model.named_modules()` spells them. A site's *input* is the first positional argument its
module is called with (or, for Hugging Face modules called with keywords only, the first tensor
keyword argument, e.g. `hidden_states`); its *output* is what the module returns (for modules that
return a tuple or a `ModelOutput`, its first tensor). Every hook is removed when its context exits,
even on error:

    with capture(model, ["layers.0.mlp_in"], where="input") as acts:
        model(x)
    acts["layers.0.mlp_in"]                              # [batch, d]

    with replace_output(model, "W", lambda inputs, h: torch.zeros_like(h)):
        model(x)                                         # runs with the hidden layer zeroed

    read_activations(model, x, ["W"])                    # stops the forward pass after the last site
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from typing import Any, Literal

from torch import Tensor, nn

Where = Literal["input", "output"]
OutputFn = Callable[[tuple[Any, ...], Tensor], Tensor]
"""`fn(module_inputs, output) -> new output`; `output` is the module's (first) output tensor."""
InputFn = Callable[[Tensor], Tensor]
"""`fn(input) -> new input` for the module's (first) input tensor."""


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


def _check_where(where: str) -> None:
    if where not in ("input", "output"):
        raise ValueError(f"where must be 'input' or 'output', got {where!r}")


# --- finding and replacing the activation tensor inside a module's arguments / return value ----
def _first_tensor(value: Any) -> tuple[Tensor | None, Callable[[Tensor], Any]]:
    """(the first tensor in `value`, a function putting a replacement back in its place)."""
    if isinstance(value, Tensor):
        return value, lambda new: new
    if isinstance(value, tuple | list):
        for i, item in enumerate(value):
            if isinstance(item, Tensor):
                def put(new: Tensor, i: int = i) -> Any:
                    items = list(value)
                    items[i] = new
                    return type(value)(items) if not hasattr(value, "_fields") else type(value)(*items)
                return item, put
    if isinstance(value, dict):  # e.g. transformers' ModelOutput (an OrderedDict)
        for key, item in value.items():
            if isinstance(item, Tensor):
                def put_key(new: Tensor, key: Any = key) -> Any:
                    value[key] = new
                    return value
                return item, put_key
    return None, lambda new: new


def _input_of(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, Callable[[Tensor], Any]]:
    """The activation a module is called with: its first positional or first tensor keyword argument."""
    if args and isinstance(args[0], Tensor):
        def put_arg(new: Tensor) -> tuple[tuple[Any, ...], dict[str, Any]]:
            return (new, *args[1:]), kwargs
        return args[0], put_arg
    for key, item in kwargs.items():
        if isinstance(item, Tensor):
            def put_kw(new: Tensor, key: str = key) -> tuple[tuple[Any, ...], dict[str, Any]]:
                return args, {**kwargs, key: new}
            return item, put_kw
    raise ValueError(f"module {name!r} was called without a tensor input; cannot read its activation")


def _output_of(name: str, output: Any) -> tuple[Tensor, Callable[[Tensor], Any]]:
    tensor, put = _first_tensor(output)
    if tensor is None:
        raise ValueError(f"module {name!r} returned {type(output).__name__} with no tensor; cannot read it")
    return tensor, put


def _check_shape(name: str, where: str, old: Tensor, new: Any) -> Tensor:
    if not isinstance(new, Tensor):
        raise ValueError(f"replacement {where} of {name!r} must be a Tensor, got {type(new).__name__}")
    if new.shape != old.shape:
        raise ValueError(
            f"replacement {where} of {name!r} has shape {tuple(new.shape)}; expected {tuple(old.shape)}"
        )
    return new


# --- context managers ------------------------------------------------------------------------
@contextmanager
def replace_output(model: nn.Module, name: str, fn: OutputFn) -> Iterator[None]:
    """Within the context, module `name` returns `fn(inputs, output)` instead of `output`.

    `output` is the module's output tensor (the first tensor of a tuple/`ModelOutput`, which is
    put back in place). The replacement must have the same shape (a one-line error otherwise)."""
    module = get_module(model, name)

    def hook(_m: nn.Module, inputs: tuple[Any, ...], output: Any) -> Any:
        tensor, put = _output_of(name, output)
        return put(_check_shape(name, "output", tensor, fn(inputs, tensor)))

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def replace_input(model: nn.Module, name: str, fn: InputFn) -> Iterator[None]:
    """Within the context, module `name` is called with `fn(input)` instead of its input."""
    module = get_module(model, name)

    def hook(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        tensor, put = _input_of(name, args, kwargs)
        return put(_check_shape(name, "input", tensor, fn(tensor)))

    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def replace(model: nn.Module, name: str, where: Where, fn: InputFn) -> Iterator[None]:
    """`replace_input` or `replace_output` (with `fn` of the activation alone), chosen by `where`."""
    _check_where(where)
    if where == "input":
        with replace_input(model, name, fn):
            yield
    else:
        with replace_output(model, name, lambda _inputs, out: fn(out)):
            yield


class _StopForward(Exception):
    """Raised by a hook once every requested activation is in: the rest of the forward is skipped."""


@contextmanager
def capture(
    model: nn.Module, names: Sequence[str], where: Where = "output", stop: bool = False
) -> Iterator[dict[str, Tensor]]:
    """Record the input (`where="input"`) or output of each named module into the yielded dict.

    With `stop=True` the forward pass is cut short (silently) as soon as every site is recorded,
    which saves the rest of a large model; the model's return value is then unavailable."""
    _check_where(where)
    store: dict[str, Tensor] = {}
    wanted = set(names)
    with ExitStack() as stack:
        for name in names:
            module = get_module(model, name)

            def done() -> None:
                if stop and wanted <= store.keys():
                    raise _StopForward

            if where == "input":
                def pre_hook(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], name: str = name) -> None:
                    store[name] = _input_of(name, args, kwargs)[0]
                    done()

                handle = module.register_forward_pre_hook(pre_hook, with_kwargs=True)
            else:
                def hook(_m: nn.Module, _inputs: tuple[Any, ...], output: Any, name: str = name) -> None:
                    store[name] = _output_of(name, output)[0]
                    done()

                handle = module.register_forward_hook(hook)
            stack.callback(handle.remove)
        with suppress(_StopForward):
            yield store


def read_activations(
    model: nn.Module, inputs: Any, names: Sequence[str], where: Where = "output"
) -> dict[str, Tensor]:
    """{site: activation} for one forward pass on `inputs`, stopping after the last site.

    `inputs` is passed as `model(inputs)`, or `model(**inputs)` when it is a dict (tokenizer
    output for a Hugging Face model)."""
    with capture(model, names, where, stop=True) as store:
        if isinstance(inputs, dict):
            model(**inputs)
        else:
            model(inputs)
    missing = [n for n in names if n not in store]
    if missing:
        raise ValueError(f"sites {missing} were never called in the forward pass of {type(model).__name__}")
    return dict(store)
