"""Attention weights of any layer and head, and attributions built from them.

How the weights are obtained: for the duration of one forward pass, every configuration object
of the model (the model's, and the copies some stacks keep, e.g. T5's encoder and decoder) is
switched to eager attention, so every attention module computes ``softmax(QK^T * scale + mask
+ bias)`` explicitly and returns it; forward hooks on the modules inside the chosen blocks pick
those weights out of the module outputs (a 4-D tensor [batch, heads, query, key] of
non-negative rows summing to 1), keep only the chosen heads, and move them to the CPU. The
configurations and hooks are restored in ``finally``. ``output_attentions`` is never passed, so
transformers' own output-recording hooks are never installed. Models loaded with SDPA or
flash attention therefore give exactly the weights of an eager model with the same parameters.
Decoder self-attention is checked to be causal before the weights are returned.

Attributions (:func:`attention_rollout`, :func:`attention_last_layer`) turn the weights into
:class:`~ecco_core.records.Attributions` records shaped like integrated gradients' (see
docs/attention.md for the formulas).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, cast

import attrs
import numpy as np
import torch
from torch import nn

from .capture import analysis_mode, model_device
from .checks import check_choice
from .errors import InvalidArgumentError, InvalidTypeError, UnsupportedModelError
from .forward import run_body
from .generation import encode_text
from .loading import LM, check_record_ids
from .records import (
    ATTENTION_STACKS,
    Attention,
    Attributions,
    Classification,
    Generation,
    MaskedPredictions,
)
from .tokens import display_tokens

Source = str | Generation | MaskedPredictions | Classification
DTYPES = ("float32", "float16")


# --- which stacks a model has, and the sequence each one sees -------------------------------


def model_stacks(kind: str) -> tuple[str, ...]:
    """Attention stacks of a model kind: encoder-decoder models have all three."""
    if kind == "encoder-decoder":
        return ATTENTION_STACKS
    if kind == "causal":
        return ("decoder",)
    return ("encoder",)


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


@attrs.frozen
class _Sequence:
    """A source as model inputs: encoder ids (enc-dec only) then the main sequence."""

    token_ids: list[int]  # whole sequence: encoder ids then decoder ids for enc-dec models
    n_encoder: int  # encoder tokens at the start of token_ids (0 unless enc-dec)
    n_input: int
    tokens: Sequence[str]


def _as_sequence(lm: LM, source: Any) -> _Sequence:
    if isinstance(source, str):
        if not source.strip():
            raise InvalidArgumentError("text is empty; give some text to look at")
        ids = encode_text(lm, source)
        _, shown = display_tokens(lm.tokenizer, ids)
        return _Sequence(ids, 0, len(ids), shown)
    if not isinstance(source, (Generation, MaskedPredictions, Classification)):
        raise InvalidTypeError(
            "expected a text, a Generation, MaskedPredictions or Classification record, got "
            f"{type(source).__name__}"
        )
    ids = source.token_ids.tolist()
    check_record_ids(lm, ids)
    kind = lm.spec.kind
    if isinstance(source, Generation):
        if source.model_kind != kind:
            raise InvalidArgumentError(
                f"the Generation comes from a {source.model_kind} model but {lm.name} is a "
                f"{kind} model: the record comes from another model"
            )
        return _Sequence(ids, source.n_encoder_tokens, source.n_input_tokens, source.tokens)
    if isinstance(source, MaskedPredictions) and kind != "masked":
        raise InvalidArgumentError(
            f"a MaskedPredictions record comes from a masked LM but {lm.name} is a {kind} model"
        )
    if isinstance(source, Classification) and kind != "classifier":
        raise InvalidArgumentError(
            f"a Classification record comes from a classifier but {lm.name} is a {kind} model"
        )
    return _Sequence(ids, 0, len(ids), source.tokens)


def _model_inputs(lm: LM, seq: _Sequence, need_decoder: bool) -> dict[str, torch.Tensor]:
    device = model_device(lm.model)
    ids = seq.token_ids
    if lm.spec.kind != "encoder-decoder":
        return {"input_ids": torch.tensor([ids], device=device)}
    encoder = ids[: seq.n_encoder] if seq.n_encoder else ids
    inputs = {"input_ids": torch.tensor([encoder], device=device)}
    if need_decoder:
        inputs["decoder_input_ids"] = torch.tensor([ids[seq.n_encoder :]], device=device)
    return inputs


# --- layers and heads -------------------------------------------------------------------------


def _blocks(lm: LM, stack: str) -> tuple[str, ...]:
    if lm.spec.kind == "encoder-decoder" and stack == "encoder":
        return lm.spec.encoder_blocks
    return lm.spec.blocks


def _labels(lm: LM, stack: str) -> tuple[str, ...]:
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
class _Request:
    """What to keep from one stack's blocks."""

    stack: str
    layers: list[int]
    heads: list[int] | None


