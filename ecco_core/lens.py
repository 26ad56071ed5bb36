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
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, cast, overload

import numpy as np
import torch

from .capture import capture_outputs
from .checks import check_choice, check_int
from .errors import InvalidArgumentError, InvalidTypeError, UnsupportedModelError
from .forward import head_logits, run_body
from .head import top_k_softmax
from .inputs import ModelInputs, model_inputs, watch_ids
from .loading import LM, what_works
from .model_spec import modules
from .records import Generation, LayerPredictions, MaskedPredictions, Rankings, RankingsWatch
from .tokens import display_tokens, token_table

NORMS = ("final", "none")
_LOGITS_BUDGET = 256 * 2**20  # bytes of float32 logits held at once


def _sequence(lm: LM, rec: Any) -> ModelInputs:
    if lm.spec.head_input is None:
        raise InvalidArgumentError(
            f"{lm.name} has no LM head ({lm.spec.kind} model): the logit lens needs one; "
            f"{what_works(lm.spec.kind)}"
        )
    if not isinstance(rec, (Generation, MaskedPredictions)):
        raise InvalidTypeError(
            f"expected a Generation or MaskedPredictions record, got {type(rec).__name__}"
        )
    return model_inputs(lm, rec)


def _check_position(seq: ModelInputs, position: Any, n_input: int | None) -> int:
    first, last = seq.first_position, len(seq.token_ids) - 1
    try:
        return check_int("position", position, first, last)
    except InvalidArgumentError as exc:
        hint = f" (the first generated token is at {n_input})" if n_input is not None else ""
        raise InvalidArgumentError(
            f"position={position} is not a predicted position of this sequence; valid: "
            f"{first} to {last}{hint}"
        ) from exc


# Work kept inside a `cache()` scope: block outputs ("states") and logit-lens logits
# ("logits") of the most recent sequence, each with the key it was computed for.
_SCOPE: ContextVar[dict[str, tuple[Any, torch.Tensor]] | None] = ContextVar(
    "ecco_core_lens_cache", default=None
)
_LOGITS_KEPT = 64 * 2**20  # bytes: larger logits are not kept


@contextmanager
def cache() -> Iterator[None]:
    """Share the logit lens's work between calls inside a ``with`` block.

    Inside ``with ecco_core.lens_cache():``, :func:`rankings`, :func:`layer_predictions` and
    :func:`rankings_watch` of the same sequence reuse one forward pass (and the logits of the
    positions last asked for). Work is reused only when everything that changes the result is
    the same: the model object, its spec (blocks, final norm, head), its weights (storage and
    in-place version counters), the token ids and the norm. Leaving the block drops every kept
    tensor; outside a block nothing is kept. Nested blocks share the outer block's store.
    """
    if _SCOPE.get() is not None:
        yield
        return
    store: dict[str, tuple[Any, torch.Tensor]] = {}
    token = _SCOPE.set(store)
    try:
        yield
    finally:
        store.clear()
        _SCOPE.reset(token)


def _cache_key(lm: LM, seq: ModelInputs) -> tuple[Any, ...]:
    # Parameter storage and in-place version counters change when weights change.
    weights = tuple((p.data_ptr(), p._version) for p in lm.model.parameters())
    ids = (seq.n_encoder_tokens, seq.token_ids.tobytes())
    return (weakref.ref(lm.model), lm.spec, weights, ids)


def _kept(name: str, key: Any) -> torch.Tensor | None:
    store = _SCOPE.get()
    entry = None if store is None else store.get(name)
    return entry[1] if entry is not None and entry[0] == key else None


def _keep(name: str, key: Any, value: torch.Tensor) -> None:
    store = _SCOPE.get()
    if store is not None:
        store[name] = (key, value)


def layer_states(lm: LM, seq: ModelInputs, rows: Sequence[int], key: Any) -> torch.Tensor:
    """Block outputs at hidden ``rows``: [n_layers, n_rows, hidden] (one forward pass).

    Inside a :func:`cache` scope the states of the most recent sequence are kept under
    ``key`` (see :func:`_cache_key`).
    """
    states = _kept("states", key)
    if states is None:
        with capture_outputs(modules(lm.model, lm.spec.blocks)) as outputs:
            run_body(lm, seq.inputs)
        if any(o is None for o in outputs):
            raise UnsupportedModelError(
                "some blocks did not run in the forward pass; check spec.blocks"
            )
        states = torch.stack([cast(torch.Tensor, o)[0] for o in outputs])
        _keep("states", key, states)
    with torch.inference_mode():
        index = torch.as_tensor(list(rows), device=states.device)
        return states.index_select(1, index)


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
    lm: LM, seq: ModelInputs, positions: Sequence[int], norm: str
) -> Iterator[tuple[slice, torch.Tensor]]:
    """Logit-lens logits at ``positions``, in chunks: (slice of positions, [n_layers, n, vocab])."""
    rows = [seq.row(p) for p in positions]
    sequence_key = _cache_key(lm, seq)
    states = layer_states(lm, seq, rows, sequence_key)
    per = max(1, _LOGITS_BUDGET // max(1, states.shape[0] * lm.spec.vocab_size * 4))
    for start in range(0, len(rows), per):
        part = slice(start, min(start + per, len(rows)))
        key = (sequence_key, norm, tuple(rows[part]))
        logits = _kept("logits", key)
        if logits is None:
            logits = lens_logits(lm, states[:, part], norm)
            if logits.numel() * logits.element_size() <= _LOGITS_KEPT:
                _keep("logits", key, logits)
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
    seq = _sequence(lm, gen)
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


@overload
def layer_predictions(
    lm: LM,
    gen: Generation | MaskedPredictions,
    position: int | np.integer,
    *,
    top_k: int = ...,
    norm: str = ...,
) -> LayerPredictions: ...


@overload
def layer_predictions(
    lm: LM,
    gen: Generation | MaskedPredictions,
    position: Sequence[int] | np.ndarray,
    *,
    top_k: int = ...,
    norm: str = ...,
) -> tuple[LayerPredictions, ...]: ...


def layer_predictions(
    lm: LM,
    gen: Generation | MaskedPredictions,
    position: int | np.integer | Sequence[int] | np.ndarray,
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
    seq = _sequence(lm, gen)
    single = not isinstance(position, (list, tuple, np.ndarray, range))
    wanted = [position] if single else list(cast(Sequence[int], position))
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
    seq = _sequence(lm, gen)
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
