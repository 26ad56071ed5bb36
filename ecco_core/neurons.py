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
from .checks import check_choice, check_int
from .dtypes import dtype_name, resolve_dtype
from .errors import InvalidArgumentError, InvalidTypeError
from .forward import run_body
from .inputs import STACKS, Batch, chunks, model_inputs, pad_batch
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


def _values(captured: Sequence[torch.Tensor | None], batch: Batch, dtype: str) -> list[np.ndarray]:
    """Per member: [n_layers, n_neurons, n_positions] activations from the captured FFN
    inputs (each [B, width, neurons]; some models (OPT) flatten batch and positions before the
    FFN, so reshape rather than index)."""
    n_members = len(batch.members)
    layers = [
        c.detach().reshape(n_members, -1, c.shape[-1]).to("cpu", torch.float32)
        for c in captured
        if c is not None
    ]
    stacked = torch.stack(layers).numpy()  # [n_layers, B, width, neurons]
    return [
        np.ascontiguousarray(stacked[:, b, :n].transpose(0, 2, 1)).astype(dtype)
        for b, n in enumerate(batch.lengths)
    ]


def _run(lm: LM, sources: Sequence[Any], layers: Any, dtype: str, stack: str) -> list[Activations]:
    """Activations of ``sources`` (all read from ``stack``) from one padded forward pass."""
    spec = lm.spec
    paths = stack_ffn_out(lm, stack)
    chosen = select_layers(layers, len(paths))
    seqs = [model_inputs(lm, source) for source in sources]
    seen = [seq.stack(stack) for seq in seqs]  # (arguments, ids read, n input) of each alone
    batch = pad_batch(lm, seqs, stack)
    with capture_inputs(modules(lm.model, [paths[i] for i in chosen])) as captured:
        run_body(lm, batch.inputs)
    if sum(c is not None for c in captured) != len(chosen):
        raise InvalidArgumentError("some FFN layers did not run; check spec.ffn_out")
    labels = spec.layer_labels(
        "encoder" if spec.kind == "encoder-decoder" and stack == "encoder" else "decoder"
    )
    records = []
    for values, (_, ids, n_input) in zip(_values(captured, batch, dtype), seen, strict=True):
        _, shown = display_tokens(lm.tokenizer, ids.tolist())
        records.append(
            Activations(
                values=values,
                layers=np.array(chosen, dtype=np.int64),
                layer_labels=[labels[i] for i in chosen],
                stack=stack,
                token_ids=np.array(ids, dtype=np.int64),
                tokens=shown,
                n_input_tokens=n_input,
                provenance=lm.provenance(
                    "activations", {"layers": chosen, "stack": stack, "dtype": dtype}
                ),
            )
        )
    return records


@overload
def activations(
    lm: LM,
    gen_or_text: Source,
    *,
    layers: Sequence[int] | int | None = ...,
    dtype: str | torch.dtype | None = ...,
    stack: str | None = ...,
    batch_size: int | None = ...,
) -> Activations: ...


@overload
def activations(
    lm: LM,
    gen_or_text: Sources,
    *,
    layers: Sequence[int] | int | None = ...,
    dtype: str | torch.dtype | None = ...,
    stack: str | None = ...,
    batch_size: int | None = ...,
) -> tuple[Activations, ...]: ...


def activations(
    lm: LM,
    gen_or_text: Source | Sources,
    *,
    layers: Sequence[int] | int | None = None,
    dtype: str | torch.dtype | None = None,
    stack: str | None = None,
    batch_size: int | None = None,
) -> Activations | tuple[Activations, ...]:
    """FFN neuron activations at every position (prompt and generated tokens).

    Parameters
    ----------
    gen_or_text : a text, a :class:`Generation`, a :class:`MaskedPredictions`, or a list of
        them (one record each, positions of each kept apart), run as padded batches.
    layers : block indices to capture (default all); only those are held in memory.
    dtype : ``float32`` (default), ``float16`` or ``float64`` for the values, in any spelling
        (``"fp16"``, ``"half"``, ``torch.float16``, ...; see :mod:`ecco_core.dtypes`).
    stack : ``decoder`` or ``encoder``. Decoder-only models have only a decoder stack, masked and
        encoder models only an encoder stack; encoder-decoder models have both (default:
        ``encoder`` for a text, ``decoder`` for a Generation).
    batch_size : inputs per forward pass, for a list (default: all at once). Inputs read from
        different stacks (texts and generations of an encoder-decoder model) run apart.

    Returns
    -------
    Activations with ``values`` [n_layers, n_neurons, n_positions], or a tuple of them.
    """
    allowed = (torch.float16, torch.float32, torch.float64)
    dtype = dtype_name(resolve_dtype(dtype or "float32", "dtype", allowed))
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size, 1)
    single = isinstance(gen_or_text, (str, Generation, MaskedPredictions))
    sources: list[Any] = [gen_or_text] if single else list(cast(Sequence[Source], gen_or_text))
    if not sources:
        raise InvalidArgumentError("no texts given")
    stacks: dict[str, list[int]] = {}
    for i, source in enumerate(sources):
        if not isinstance(source, (str, Generation, MaskedPredictions)):
            raise InvalidTypeError(
                f"expected a text, a Generation or MaskedPredictions, got {type(source).__name__}"
            )
        chosen_stack = stack
        if chosen_stack is None:
            text_to_enc_dec = isinstance(source, str) and lm.spec.kind == "encoder-decoder"
            chosen_stack = "encoder" if text_to_enc_dec else main_stack(lm.spec.kind)
        stacks.setdefault(chosen_stack, []).append(i)
    records: list[Activations | None] = [None] * len(sources)
    for chosen_stack, members in stacks.items():
        for part in chunks(len(members), batch_size):
            indices = [members[j] for j in part]
            made = _run(lm, [sources[i] for i in indices], layers, dtype, chosen_stack)
            for i, rec in zip(indices, made, strict=True):
                records[i] = rec
    done = cast(list[Activations], records)
    return done[0] if single else tuple(done)