def _capture(
    lm: LM,
    inputs: dict[str, torch.Tensor],
    requests: Sequence[_Request],
    n_query: dict[str, int],
    full: bool,
) -> tuple[dict[str, list[list[torch.Tensor]]], torch.Tensor | None]:
    """One forward pass; per stack and chosen layer, the attention tensors each block produced
    ([heads, query, key] on the CPU, chosen heads only), in the order the block produced them.

    ``full`` runs the whole model and returns its logits [n, vocab] too.
    """
    model = lm.model
    kept: dict[str, list[list[torch.Tensor]]] = {}
    handles: list[Any] = []

    def hooks_for(block: nn.Module, store: list[torch.Tensor], request: _Request, q: int) -> None:
        seen: list[torch.Tensor] = []  # originals of this block's pass (held until it ends)

        def save(module: nn.Module, _args: Any, output: Any) -> None:
            for tensor in _weights_in(output, q):
                if any(tensor is s for s in seen):
                    continue
                seen.append(tensor)
                picked = tensor[0] if request.heads is None else tensor[0, request.heads]
                picked = picked.detach().to("cpu", torch.float32)
                if tensor.element_size() < 4:  # rounded to 16 bits: make rows sum to 1 again
                    picked = picked / picked.sum(-1, keepdim=True)
                store.append(picked)
            if module is block:
                seen.clear()

        for sub in block.modules():
            handles.append(sub.register_forward_hook(save))

    try:
        blocks_of: dict[str, list[list[torch.Tensor]]] = {}
        for request in requests:
            source = "decoder" if request.stack == "cross" else request.stack
            if source in blocks_of:
                kept[request.stack] = blocks_of[source]
                continue
            paths = _blocks(lm, source)
            stores: list[list[torch.Tensor]] = [[] for _ in request.layers]
            for store, layer in zip(stores, request.layers, strict=True):
                hooks_for(model.get_submodule(paths[layer]), store, request, n_query[source])
            blocks_of[source] = stores
            kept[request.stack] = stores
        logits = None
        with eager_attention(model):
            if full:
                extra = (
                    {"use_cache": False} if lm.spec.kind in ("causal", "encoder-decoder") else {}
                )
                with analysis_mode(model), torch.inference_mode():
                    logits = cast(Any, model)(**inputs, **extra).logits[0].float()
            else:
                run_body(lm, inputs)
    finally:
        for handle in handles:
            handle.remove()
    return kept, logits


def _pick(
    lm: LM, stack: str, found: list[list[torch.Tensor]], layers: list[int], n_key: int
) -> torch.Tensor:
    """[n_layers, heads, query, key] for ``stack`` from each block's captured tensors."""
    index = 1 if stack == "cross" else 0
    labels = _labels(lm, stack)
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


def _check_causal(weights: torch.Tensor, stack: str) -> None:
    """Decoder self-attention [..., n, n] must put no weight on later tokens."""
    future = torch.triu(torch.ones(weights.shape[-2:], dtype=torch.bool), diagonal=1)
    if float((weights.abs() * future).max()) > 1e-6:
        raise UnsupportedModelError(
            f"captured {stack} attention puts weight on later tokens: the causal mask was not "
            "applied, so these weights are not the model's. Please report this model"
        )


def _needs_causal(lm: LM, stack: str) -> bool:
    return stack == "decoder" and lm.spec.kind in ("causal", "encoder-decoder")


def _spans(seq: _Sequence, stack: str) -> tuple[int, int, int, int]:
    """(query_start, n_query, key_start, n_key) of ``stack`` in the whole sequence."""
    n = len(seq.token_ids)
    n_enc = seq.n_encoder
    if stack == "encoder":
        count = n_enc if n_enc else n
        return 0, count, 0, count
    if stack == "cross":
        return n_enc, n - n_enc, 0, n_enc
    return n_enc, n - n_enc, n_enc, n - n_enc


def _one(lm: LM, source: Any, layers: Any, heads: Any, stack: str | None, dtype: str) -> Attention:
    stack = _check_stack(lm, stack, source)
    labels = _labels(lm, stack)
    chosen_layers = cast(list[int], _select("layers", layers, len(labels), "layer"))
    n_model_heads = config_heads(lm, stack)
    chosen_heads = _select("heads", heads, n_model_heads, "head")
    seq = _as_sequence(lm, source)
    q_start, n_q, k_start, n_k = _spans(seq, stack)
    inputs = _model_inputs(lm, seq, need_decoder=stack != "encoder")
    source_stack = "decoder" if stack == "cross" else stack
    found, _ = _capture(
        lm, inputs, [_Request(stack, chosen_layers, chosen_heads)], {source_stack: n_q}, False
    )
    weights = _pick(lm, stack, found[stack], chosen_layers, n_k)
    if _needs_causal(lm, stack):
        _check_causal(weights, stack)
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
        token_ids=np.array(seq.token_ids, dtype=np.int64),
        tokens=seq.tokens,
        n_input_tokens=seq.n_input,
        query_start=q_start,
        key_start=k_start,
        query_tokens=seq.tokens[q_start : q_start + n_q],
        key_tokens=seq.tokens[k_start : k_start + n_k],
        provenance=lm.provenance("attention", params),
    )


