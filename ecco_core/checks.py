"""Argument checks that raise clear library errors before any heavy work."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .errors import InvalidArgumentError, InvalidTypeError


def check_int(name: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    """Return ``value`` if it is an int within [minimum, maximum], else raise."""
    if isinstance(value, bool) or not isinstance(value, int):
        if hasattr(value, "__index__") and not isinstance(value, bool):
            value = int(value.__index__())
        else:
            raise InvalidTypeError(f"{name} must be an integer, got {type(value).__name__}")
    low = "-inf" if minimum is None else minimum
    high = "inf" if maximum is None else maximum
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise InvalidArgumentError(f"{name}={value} is out of range; valid: {low} to {high}")
    return int(value)


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise listing them."""
    if value not in choices:
        raise InvalidArgumentError(
            f"{name}={value!r} is not valid; choose one of: {', '.join(map(repr, choices))}"
        )
    return str(value)


def check_prompts(prompt: Any) -> tuple[list[str], bool]:
    """Normalize one prompt or a list of prompts; return (prompts, was_single)."""
    single = isinstance(prompt, str)
    prompts = [prompt] if single else prompt
    if not isinstance(prompts, (list, tuple)) or not all(isinstance(p, str) for p in prompts):
        raise InvalidTypeError("prompt must be a string or a list of strings")
    if not prompts:
        raise InvalidArgumentError("the list of prompts is empty")
    for i, p in enumerate(prompts):
        if not p.strip():
            where = "" if single else f" (prompt {i})"
            raise InvalidArgumentError(f"prompt is empty{where}; give some text to continue")
    return list(prompts), single
