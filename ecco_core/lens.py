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
from .inputs import Batch, ModelInputs, chunks, model_inputs, pad_batch, watch_ids
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


def _cache_key(lm: LM, batch: Batch) -> tuple[Any, ...]:
    # Parameter storage and in-place version counters change when weights change. A batch is
    # keyed by all its members: padding changes the float results, so a record's work is
    # reused only in the same batch.
    weights = tuple((p.data_ptr(), p._version) for p in lm.model.parameters())
    ids = tuple((m.n_encoder_tokens, m.token_ids.tobytes()) for m in batch.members)
    return (weakref.ref(lm.model), lm.spec, weights, ids)


def _kept(name: str, key: Any) -> torch.Tensor | None:
    store = _SCOPE.get()
    entry = None if store is None else store.get(name)
    return entry[1] if entry is not None and entry[0] == key else None


def _keep(name: str, key: Any, value: torch.Tensor) -> None:
    store = _SCOPE.get()
    if store is not None:
        store[name] = (key, value)


def layer_states(lm: LM, batch: Batch, rows: Sequence[tuple[int, int]], key: Any) -> torch.Tensor:
    """Block outputs at (member, hidden row) pairs ``rows``: [n_layers, len(rows), hidden],
    from one forward pass over the padded batch.

    Inside a :func:`cache` scope the states of the most recent batch are kept under ``key``
    (see :func:`_cache_key`).
    """
    states = _kept("states", key)
    if states is None:
        with capture_outputs(modules(lm.model, lm.spec.blocks)) as outputs:
            run_body(lm, batch.inputs)
        if any(o is None for o in outputs):
            raise UnsupportedModelError(
                "some blocks did not run in the forward pass; check spec.blocks"
            )
        states = torch.stack([cast(torch.Tensor, o) for o in outputs])  # [L, B, width, hidden]
        _keep("states", key, states)
    with torch.inference_mode():
        width = states.shape[2]
        index = torch.as_tensor([b * width + r for b, r in rows], device=states.device)
        return states.flatten(1, 2).index_select(1, index)


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
    lm: LM, batch: Batch, wanted: Sequence[tuple[int, int]], norm: str
) -> Iterator[tuple[slice, torch.Tensor]]:
    """Logit-lens logits at (member, position) pairs ``wanted``, in chunks: (slice of
    ``wanted``, [n_layers, n, vocab])."""
    rows = [(b, batch.members[b].row(p)) for b, p in wanted]
    batch_key = _cache_key(lm, batch)
    states = layer_states(lm, batch, rows, batch_key)
    per = max(1, _LOGITS_BUDGET // max(1, states.shape[0] * lm.spec.vocab_size * 4))
    for start in range(0, len(rows), per):
        part = slice(start, min(start + per, len(rows)))
        key = (batch_key, norm, tuple(rows[part]))
        logits = _kept("logits", key)
        if logits is None:
            logits = lens_logits(lm, states[:, part], norm)
            if logits.numel() * logits.element_size() <= _LOGITS_KEPT:
                _keep("logits", key, logits)
        yield part, logits


def _n_input(rec: Any) -> int | None:
    return rec.n_input_tokens if isinstance(rec, Generation) else None


Lensed = Generation | MaskedPredictions
# Several records (``list`` is invariant, so lists of one kind are named too).
LensedMany = list[Generation] | list[MaskedPredictions] | list[Lensed] | tuple[Lensed, ...]


def _records(recs: Any, what: str) -> tuple[list[Any], bool]:
    """(records, was one record) of a record or a sequence of records."""
    if isinstance(recs, (Generation, MaskedPredictions)):
        return [recs], True
    if not isinstance(recs, (list, tuple)):
        raise InvalidTypeError(f"expected {what} or a list of them, got {type(recs).__name__}")
    if not recs:
        raise InvalidArgumentError(f"the list of records is empty; give at least one {what}")
    return list(recs), False


def _batches(lm: LM, recs: Sequence[Any], batch_size: int | None) -> Iterator[tuple[range, Batch]]:
    """(indices of ``recs``, their padded batch) for consecutive batches of ``batch_size``."""
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size, 1)
    seqs = [_sequence(lm, rec) for rec in recs]
    for part in chunks(len(recs), batch_size):
        yield part, pad_batch(lm, [seqs[i] for i in part])


def _rankings_of(
    lm: LM, gen: Generation, seq: ModelInputs, ranks: np.ndarray, norm: str
) -> Rankings:
    positions = np.arange(gen.n_input_tokens, gen.n_tokens)
    return Rankings(
        ranks=ranks.astype(np.int64),
        positions=positions,
        token_ids=seq.token_ids[positions],
        tokens=[seq.tokens[int(p)] for p in positions],
        sequence_tokens=seq.tokens,
        layer_labels=lm.spec.layer_labels(),
        norm=norm,
        provenance=lm.provenance("rankings", {"norm": norm}),
    )


@overload
def rankings(
    lm: LM, gen: Generation, *, norm: str = ..., batch_size: int | None = ...
) -> Rankings: ...


