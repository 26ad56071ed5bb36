"""Logit lens: what each layer would predict, from one teacher-forced forward pass.

The outputs of every block are captured with hooks during one forward pass over the whole
sequence; the LM head is then applied to them for the positions asked for. The causal mask
makes position ``t`` depend only on its prefix, so this equals running each prefix separately.

``norm="final"`` applies the model's final norm to every layer (the standard logit lens);
``norm="none"`` projects intermediate layers without it, as Ecco did. In both modes the last
row is the model's own output distribution.

A *position* is the absolute index, in the full sequence, of the token being predicted: for a
causal model the first generated token is at ``gen.n_input_tokens`` and is predicted from the
hidden state at ``position - 1``.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Sequence
from typing import Any, cast

import attrs
import numpy as np
import torch

from .capture import analysis_mode, capture_outputs, model_device
from .checks import check_choice, check_int
from .errors import InvalidArgumentError, InvalidTypeError, UnsupportedModelError
from .head import head_by_forward, head_by_linear, top_k_softmax
from .loading import LM, check_record_ids, what_works
from .model_spec import modules
from .records import Generation, LayerPredictions, MaskedPredictions, Rankings, RankingsWatch
from .tokens import display_tokens, token_table

NORMS = ("final", "none")
_LOGITS_BUDGET = 256 * 2**20  # bytes of float32 logits held at once


@attrs.frozen
class _Sequence:
    """A record's tokens as model inputs, and how positions map to hidden-state rows."""

    inputs: dict[str, torch.Tensor]
    token_ids: np.ndarray  # [n_tokens]
    row_offset: int  # hidden row of position p is p - row_offset
    first: int  # first valid position
    tokens: Sequence[str]


def _as_sequence(lm: LM, rec: Any) -> _Sequence:
    if lm.spec.head_input is None:
        raise InvalidArgumentError(
            f"{lm.name} has no LM head ({lm.spec.kind} model): the logit lens needs one; "
            f"{what_works(lm.spec.kind)}"
        )
    if not isinstance(rec, (Generation, MaskedPredictions)):
        raise InvalidTypeError(
            f"expected a Generation or MaskedPredictions record, got {type(rec).__name__}"
        )
    ids = rec.token_ids
    check_record_ids(lm, ids.tolist())
    device = model_device(lm.model)
    tensor = torch.tensor(np.array(ids), device=device)[None]
    if isinstance(rec, MaskedPredictions):
        if lm.spec.kind != "masked":
            raise InvalidArgumentError("a MaskedPredictions record needs a masked LM")
        return _Sequence({"input_ids": tensor}, ids, 0, 0, rec.tokens)
    if rec.model_kind != lm.spec.kind:
        raise InvalidArgumentError(
            f"record comes from a {rec.model_kind} model but {lm.name} is {lm.spec.kind}"
        )
    if lm.spec.kind == "encoder-decoder":
        n_enc = rec.n_encoder_tokens
        inputs = {"input_ids": tensor[:, :n_enc], "decoder_input_ids": tensor[:, n_enc:]}
        return _Sequence(inputs, ids, n_enc + 1, n_enc + 1, rec.tokens)
    return _Sequence({"input_ids": tensor}, ids, 1, 1, rec.tokens)


def _check_position(seq: _Sequence, position: Any, n_input: int | None) -> int:
    last = len(seq.token_ids) - 1
    try:
        return check_int("position", position, seq.first, last)
    except InvalidArgumentError as exc:
        hint = f" (the first generated token is at {n_input})" if n_input is not None else ""
        raise InvalidArgumentError(
            f"position={position} is not a predicted position of this sequence; valid: "
            f"{seq.first} to {last}{hint}"
        ) from exc


# The most recent block outputs ("states") and logit-lens logits ("logits"), with their keys,
# so that rankings, layer predictions and rankings watch of one generation share the work.
_CACHE: dict[str, tuple[Any, torch.Tensor]] = {}
_LOGITS_KEPT = 64 * 2**20  # bytes: larger logits are not kept


def _cache_key(lm: LM, seq: _Sequence) -> tuple[Any, ...]:
    # Parameter storage and in-place version counters change when weights change.
    weights = tuple((p.data_ptr(), p._version) for p in lm.model.parameters())
    inputs = tuple((k, tuple(v.shape), v.cpu().numpy().tobytes()) for k, v in seq.inputs.items())
    return (weakref.ref(lm.model), lm.spec.blocks, weights, inputs)


def clear_cache() -> None:
    """Forget the block outputs and logits kept from the most recent sequence."""
    _CACHE.clear()