def attention(
    lm: LM,
    gen_or_text: Source | Sequence[Source],
    *,
    layers: Sequence[int] | int | None = None,
    heads: Sequence[int] | int | None = None,
    stack: str | None = None,
    dtype: str = "float32",
) -> Attention | tuple[Attention, ...]:
    """Attention weights of every (or the chosen) layer and head, from one forward pass.

    The weights are those of the model's eager attention whatever implementation it was
    loaded with (SDPA, flash attention): see the module docstring. The model is left as found.

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
        _select("layers", layers, len(_labels(lm, stack_of)), "layer")
        _select("heads", heads, config_heads(lm, stack_of), "head")
        _as_sequence(lm, source)
    records = [_one(lm, source, layers, heads, stack, dtype) for source in sources]
    return records[0] if single else tuple(records)


# --- attributions from attention ------------------------------------------------------------


def _residual(layer: np.ndarray) -> np.ndarray:
    """Heads averaged, identity mixed in for the residual, rows renormalised: [n_q, n_q]."""
    mixed = 0.5 * layer.mean(axis=0) + 0.5 * np.eye(layer.shape[-1])
    return cast(np.ndarray, mixed / mixed.sum(axis=-1, keepdims=True))


def rollout(weights: np.ndarray) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema 2020) of self-attention weights.

    Parameters
    ----------
    weights : [n_layers, n_heads, n, n] self-attention of every layer, first to last.

    Returns
    -------
    float64 [n, n]: ``R = Â_L ... Â_2 Â_1`` with ``Â_l = renorm(0.5 * mean_heads(A_l) + 0.5 * I)``;
    row ``i`` is how much of position ``i``'s last-layer state flows from each input token.
    """
    n = weights.shape[-1]
    joint = np.eye(n)
    for layer in np.asarray(weights, dtype=np.float64):
        joint = _residual(layer) @ joint
    return joint


