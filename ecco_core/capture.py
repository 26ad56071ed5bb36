"""Forward hooks that exist only inside context managers.

Every hook registered here is removed in a ``finally`` block, also when the forward pass
raises. :func:`analysis_mode` puts the model in eval mode for the duration of an analysis and
restores every module's ``training`` flag afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, cast

import torch
from torch import nn


def _first_tensor(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    if hasattr(value, "keys"):
        return value[next(iter(value.keys()))]
    raise TypeError(f"cannot find a tensor in a module output of type {type(value).__name__}")


@contextmanager
def _hooks(handles: list[Any]) -> Iterator[None]:
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def _capture(modules: Sequence[nn.Module], inputs: bool) -> Iterator[list[torch.Tensor | None]]:
    store: list[torch.Tensor | None] = [None] * len(modules)
    handles: list[Any] = []

    def hook_for(i: int) -> Any:
        def save_input(_module: nn.Module, args: Any) -> None:
            store[i] = _first_tensor(args)

        def save_output(_module: nn.Module, _args: Any, output: Any) -> None:
            store[i] = _first_tensor(output)

        return save_input if inputs else save_output

    try:
        for i, module in enumerate(modules):
            register = module.register_forward_pre_hook if inputs else module.register_forward_hook
            handles.append(register(hook_for(i)))
    except BaseException:
        for handle in handles:
            handle.remove()
        raise
    with _hooks(handles):
        yield store


def capture_outputs(
    modules: Sequence[nn.Module],
) -> AbstractContextManager[list[torch.Tensor | None]]:
    """Collect the (first tensor of the) output of each module during forward passes.

    A context manager yielding a list with one slot per module, filled as the modules run.
    """
    return _capture(modules, inputs=False)


def capture_inputs(
    modules: Sequence[nn.Module],
) -> AbstractContextManager[list[torch.Tensor | None]]:
    """Collect the first positional input of each module during forward passes (a context
    manager yielding one slot per module)."""
    return _capture(modules, inputs=True)


@contextmanager
def replace_output(module: nn.Module, value: torch.Tensor) -> Iterator[None]:
    """Make ``module`` return ``value`` in place of the first tensor of its output."""

    def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
        if isinstance(output, torch.Tensor):
            return value
        if isinstance(output, tuple):
            return (value, *output[1:])
        output[next(iter(output.keys()))] = value
        return output

    with _hooks([module.register_forward_hook(hook)]):
        yield


@contextmanager
def analysis_mode(model: nn.Module) -> Iterator[None]:
    """Run with the model in eval mode; restore every module's ``training`` flag after."""
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield
    finally:
        for module, flag in flags:
            module.training = flag


def model_device(model: nn.Module) -> torch.device:
    """Device of the input embedding (where inputs must go)."""
    return cast(torch.device, cast(Any, model).get_input_embeddings().weight.device)