def layer_states(lm: LM, seq: _Sequence, rows: Sequence[int], key: Any) -> torch.Tensor:
    """Block outputs at hidden ``rows``: [n_layers, n_rows, hidden] (one forward pass).

    The states of the most recent sequence are kept under ``key`` (see :func:`_cache_key`), so
    that rankings, layer predictions and rankings watch of one generation share one forward pass.
    """
    model, spec = lm.model, lm.spec
    cached = _CACHE.get("states")
    if cached is not None and cached[0] == key:
        states = cached[1]
    else:
        with capture_outputs(modules(model, spec.blocks)) as outputs:
            run_forward(lm, seq.inputs)
        if any(o is None for o in outputs):
            raise UnsupportedModelError(
                "some blocks did not run in the forward pass; check spec.blocks"
            )
        states = torch.stack([cast(torch.Tensor, o)[0] for o in outputs])
        _CACHE["states"] = (key, states)
    with torch.inference_mode():
        index = torch.as_tensor(list(rows), device=states.device)
        return states.index_select(1, index)


def run_forward(lm: LM, inputs: dict[str, torch.Tensor]) -> None:
    """One forward pass for hooks to observe, skipping the LM head where possible.

    Decoder-only and encoder models run only their stack (``spec.head_input`` or the bare
    model); encoder-decoder models run whole (or only the encoder when no decoder input is given).
    """
    model, spec = lm.model, lm.spec
    runner: Any = model
    extra: dict[str, Any] = {}
    if spec.kind == "encoder-decoder":
        if "decoder_input_ids" not in inputs:
            runner = cast(Any, model).get_encoder()
        else:
            extra = {"use_cache": False}
    elif spec.head_input is not None:
        runner = model.get_submodule(spec.head_input)
        extra = {"use_cache": False} if spec.kind == "causal" else {}
    with analysis_mode(model), torch.inference_mode():
        runner(**inputs, **extra)


def head_logits(lm: LM, hidden: torch.Tensor) -> torch.Tensor:
    """Apply the model's LM head: hidden [..., hidden_size] -> float32 logits [..., vocab]."""
    spec = lm.spec
    if spec.head_input is None:
        raise InvalidArgumentError(f"{lm.name} has no LM head")
    if spec.head_is_linear:
        logits = head_by_linear(lm.model, hidden)
    else:
        logits = head_by_forward(lm.model, spec.kind, spec.head_input, hidden)
    return logits.float()


def lens_logits(lm: LM, states: torch.Tensor, norm: str) -> torch.Tensor:
    """Logit-lens logits of block outputs: states [n_layers, n, hidden] -> [n_layers, n, vocab]."""
    if lm.spec.final_norm is not None:
        final = lm.model.get_submodule(lm.spec.final_norm)
        with torch.inference_mode():
            if norm == "final":
                states = final(states)
            else:
                states = torch.cat([states[:-1], final(states[-1:])])
    return head_logits(lm, states)