@overload
def rankings(
    lm: LM,
    gen: list[Generation] | tuple[Generation, ...],
    *,
    norm: str = ...,
    batch_size: int | None = ...,
) -> tuple[Rankings, ...]: ...


def rankings(
    lm: LM,
    gen: Generation | list[Generation] | tuple[Generation, ...],
    *,
    norm: str = "final",
    batch_size: int | None = None,
) -> Rankings | tuple[Rankings, ...]:
    """Rank (1 = top) of each generated token in every layer's logit-lens distribution.

    Parameters
    ----------
    gen : a :class:`Generation`, or a list of them: they then run as padded batches of
        ``batch_size`` (default: all at once), one forward pass per batch.
    norm : ``final`` (standard logit lens) or ``none`` (Ecco's projection).
    batch_size : records per forward pass, for a list.

    Returns
    -------
    Rankings with ``ranks`` [n_layers, n_generated], or a tuple of them (one per generation).
    """
    norm = check_choice("norm", norm, NORMS)
    gens, single = _records(gen, "Generation")
    for g in gens:
        if not isinstance(g, Generation):
            raise InvalidTypeError(f"rankings needs a Generation record, got {type(g).__name__}")
        if g.n_tokens == g.n_input_tokens:
            raise InvalidArgumentError("the generation has no generated tokens to rank")
    results: list[Rankings] = []
    for part, batch in _batches(lm, gens, batch_size):
        wanted = [
            (b, p)
            for b, i in enumerate(part)
            for p in range(gens[i].n_input_tokens, gens[i].n_tokens)
        ]
        targets = torch.as_tensor(
            [int(batch.members[b].token_ids[p]) for b, p in wanted], dtype=torch.long
        )
        ranks = []
        for chunk, logits in _lens_chunks(lm, batch, wanted, norm):
            index = targets[chunk].to(logits.device).expand(logits.shape[0], -1)[..., None]
            ranks.append(_ranks(logits, logits.gather(-1, index)).cpu())
        every = torch.cat(ranks, dim=1).numpy()  # [n_layers, len(wanted)]
        start = 0
        for b, i in enumerate(part):
            n = gens[i].n_generated
            seq = batch.members[b]
            results.append(_rankings_of(lm, gens[i], seq, every[:, start : start + n], norm))
            start += n
    return results[0] if single else tuple(results)


def _positions(recs: Sequence[Any], position: Any, single: bool) -> list[tuple[list[Any], bool]]:
    """Per record: (positions asked for, whether one position was given)."""
    if single:
        entries = [position]
    elif isinstance(position, (int, np.integer)):
        entries = [position] * len(recs)
    else:
        entries = list(position)
        if len(entries) != len(recs):
            raise InvalidArgumentError(
                f"{len(entries)} positions for {len(recs)} records; give one entry per record "
                "(a position or a list of positions), or one position for all"
            )
    out = []
    for entry in entries:
        one = not isinstance(entry, (list, tuple, np.ndarray, range))
        wanted = [entry] if one else list(entry)
        if not wanted:
            raise InvalidArgumentError("position is an empty list")
        out.append((wanted, one))
    return out


@overload
def layer_predictions(
    lm: LM,
    gen: Lensed,
    position: int | np.integer,
    *,
    top_k: int = ...,
    norm: str = ...,
    batch_size: int | None = ...,
) -> LayerPredictions: ...


@overload
def layer_predictions(
    lm: LM,
    gen: Lensed,
    position: Sequence[int] | np.ndarray,
    *,
    top_k: int = ...,
    norm: str = ...,
    batch_size: int | None = ...,
) -> tuple[LayerPredictions, ...]: ...


@overload
def layer_predictions(
    lm: LM,
    gen: LensedMany,
    position: int | np.integer | Sequence[int],
    *,
    top_k: int = ...,
    norm: str = ...,
    batch_size: int | None = ...,
) -> tuple[LayerPredictions, ...]: ...


@overload
def layer_predictions(
    lm: LM,
    gen: LensedMany,
    position: Sequence[Sequence[int]],
    *,
    top_k: int = ...,
    norm: str = ...,
    batch_size: int | None = ...,
) -> tuple[tuple[LayerPredictions, ...], ...]: ...


@overload
def layer_predictions(
    lm: LM,
    gen: LensedMany,
    position: Sequence[int | Sequence[int]],
    *,
    top_k: int = ...,
    norm: str = ...,
    batch_size: int | None = ...,
) -> tuple[LayerPredictions | tuple[LayerPredictions, ...], ...]: ...


