"""FFN neuron activations at every position, captured with hooks in one forward pass.

A block's neuron activations are the input of its FFN output projection (``spec.ffn_out``):
``act(W_in x)`` for GPT-2/BERT-style MLPs, ``act(W_gate x) * (W_up x)`` for gated ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast, overload

import numpy as np
import torch

from .capture import capture_inputs
from .checks import check_choice
from .dtypes import dtype_name, resolve_dtype
from .errors import InvalidArgumentError, InvalidTypeError
from .forward import run_body
from .inputs import STACKS, model_inputs
from .loading import LM
from .model_spec import modules
from .records import Activations, Generation, MaskedPredictions
from .tokens import display_tokens


def main_stack(kind: str) -> str:
    """The stack that feeds the output: ``decoder`` for causal and encoder-decoder models, else
    ``encoder`` (masked, encoder and classifier models)."""
    return "encoder" if kind in ("masked", "encoder", "classifier") else "decoder"


def stack_ffn_out(lm: LM, stack: str) -> tuple[str, ...]:
    """FFN output projection paths of ``stack``, with a clear error if the model lacks it."""
    check_choice("stack", stack, STACKS)
    spec = lm.spec
    if spec.kind == "encoder-decoder":
        return spec.encoder_ffn_out if stack == "encoder" else spec.ffn_out
    if stack != main_stack(spec.kind):
        raise InvalidArgumentError(
            f"{lm.name} is a {spec.kind} model with only a{'n' if stack == 'decoder' else ''} "
            f"{main_stack(spec.kind)} stack; stack={stack!r} does not exist"
        )
    return spec.ffn_out


Source = str | Generation | MaskedPredictions
# Several sources (``list`` is invariant, so lists of one kind are named too).
Sources = list[str] | list[Generation] | list[MaskedPredictions] | list[Source] | tuple[Source, ...]


def select_layers(requested: Sequence[int] | int | None, n_layers: int) -> list[int]:
    """Sorted, unique block indices; negative indices count from the end."""
    if requested is None:
        return list(range(n_layers))
    items = [requested] if isinstance(requested, int) else list(requested)
    if not items:
        raise InvalidArgumentError("layers is empty; pass None for all layers or some indices")
    chosen = set()
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, np.integer)):
            raise InvalidTypeError(f"layer indices must be integers, got {item!r}")
        if not -n_layers <= item < n_layers:
            raise InvalidArgumentError(
                f"layer {item} is out of range; the stack has {n_layers} layers "
                f"(valid: 0 to {n_layers - 1}, or -{n_layers} to -1)"
            )
        chosen.add(int(item) % n_layers)
    return sorted(chosen)


def _one(lm: LM, source: Source, layers: Any, dtype: str, stack: str) -> Activations:
    spec = lm.spec
    paths = stack_ffn_out(lm, stack)
    chosen = select_layers(layers, len(paths))
    if not isinstance(source, (str, Generation, MaskedPredictions)):
        raise InvalidTypeError(
            f"expected a text, a Generation or MaskedPredictions, got {type(source).__name__}"
        )
    inputs, ids, n_input = model_inputs(lm, source).stack(stack)
    with capture_inputs(modules(lm.model, [paths[i] for i in chosen])) as captured:
        run_body(lm, inputs)
    values = np.stack(
        # [positions, neurons] -> [neurons, positions]; some models (OPT) flatten batch and
        # positions before the FFN, so reshape rather than index the batch.
        [
            c.detach().reshape(-1, c.shape[-1]).to("cpu", torch.float32).numpy().T
            for c in captured
            if c is not None
        ]
    ).astype(dtype)
    if values.shape[0] != len(chosen):
        raise InvalidArgumentError("some FFN layers did not run; check spec.ffn_out")
    labels = spec.layer_labels(
        "encoder" if spec.kind == "encoder-decoder" and stack == "encoder" else "decoder"
    )
    _, shown = display_tokens(lm.tokenizer, ids.tolist())
    return Activations(
        values=values,
        layers=np.array(chosen, dtype=np.int64),
        layer_labels=[labels[i] for i in chosen],
        stack=stack,
        token_ids=np.array(ids, dtype=np.int64),
        tokens=shown,
        n_input_tokens=n_input,
        provenance=lm.provenance("activations", {"layers": chosen, "stack": stack, "dtype": dtype}),
    )


@overload
def activations(
    lm: LM,
    gen_or_text: Source,
    *,
    layers: Sequence[int] | int | None = ...,
    dtype: str | torch.dtype | None = ...,
    stack: str | None = ...,
) -> Activations: ...


@overload
def activations(
    lm: LM,
    gen_or_text: Sources,
    *,
    layers: Sequence[int] | int | None = ...,
    dtype: str | torch.dtype | None = ...,
    stack: str | None = ...,
) -> tuple[Activations, ...]: ...


def activations(
    lm: LM,
    gen_or_text: Source | Sources,
    *,
    layers: Sequence[int] | int | None = None,
    dtype: str | torch.dtype | None = None,
    stack: str | None = None,
) -> Activations | tuple[Activations, ...]:
    """FFN neuron activations at every position (prompt and generated tokens).

    Parameters
    ----------
    gen_or_text : a text, a :class:`Generation`, a :class:`MaskedPredictions`, or a list of
        them (one record each, positions of each kept apart).
    layers : block indices to capture (default all); only those are held in memory.
    dtype : ``float32`` (default), ``float16`` or ``float64`` for the values, in any spelling
        (``"fp16"``, ``"half"``, ``torch.float16``, ...; see :mod:`ecco_core.dtypes`).
    stack : ``decoder`` or ``encoder``. Decoder-only models have only a decoder stack, masked and
        encoder models only an encoder stack; encoder-decoder models have both (default:
        ``encoder`` for a text, ``decoder`` for a Generation).

    Returns
    -------
    Activations with ``values`` [n_layers, n_neurons, n_positions], or a tuple of them.
    """
    allowed = (torch.float16, torch.float32, torch.float64)
    dtype = dtype_name(resolve_dtype(dtype or "float32", "dtype", allowed))
    single = isinstance(gen_or_text, (str, Generation, MaskedPredictions))
    sources: list[Any] = [gen_or_text] if single else list(cast(Sequence[Source], gen_or_text))
    if not sources:
        raise InvalidArgumentError("no texts given")
    records = []
    for source in sources:
        chosen_stack = stack
        if chosen_stack is None:
            text_to_enc_dec = isinstance(source, str) and lm.spec.kind == "encoder-decoder"
            chosen_stack = "encoder" if text_to_enc_dec else main_stack(lm.spec.kind)
        records.append(_one(lm, source, layers, dtype, chosen_stack))
    return records[0] if single else tuple(records)