def encoder_decoder_rollout(
    encoder: np.ndarray, decoder: np.ndarray, cross: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Rollout through an encoder-decoder model.

    The encoder is rolled out as in :func:`rollout` (``R_e`` [n_enc, n_enc]). In each decoder
    layer, self-attention acts as in :func:`rollout` on both parts of the decoder's flow; cross
    attention, also residual, then keeps half of the flow and adds half of its (heads-averaged)
    weights routed through the encoder: ``R_de <- 0.5 R_de + 0.5 C R_e``, ``R_dd <- 0.5 R_dd``.
    Rows of ``[R_de, R_dd]`` sum to 1.

    Parameters
    ----------
    encoder : [n_enc_layers, n_heads, n_enc, n_enc] encoder self-attention.
    decoder : [n_dec_layers, n_heads, n_dec, n_dec] decoder self-attention.
    cross : [n_dec_layers, n_heads, n_dec, n_enc] cross-attention.

    Returns
    -------
    (to_encoder float64 [n_dec, n_enc], to_decoder float64 [n_dec, n_dec]).
    """
    to_encoder_tokens = rollout(encoder)
    n_dec, n_enc = cross.shape[-2], cross.shape[-1]
    to_decoder = np.eye(n_dec)
    to_encoder = np.zeros((n_dec, n_enc))
    for self_layer, cross_layer in zip(
        np.asarray(decoder, dtype=np.float64), np.asarray(cross, dtype=np.float64), strict=True
    ):
        mixed = _residual(self_layer)
        to_decoder, to_encoder = mixed @ to_decoder, mixed @ to_encoder
        to_encoder = 0.5 * to_encoder + 0.5 * cross_layer.mean(axis=0) @ to_encoder_tokens
        to_decoder = 0.5 * to_decoder
    return to_encoder, to_decoder


ATTENTION_METHODS = ("attention_rollout", "attention_last_layer")


def _explained(lm: LM, record: Any) -> tuple[list[int], list[int], list[int]]:
    """(target positions, rows predicting them in the whole sequence, target ids)."""
    if isinstance(record, Generation):
        if record.n_generated == 0:
            raise InvalidArgumentError("the generation has no generated tokens to explain")
        positions = list(range(record.n_input_tokens, record.n_tokens))
        targets = record.token_ids[record.n_input_tokens :].tolist()
        return positions, [p - 1 for p in positions], targets
    if isinstance(record, MaskedPredictions):
        if record.positions.size == 0:
            raise InvalidArgumentError("the record has no mask positions to explain")
        positions = record.positions.tolist()
        return positions, positions, record.top_ids[:, 0].tolist()
    raise InvalidTypeError(
        "attention attributions explain a Generation or MaskedPredictions record, got "
        f"{type(record).__name__}"
    )


def attention_attributions(
    lm: LM, record: Generation | MaskedPredictions, method: str
) -> Attributions:
    """Attributions from attention: ``attention_rollout`` or ``attention_last_layer``.

    ``attention_rollout``: :func:`rollout` of every layer (encoder-decoder models:
    :func:`encoder_decoder_rollout`); the row of the state that predicts each token.
    ``attention_last_layer``: the last layer's attention averaged over heads, from the row that
    predicts each token (encoder-decoder models: the last decoder layer's cross-attention, so
    only encoder tokens score).

    Returns an :class:`Attributions` record like integrated gradients' with ``scores``
    [n_targets, n_tokens]: zero beyond each prediction's prefix (for causal models), each row
    summing to 1; ``target_values`` are the probabilities of the explained tokens.
    """
    method = check_choice("method", method, ATTENTION_METHODS)
    if lm.spec.head_input is None:
        raise InvalidArgumentError(f"{lm.name} has no LM head: there is no prediction to explain")
    positions, rows, targets = _explained(lm, record)
    seq = _as_sequence(lm, record)
    kind = lm.spec.kind
    if kind == "encoder-decoder":
        stacks = ["encoder", "decoder", "cross"]
    else:
        stacks = [model_stacks(kind)[0]]
    requests = [_Request(s, list(range(len(_labels(lm, s)))), None) for s in stacks]
    spans = {s: _spans(seq, s) for s in stacks}
    n_query = {("decoder" if s == "cross" else s): spans[s][1] for s in stacks}
    inputs = _model_inputs(lm, seq, need_decoder=kind == "encoder-decoder")
    found, logits = _capture(lm, inputs, requests, n_query, full=True)
    weights = {
        s: _pick(lm, s, found[s], requests[i].layers, spans[s][3]).numpy().astype(np.float64)
        for i, s in enumerate(stacks)
    }
    for s in stacks:
        if _needs_causal(lm, s):
            _check_causal(torch.from_numpy(weights[s]), s)
    n_tokens, n_enc = len(seq.token_ids), seq.n_encoder
    scores = np.zeros((len(rows), n_tokens))
    if kind == "encoder-decoder":
        local = [r - n_enc for r in rows]
        if method == "attention_rollout":
            to_enc, to_dec = encoder_decoder_rollout(
                weights["encoder"], weights["decoder"], weights["cross"]
            )
            scores[:, :n_enc], scores[:, n_enc:] = to_enc[local], to_dec[local]
        else:
            scores[:, :n_enc] = weights["cross"][-1].mean(axis=0)[local]
    else:
        main = weights[stacks[0]]
        flow = rollout(main) if method == "attention_rollout" else main[-1].mean(axis=0)
        scores[:] = flow[rows]
        local = rows
    sums = scores.sum(axis=1, keepdims=True)
    scores = np.divide(scores, sums, out=np.zeros_like(scores), where=sums > 0)
    probs = torch.softmax(cast(torch.Tensor, logits)[local], dim=-1)
    values = probs[torch.arange(len(rows)), torch.tensor(targets)].cpu().numpy()
    is_gen = isinstance(record, Generation)
    return Attributions(
        scores=scores.astype(np.float32),
        values=np.zeros((0, 0, 0), dtype=np.float32),
        token_ids=record.token_ids,
        tokens=record.tokens,
        n_input_tokens=record.n_input_tokens if is_gen else n_tokens,  # type: ignore[union-attr]
        n_encoder_tokens=record.n_encoder_tokens if is_gen else 0,  # type: ignore[union-attr]
        target_positions=np.array(positions, dtype=np.int64),
        target_ids=np.array(targets, dtype=np.int64),
        foil_id=-1,
        target_values=values.astype(np.float32),
        convergence_delta=np.zeros(0, dtype=np.float32),
        method=method,
        target="probability",
        aggregation="mean_heads",
        baseline="none",
        precision="fp32",
        precision_deviation=0.0,
        provenance=lm.provenance("attribute", {"method": method}),
    )


def attention_rollout(lm: LM, record: Generation | MaskedPredictions) -> Attributions:
    """Attention rollout attributions (see :func:`attention_attributions`)."""
    return attention_attributions(lm, record, "attention_rollout")


def attention_last_layer(lm: LM, record: Generation | MaskedPredictions) -> Attributions:
    """Last-layer attention averaged over heads (see :func:`attention_attributions`)."""
    return attention_attributions(lm, record, "attention_last_layer")
