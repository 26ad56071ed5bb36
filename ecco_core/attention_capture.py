"""Attention weights of chosen blocks from one forward pass, whatever the attention backend.

For the duration of one forward pass, every configuration object of the model (the model's,
and the copies some stacks keep, e.g. T5's encoder and decoder) is switched to eager
attention, so every attention module computes ``softmax(QK^T * scale + mask + bias)``
explicitly and returns it; forward hooks on the modules inside the chosen blocks pick those
weights out of the module outputs (a 4-D tensor [batch, heads, query, key] of non-negative rows
summing to 1), keep only the chosen heads, and move them to the CPU. The configurations and
hooks are restored in ``finally``. ``output_attentions`` is never passed, so transformers' own
output-recording hooks are never installed. Models loaded with SDPA or flash attention
therefore give exactly the weights of an eager model with the same parameters.

This module sits below the compute modules: :func:`ecco_core.attention.attention` (the
Attention record) and the attention methods of :mod:`ecco_core.attribution` both use it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, cast

import attrs
import torch
from torch import nn

from .errors import UnsupportedModelError
from .forward import run_body
from .loading import LM
from .records import ATTENTION_STACKS

# --- which stacks a model has, and the part of the sequence each one sees -------------------


def model_stacks(kind: str) -> tuple[str, ...]:
    """Attention stacks of a model kind: encoder-decoder models have all three."""
    if kind == "encoder-decoder":
        return ATTENTION_STACKS
    if kind == "causal":
        return ("decoder",)
    return ("encoder",)


def stack_blocks(lm: LM, stack: str) -> tuple[str, ...]:
    """Module paths of the blocks of ``stack`` (``cross`` attention lives in the decoder's)."""
    if lm.spec.kind == "encoder-decoder" and stack == "encoder":
        return lm.spec.encoder_blocks
    return lm.spec.blocks


def stack_labels(lm: LM, stack: str) -> tuple[str, ...]:
    """Display labels of the blocks of ``stack``."""
    encoder = lm.spec.kind == "encoder-decoder" and stack == "encoder"
    return lm.spec.layer_labels("encoder" if encoder else "decoder")


def config_heads(lm: LM, stack: str) -> int | None:
    """Attention heads per layer of ``stack`` from the model's configuration, if it says."""
    config = cast(Any, lm.model).config
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    own = "encoder_attention_heads" if stack == "encoder" else "decoder_attention_heads"
    for name in (own, "num_attention_heads"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def spans(n_tokens: int, n_encoder: int, stack: str) -> tuple[int, int, int, int]:
    """(query_start, n_query, key_start, n_key) of ``stack`` in a sequence of ``n_tokens``
    whose first ``n_encoder`` tokens feed an encoder-decoder model's encoder (0 otherwise)."""
    if stack == "encoder":
        count = n_encoder if n_encoder else n_tokens
        return 0, count, 0, count
    if stack == "cross":
        return n_encoder, n_tokens - n_encoder, 0, n_encoder
    return n_encoder, n_tokens - n_encoder, n_encoder, n_tokens - n_encoder


def needs_causal(lm: LM, stack: str) -> bool:
    """Whether ``stack``'s self-attention must be causal."""
    return stack == "decoder" and lm.spec.kind in ("causal", "encoder-decoder")


def check_causal(weights: torch.Tensor, stack: str) -> None:
    """Decoder self-attention [..., n, n] must put no weight on later tokens."""
    future = torch.triu(torch.ones(weights.shape[-2:], dtype=torch.bool), diagonal=1)
    if float((weights.abs() * future).max()) > 1e-6:
        raise UnsupportedModelError(
            f"captured {stack} attention puts weight on later tokens: the causal mask was not "
            "applied, so these weights are not the model's. Please report this model"
        )


# --- capture ---------------------------------------------------------------------------------


def _configs(model: nn.Module) -> list[Any]:
    """Every transformers configuration object reachable from the model's modules."""
    from transformers import PretrainedConfig

    found: dict[int, Any] = {}
    pending = [getattr(m, "config", None) for m in model.modules()]
    while pending:
        config = pending.pop()
        if isinstance(config, PretrainedConfig) and id(config) not in found:
            found[id(config)] = config
            pending.extend(getattr(config, key, None) for key in getattr(config, "sub_configs", {}))
    return list(found.values())


_IMPL = "_attn_implementation_internal"
_MISSING = object()


@contextlib.contextmanager
def eager_attention(model: nn.Module) -> Iterator[None]:
    """Run with every configuration of ``model`` set to eager attention; restored exactly after.

    The attribute is written directly (not through ``set_attn_implementation`` or the config's
    property setter), so nothing else about the configurations changes.
    """
    saved = [(c, c.__dict__.get(_IMPL, _MISSING)) for c in _configs(model)]
    try:
        for config, _ in saved:
            config.__dict__[_IMPL] = "eager"
        yield
    finally:
        for config, value in saved:
            if value is _MISSING:
                config.__dict__.pop(_IMPL, None)
            else:
                config.__dict__[_IMPL] = value


def _weights_in(output: Any, n_query: int) -> list[torch.Tensor]:
    """Attention-weight tensors [1, heads, n_query, key] among a module's outputs.

    Rows of weights rounded to float16/bfloat16 sum to 1 only within a few parts in a thousand.
    """
    items = output if isinstance(output, (tuple, list)) else (output,)
    found = []
    for item in items:
        if (
            isinstance(item, torch.Tensor)
            and item.ndim == 4
            and item.shape[0] == 1
            and item.shape[2] == n_query
            and item.is_floating_point()
        ):
            sums = item.detach().float().sum(-1)
            tolerance = 1e-3 if item.element_size() >= 4 else 2e-2
            ones = torch.ones_like(sums)
            if bool((item >= 0).all()) and bool(torch.allclose(sums, ones, atol=tolerance)):
                found.append(item)
    return found


@attrs.frozen
class Request:
    """What to keep from one stack's blocks: block indices and head indices (None = all)."""

    stack: str
    layers: list[int]
    heads: list[int] | None


def _hooks_for(
    block: nn.Module, store: list[torch.Tensor], heads: list[int] | None, n_query: int
) -> list[Any]:
    seen: list[torch.Tensor] = []  # originals of this block's pass (held until it ends)

    def save(module: nn.Module, _args: Any, output: Any) -> None:
        for tensor in _weights_in(output, n_query):
            if any(tensor is s for s in seen):
                continue
            seen.append(tensor)
            picked = tensor[0] if heads is None else tensor[0, heads]
            picked = picked.detach().to("cpu", torch.float32)
            if tensor.element_size() < 4:  # rounded to 16 bits: make rows sum to 1 again
                picked = picked / picked.sum(-1, keepdim=True)
            store.append(picked)
        if module is block:
            seen.clear()

    return [sub.register_forward_hook(save) for sub in block.modules()]


def _pick(
    lm: LM, stack: str, found: list[list[torch.Tensor]], layers: list[int], n_key: int
) -> torch.Tensor:
    """[n_layers, heads, query, key] for ``stack`` from each block's captured tensors."""
    index = 1 if stack == "cross" else 0
    labels = stack_labels(lm, stack)
    rows = []
    for layer, tensors in zip(layers, found, strict=True):
        if len(tensors) <= index:
            raise UnsupportedModelError(
                f"no {stack} attention weights were found in block {labels[layer]!r} even with "
                "eager attention: its attention module does not return its weights. Load the "
                "model with attn_implementation='eager' and check that it returns attentions"
            )
        tensor = tensors[index]
        if tensor.shape[-1] != n_key:
            raise UnsupportedModelError(
                f"the {stack} attention weights of block {labels[layer]!r} have {tensor.shape[-1]} "
                f"keys where {n_key} were expected"
            )
        rows.append(tensor)
    if len({t.shape for t in rows}) > 1:
        raise UnsupportedModelError(
            f"layers of {lm.name} have different numbers of heads ({[t.shape[0] for t in rows]}); "
            "ask for one layer at a time"
        )
    return torch.stack(rows)


def capture(
    lm: LM,
    inputs: Mapping[str, Any],
    requests: Sequence[Request],
    n_tokens: int,
    n_encoder: int,
) -> dict[str, torch.Tensor]:
    """Attention weights of the requested stacks, blocks and heads from one forward pass.

    Parameters
    ----------
    lm : the model handle.
    inputs : forward arguments (``input_ids`` or ``inputs_embeds``, split between encoder and
        decoder by :func:`ecco_core.inputs.split_stacks`); run by
        :func:`ecco_core.forward.run_body`.
    requests : one per stack (``encoder``, ``decoder``, ``cross``).
    n_tokens, n_encoder : length of the whole sequence and of its encoder part (see
        :func:`spans`).

    Returns
    -------
    stack -> float32 tensor [len(layers), n_heads, n_query, n_key] on the CPU; decoder
    self-attention is checked to be causal.
    """
    model = lm.model
    handles: list[Any] = []
    kept: dict[str, list[list[torch.Tensor]]] = {}
    try:
        of_blocks: dict[str, list[list[torch.Tensor]]] = {}
        for request in requests:
            source = "decoder" if request.stack == "cross" else request.stack
            if source not in of_blocks:
                paths = stack_blocks(lm, source)
                n_query = spans(n_tokens, n_encoder, source)[1]
                of_blocks[source] = [[] for _ in request.layers]
                for store, layer in zip(of_blocks[source], request.layers, strict=True):
                    block = model.get_submodule(paths[layer])
                    handles += _hooks_for(block, store, request.heads, n_query)
            kept[request.stack] = of_blocks[source]
        with eager_attention(model):
            run_body(lm, inputs)
    finally:
        for handle in handles:
            handle.remove()
    weights = {}
    for request in requests:
        n_key = spans(n_tokens, n_encoder, request.stack)[3]
        found = _pick(lm, request.stack, kept[request.stack], request.layers, n_key)
        if needs_causal(lm, request.stack):
            check_causal(found, request.stack)
        weights[request.stack] = found
    return weights