def layer_predictions(
    lm: LM,
    gen: Lensed | LensedMany,
    position: Any,
    *,
    top_k: int = 10,
    norm: str = "final",
    batch_size: int | None = None,
) -> Any:
    """Top-k tokens and probabilities of every layer at ``position``.

    Parameters
    ----------
    gen : a :class:`Generation` or :class:`MaskedPredictions`, or a list of them (run as
        padded batches of ``batch_size``, default all at once).
    position : for one record, a position (one record returned) or a list of positions (one
        forward pass serves all; a tuple of records). For a list of records, one entry per
        record (a position, or a list of positions), or one position for every record.
    top_k : tokens kept per layer.
    norm : ``final`` or ``none``.
    batch_size : records per forward pass, for a list.

    Returns
    -------
    LayerPredictions with ``token_ids`` / ``probs`` [n_layers, top_k]; a tuple of them for a
    list of positions; for a list of records, a tuple with one entry per record (a record, or
    a tuple of records where that record's entry is a list).
    """
    norm = check_choice("norm", norm, NORMS)
    top_k = check_int("top_k", top_k, 1, lm.spec.vocab_size or None)
    recs, single = _records(gen, "Generation or MaskedPredictions")
    asked = _positions(recs, position, single)
    results: list[Any] = []
    for part, batch in _batches(lm, recs, batch_size):
        wanted = [
            (b, _check_position(batch.members[b], p, _n_input(recs[i])))
            for b, i in enumerate(part)
            for p in asked[i][0]
        ]
        made: list[LayerPredictions] = []
        for chunk, logits in _lens_chunks(lm, batch, wanted, norm):
            probs, ids = top_k_softmax(logits, top_k)
            for j, (b, p) in enumerate(wanted[chunk]):
                made.append(_layer_record(lm, batch.members[b], p, ids[:, j], probs[:, j], norm))
        start = 0
        for i in part:
            n = len(asked[i][0])
            results.append(made[start] if asked[i][1] else tuple(made[start : start + n]))
            start += n
    return results[0] if single else tuple(results)


def _layer_record(
    lm: LM, seq: ModelInputs, p: int, ids: torch.Tensor, probs: torch.Tensor, norm: str
) -> LayerPredictions:
    layer_ids = ids.cpu().numpy().astype(np.int64)
    top_k = layer_ids.shape[-1]
    return LayerPredictions(
        position=p,
        token_ids=layer_ids,
        probs=probs.cpu().numpy().astype(np.float32),
        tokens=token_table(lm.tokenizer, layer_ids),
        target_id=int(seq.token_ids[p]),
        target_token=seq.tokens[p],
        sequence_tokens=seq.tokens,
        layer_labels=lm.spec.layer_labels(),
        norm=norm,
        provenance=lm.provenance(
            "layer_predictions", {"position": p, "top_k": top_k, "norm": norm}
        ),
    )


@overload
def rankings_watch(
    lm: LM,
    gen: Lensed,
    watch: Sequence[int | str],
    position: int,
    *,
    norm: str = ...,
    batch_size: int | None = ...,
) -> RankingsWatch: ...


@overload
def rankings_watch(
    lm: LM,
    gen: LensedMany,
    watch: Sequence[int | str],
    position: int | Sequence[int],
    *,
    norm: str = ...,
    batch_size: int | None = ...,
) -> tuple[RankingsWatch, ...]: ...


def rankings_watch(
    lm: LM,
    gen: Lensed | LensedMany,
    watch: Sequence[int | str],
    position: int | Sequence[int],
    *,
    norm: str = "final",
    batch_size: int | None = None,
) -> RankingsWatch | tuple[RankingsWatch, ...]:
    """Rank of each watched token at every layer, at ``position``.

    Parameters
    ----------
    gen : a :class:`Generation` or :class:`MaskedPredictions`, or a list of them (run as
        padded batches of ``batch_size``, default all at once).
    watch : token ids, or strings that are one token each.
    position : the predicted position; for a list of records, one position per record or one
        for all.
    norm : ``final`` or ``none``.
    batch_size : records per forward pass, for a list.

    Returns
    -------
    RankingsWatch with ``ranks`` [n_layers, n_watch], or a tuple of them (one per record).
    """
    norm = check_choice("norm", norm, NORMS)
    recs, single = _records(gen, "Generation or MaskedPredictions")
    ids = watch_ids(lm, watch)
    asked = _positions(recs, position, single)
    if not all(one for _, one in asked):
        raise InvalidArgumentError("rankings_watch takes one position per record, not a list")
    _, shown = display_tokens(lm.tokenizer, ids)
    results = []
    for part, batch in _batches(lm, recs, batch_size):
        wanted = [
            (b, _check_position(batch.members[b], asked[i][0][0], _n_input(recs[i])))
            for b, i in enumerate(part)
        ]
        for chunk, logits in _lens_chunks(lm, batch, wanted, norm):
            chosen = logits[:, :, ids]  # [n_layers, n, n_watch]
            ranks = (
                torch.stack(
                    [_ranks(logits, chosen[..., w : w + 1]) for w in range(len(ids))], dim=-1
                )
                .cpu()
                .numpy()
            )  # [n_layers, n, n_watch]
            for j, (b, p) in enumerate(wanted[chunk]):
                results.append(
                    RankingsWatch(
                        position=p,
                        ranks=ranks[:, j].astype(np.int64),
                        watch_ids=np.array(ids, dtype=np.int64),
                        watch_tokens=shown,
                        sequence_tokens=batch.members[b].tokens,
                        layer_labels=lm.spec.layer_labels(),
                        norm=norm,
                        provenance=lm.provenance(
                            "rankings_watch", {"position": p, "norm": norm, "watch": ids}
                        ),
                    )
                )
    return results[0] if single else tuple(results)