def _ranks(logits: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """1 + how many logits [..., vocab] exceed ``chosen`` [..., 1]: rank 1 is the top token."""
    return (logits > chosen).sum(-1, dtype=torch.int32) + 1


def _lens_chunks(
    lm: LM, seq: _Sequence, positions: Sequence[int], norm: str
) -> Iterator[tuple[slice, torch.Tensor]]:
    """Logit-lens logits at ``positions``, in chunks: (slice of positions, [n_layers, n, vocab])."""
    rows = [int(p) - seq.row_offset for p in positions]
    sequence_key = _cache_key(lm, seq)
    states = layer_states(lm, seq, rows, sequence_key)
    per = max(1, _LOGITS_BUDGET // max(1, states.shape[0] * lm.spec.vocab_size * 4))
    for start in range(0, len(rows), per):
        part = slice(start, min(start + per, len(rows)))
        key = (sequence_key, norm, tuple(rows[part]))
        cached = _CACHE.get("logits")
        if cached is not None and cached[0] == key:
            yield part, cached[1]
            continue
        logits = lens_logits(lm, states[:, part], norm)
        if logits.numel() * logits.element_size() <= _LOGITS_KEPT:
            _CACHE["logits"] = (key, logits)
        yield part, logits


def _n_input(rec: Any) -> int | None:
    return rec.n_input_tokens if isinstance(rec, Generation) else None


def rankings(lm: LM, gen: Generation, *, norm: str = "final") -> Rankings:
    """Rank (1 = top) of each generated token in every layer's logit-lens distribution.

    Returns a :class:`Rankings` with ``ranks`` [n_layers, n_generated].
    """
    norm = check_choice("norm", norm, NORMS)
    if not isinstance(gen, Generation):
        raise InvalidTypeError(f"rankings needs a Generation record, got {type(gen).__name__}")
    seq = _as_sequence(lm, gen)
    positions = np.arange(gen.n_input_tokens, gen.n_tokens)
    if positions.size == 0:
        raise InvalidArgumentError("the generation has no generated tokens to rank")
    targets = torch.as_tensor(seq.token_ids[positions])
    ranks = []
    for part, logits in _lens_chunks(lm, seq, positions.tolist(), norm):
        index = targets[part].to(logits.device).expand(logits.shape[0], -1)[..., None]
        chosen = logits.gather(-1, index)
        ranks.append(_ranks(logits, chosen).cpu())
    return Rankings(
        ranks=torch.cat(ranks, dim=1).numpy().astype(np.int64),
        positions=positions,
        token_ids=seq.token_ids[positions],
        tokens=[seq.tokens[int(p)] for p in positions],
        sequence_tokens=seq.tokens,
        layer_labels=lm.spec.layer_labels(),
        norm=norm,
        provenance=lm.provenance("rankings", {"norm": norm}),
    )


def layer_predictions(
    lm: LM,
    gen: Generation | MaskedPredictions,
    position: int | Sequence[int],
    *,
    top_k: int = 10,
    norm: str = "final",
) -> LayerPredictions | tuple[LayerPredictions, ...]:
    """Top-k tokens and probabilities of every layer at ``position``.

    ``position`` may be a list of positions: one forward pass then serves all of them and a
    tuple of records is returned. Each record has ``token_ids`` / ``probs`` [n_layers, top_k].
    """
    norm = check_choice("norm", norm, NORMS)
    top_k = check_int("top_k", top_k, 1, lm.spec.vocab_size or None)
    seq = _as_sequence(lm, gen)
    single = not isinstance(position, (list, tuple, np.ndarray, range))
    wanted = [position] if single else list(position)  # type: ignore[arg-type]
    if not wanted:
        raise InvalidArgumentError("position is an empty list")
    checked = [_check_position(seq, p, _n_input(gen)) for p in wanted]
    results = []
    for part, logits in _lens_chunks(lm, seq, checked, norm):
        probs, ids = top_k_softmax(logits, top_k)
        for j, p in enumerate(checked[part]):
            layer_ids = ids[:, j].cpu().numpy().astype(np.int64)
            target = int(seq.token_ids[p])
            results.append(
                LayerPredictions(
                    position=p,
                    token_ids=layer_ids,
                    probs=probs[:, j].cpu().numpy().astype(np.float32),
                    tokens=token_table(lm.tokenizer, layer_ids),
                    target_id=target,
                    target_token=seq.tokens[p],
                    sequence_tokens=seq.tokens,
                    layer_labels=lm.spec.layer_labels(),
                    norm=norm,
                    provenance=lm.provenance(
                        "layer_predictions", {"position": p, "top_k": top_k, "norm": norm}
                    ),
                )
            )
    return results[0] if single else tuple(results)


def watch_ids(lm: LM, watch: Sequence[int | str]) -> list[int]:
    """Token ids of ``watch`` entries (ids, or strings that must be exactly one token)."""
    if isinstance(watch, (str, int)) or not len(watch):
        raise InvalidArgumentError("watch must be a non-empty list of token ids or strings")
    ids = []
    for item in watch:
        if isinstance(item, str):
            encoded = lm.tokenizer(item, add_special_tokens=False)["input_ids"]
            if len(encoded) != 1:
                pieces = lm.tokenizer.convert_ids_to_tokens(encoded)
                raise InvalidArgumentError(
                    f"watch token {item!r} is {len(encoded)} tokens {pieces}, not one; "
                    "watch a single token (mind the leading space: ' London')"
                )
            ids.append(int(encoded[0]))
        else:
            ids.append(check_int("watch token id", item, 0, lm.spec.vocab_size - 1))
    return ids


def rankings_watch(
    lm: LM,
    gen: Generation | MaskedPredictions,
    watch: Sequence[int | str],
    position: int,
    *,
    norm: str = "final",
) -> RankingsWatch:
    """Rank of each watched token at every layer, at ``position``.

    Returns a :class:`RankingsWatch` with ``ranks`` [n_layers, n_watch].
    """
    norm = check_choice("norm", norm, NORMS)
    seq = _as_sequence(lm, gen)
    ids = watch_ids(lm, watch)
    p = _check_position(seq, position, _n_input(gen))
    _, logits = next(_lens_chunks(lm, seq, [p], norm))
    logits = logits[:, 0]  # [n_layers, vocab]
    chosen = logits[:, ids]  # [n_layers, n_watch]
    ranks = _ranks(logits[:, None, :], chosen[..., None])
    _, shown = display_tokens(lm.tokenizer, ids)
    return RankingsWatch(
        position=p,
        ranks=ranks.cpu().numpy().astype(np.int64),
        watch_ids=np.array(ids, dtype=np.int64),
        watch_tokens=shown,
        sequence_tokens=seq.tokens,
        layer_labels=lm.spec.layer_labels(),
        norm=norm,
        provenance=lm.provenance("rankings_watch", {"position": p, "norm": norm, "watch": ids}),
    )
