"""Attention weights of any layer and head: :func:`attention` and the Attention record.

The weights are captured by :mod:`ecco_core.attention_capture` (eager attention for one
forward pass, whatever implementation the model was loaded with). Attributions built from them
(rollout, last-layer attention) are attribution methods: ``ec.attribute(lm, gen,
method="attention_rollout")`` (see :mod:`ecco_core.attribution.attention_methods` and
docs/attention.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast, overload

import numpy as np

from .attention_capture import Request, capture, config_heads, model_stacks, spans, stack_labels
from .checks import check_choice
from .errors import InvalidArgumentError, InvalidTypeError, UnsupportedModelError
from .inputs import model_inputs
from .loading import LM
from .records import ATTENTION_STACKS, Attention, Classification, Generation, MaskedPredictions

Source = str | Generation | MaskedPredictions | Classification
DTYPES = ("float32", "float16")


def _check_stack(lm: LM, stack: str | None, source: Any) -> str:
    kind = lm.spec.kind
    if stack is None:
        if kind == "encoder-decoder":
            return "decoder" if isinstance(source, Generation) else "encoder"
        return model_stacks(kind)[0]
    check_choice("stack", stack, ATTENTION_STACKS)
    have = model_stacks(kind)
    if stack not in have:
        raise InvalidArgumentError(
            f"{lm.name} is a {kind} model: its attention stack is {have[0]!r}; "
            f"stack={stack!r} exists only in encoder-decoder models"
        )
    if kind == "encoder-decoder" and stack != "encoder" and not isinstance(source, Generation):
        raise InvalidArgumentError(
            f"stack={stack!r} needs a decoder sequence: pass a Generation from this model, "
            "or use stack='encoder' for a text"
        )
    return stack


def _select(
    what: str, requested: Sequence[int] | int | None, count: int | None, unit: str
) -> list[int] | None:
    """Sorted unique indices (negative ones count from the end); None = all (count unknown)."""
    if requested is None:
        return None if count is None else list(range(count))
    items = [requested] if isinstance(requested, (int, np.integer)) else list(requested)
    if not items:
        raise InvalidArgumentError(f"{what} is empty; pass None for all {what} or some indices")
    chosen = set()
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, np.integer)):
            raise InvalidTypeError(f"{what} must be integers, got {item!r}")
        if count is not None and not -count <= item < count:
            raise InvalidArgumentError(
                f"{unit} {item} is out of range; there are {count} {what} "
                f"(valid: 0 to {count - 1}, or -{count} to -1)"
            )
        if count is None and item < 0:
            raise InvalidArgumentError(
                f"{unit} {item}: negative indices need the number of {what}, which the "
                "model's configuration does not give; use indices from 0"
            )
        chosen.add(int(item) % count if count is not None else int(item))
    return sorted(chosen)


def _one(lm: LM, source: Any, layers: Any, heads: Any, stack: str | None, dtype: str) -> Attention:
    stack = _check_stack(lm, stack, source)
    labels = stack_labels(lm, stack)
    chosen_layers = cast(list[int], _select("layers", layers, len(labels), "layer"))
    n_model_heads = config_heads(lm, stack)
    chosen_heads = _select("heads", heads, n_model_heads, "head")
    seq = model_inputs(lm, source)
    n_tokens, n_enc = len(seq.token_ids), seq.n_encoder_tokens
    q_start, n_q, k_start, n_k = spans(n_tokens, n_enc, stack)
    inputs = seq.stack("encoder")[0] if stack == "encoder" else seq.inputs
    request = Request(stack, chosen_layers, chosen_heads)
    weights = capture(lm, inputs, [request], n_tokens, n_enc)[stack]
    if chosen_heads is None:  # the configuration did not say: every head was kept
        chosen_heads = list(range(weights.shape[1]))
        n_model_heads = weights.shape[1]
    elif weights.shape[1] != len(chosen_heads):
        raise UnsupportedModelError(
            f"expected {len(chosen_heads)} heads but captured {weights.shape[1]}"
        )
    params = {"layers": chosen_layers, "heads": chosen_heads, "stack": stack, "dtype": dtype}
    return Attention(
        weights=weights.numpy().astype(dtype),
        layers=np.array(chosen_layers, dtype=np.int64),
        heads=np.array(chosen_heads, dtype=np.int64),
        n_model_heads=int(n_model_heads or weights.shape[1]),
        layer_labels=[labels[i] for i in chosen_layers],
        stack=stack,
        token_ids=seq.token_ids,
        tokens=seq.tokens,
        n_input_tokens=seq.n_input_tokens,
        query_start=q_start,
        key_start=k_start,
        query_tokens=seq.tokens[q_start : q_start + n_q],
        key_tokens=seq.tokens[k_start : k_start + n_k],
        provenance=lm.provenance("attention", params),
    )


@overload
def attention(
    lm: LM,
    gen_or_text: Source,
    *,
    layers: Sequence[int] | int | None = ...,
    heads: Sequence[int] | int | None = ...,
    stack: str | None = ...,
    dtype: str = ...,
) -> Attention: ...


@overload
def attention(
    lm: LM,
    gen_or_text: list[Source] | tuple[Source, ...],
    *,
    layers: Sequence[int] | int | None = ...,
    heads: Sequence[int] | int | None = ...,
    stack: str | None = ...,
    dtype: str = ...,
) -> tuple[Attention, ...]: ...


def attention(
    lm: LM,
    gen_or_text: Source | list[Source] | tuple[Source, ...],
    *,
    layers: Sequence[int] | int | None = None,
    heads: Sequence[int] | int | None = None,
    stack: str | None = None,
    dtype: str = "float32",
) -> Attention | tuple[Attention, ...]:
    """Attention weights of every (or the chosen) layer and head, from one forward pass.

    The weights are those of the model's eager attention whatever implementation it was
    loaded with (SDPA, flash attention): see :mod:`ecco_core.attention_capture`. The model is
    left as found.

    Parameters
    ----------
    lm : handle from :func:`ecco_core.load`.
    gen_or_text : a text, a :class:`Generation` (prompt and generated tokens), a
        :class:`MaskedPredictions` or :class:`Classification` record, or a list of them.
    layers : block indices of the stack (default all; negative count from the end). Only the
        chosen layers and heads are kept in memory.
    heads : head indices (default all).
    stack : ``decoder`` (causal models), ``encoder`` (masked, encoder and classifier models)
        or, for encoder-decoder models, ``encoder``, ``decoder`` or ``cross`` (default:
        ``decoder`` for a Generation, ``encoder`` for a text).
    dtype : ``float32`` (default) or ``float16`` for the stored weights.

    Returns
    -------
    Attention with ``weights`` [n_layers, n_heads, n_query, n_key], or a tuple of them for a
    list of sources.
    """
    dtype = check_choice("dtype", dtype, DTYPES)
    single = isinstance(gen_or_text, (str, Generation, MaskedPredictions, Classification))
    if not single and not isinstance(gen_or_text, (list, tuple)):
        raise InvalidTypeError(
            "expected a text, a Generation, MaskedPredictions or Classification record, or a "
            f"list of them; got {type(gen_or_text).__name__}"
        )
    sources: list[Any] = [gen_or_text] if single else list(cast(Sequence[Any], gen_or_text))
    if not sources:
        raise InvalidArgumentError("no texts or records given")
    for source in sources:  # every argument is checked before the first forward pass
        stack_of = _check_stack(lm, stack, source)
        _select("layers", layers, len(stack_labels(lm, stack_of)), "layer")
        _select("heads", heads, config_heads(lm, stack_of), "head")
        model_inputs(lm, source)
    records = [_one(lm, source, layers, heads, stack, dtype) for source in sources]
    return records[0] if single else tuple(records)
