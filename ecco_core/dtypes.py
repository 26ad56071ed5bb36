"""One set of spellings for floating-point types, used by every argument that takes one.

``"bf16"``, ``"bfloat16"``, ``"torch.bfloat16"`` and ``torch.bfloat16`` all name the same
type, as do the ``fp16``/``float16``/``half``, ``fp32``/``float32``/``float`` and
``fp64``/``float64``/``double`` families. :func:`resolve_dtype` turns any of them into a
``torch.dtype``; :func:`resolve_precision` into an attribution precision (``fp32``, ``tf32``,
``bf16``). Anything else is refused with the list of valid spellings.
"""

from __future__ import annotations

from typing import Any

import torch

from .errors import InvalidArgumentError

__all__ = ["DTYPE_SPELLINGS", "dtype_name", "resolve_dtype", "resolve_precision"]

DTYPE_SPELLINGS: dict[str, torch.dtype] = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "fp32": torch.float32,
    "float32": torch.float32,
    "float": torch.float32,
    "fp64": torch.float64,
    "float64": torch.float64,
    "double": torch.float64,
}

_SHORT = {
    torch.bfloat16: "bf16",
    torch.float16: "fp16",
    torch.float32: "fp32",
    torch.float64: "fp64",
}


def _valid(extra: tuple[str, ...] = ()) -> str:
    return ", ".join(repr(s) for s in (*DTYPE_SPELLINGS, *extra))


def resolve_dtype(value: Any, argument: str = "dtype", allowed: Any = None) -> torch.dtype:
    """The ``torch.dtype`` a spelling names.

    Parameters
    ----------
    value : a ``torch.dtype`` or one of :data:`DTYPE_SPELLINGS` (case-insensitive, an optional
        ``torch.`` prefix).
    argument : the argument's name, for the error message.
    allowed : optional collection of the dtypes this argument accepts.
    """
    dtype: torch.dtype | None = None
    if isinstance(value, torch.dtype):
        dtype = value
    elif isinstance(value, str):
        dtype = DTYPE_SPELLINGS.get(value.strip().lower().removeprefix("torch."))
    if dtype is None or dtype not in _SHORT or (allowed is not None and dtype not in allowed):
        names = (
            _valid()
            if allowed is None
            else ", ".join(repr(s) for s, d in DTYPE_SPELLINGS.items() if d in allowed)
        )
        raise InvalidArgumentError(
            f"{argument}={value!r} is not a floating-point type ecco-core knows; use one of "
            f"{names} or a torch dtype such as torch.bfloat16"
        )
    return dtype


def dtype_name(dtype: torch.dtype) -> str:
    """numpy-style name of a resolved dtype (``float32``, ``bfloat16``, ...)."""
    return str(dtype).removeprefix("torch.")


def resolve_precision(value: Any) -> str:
    """An attribution precision: ``fp32``, ``tf32`` or ``bf16`` from any dtype spelling.

    ``tf32`` (TensorFloat-32 matrix products on CUDA) has no dtype of its own: only the string
    ``"tf32"`` names it. Half precision (fp16) and fp64 are not attribution precisions.
    """
    if isinstance(value, str) and value.strip().lower() == "tf32":
        return "tf32"
    try:
        dtype = resolve_dtype(value, "precision", allowed=(torch.float32, torch.bfloat16))
    except InvalidArgumentError:
        raise InvalidArgumentError(
            f"precision={value!r} is not one of 'fp32' (also 'float32', torch.float32), "
            "'tf32' or 'bf16' (also 'bfloat16', torch.bfloat16)"
        ) from None
    return _SHORT[dtype]
