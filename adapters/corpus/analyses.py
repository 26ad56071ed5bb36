"""One function per analysis, each over the sequence of prompts or generations of a batch.

Each function makes one call into the core for the whole batch (the runner's ``--batch-size``
prompts): the core runs them as padded batches (``ec.attribute`` runs its captum methods
record by record; see its docstring). Each returns one entry per input: the record(s), or the
exception that stopped that input (the runner turns those into ``errors`` rows). When a call
over the whole batch fails, the inputs are retried one at a time so that one bad input fails
alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import ecco_core as ec

T = TypeVar("T")
R = TypeVar("R")


def each(call: Callable[[list[T]], Sequence[R]], items: Sequence[T]) -> list[R | Exception]:
    """``call(items)``, or when it raises, ``call([item])`` for every item on its own."""
    try:
        results = list(call(list(items)))
    except Exception as exc:
        if len(items) == 1:
            return [exc]
    else:
        return list(results)
    out: list[R | Exception] = []
    for item in items:
        try:
            out.extend(call([item]))
        except Exception as exc:
            out.append(exc)
    return out


def generate(lm: ec.LM, texts: Sequence[str], *, max_new_tokens: int) -> list[Any]:
    """Generations of ``texts`` (one padded batch through ``ec.generate``)."""

    def call(batch: list[str]) -> Sequence[Any]:
        out = ec.generate(lm, batch, max_new_tokens=max_new_tokens)
        return out if isinstance(out, tuple) else (out,)

    return each(call, texts)


def rankings(lm: ec.LM, gens: Sequence[ec.Generation]) -> list[Any]:
    """Rankings (norm="final") of each generation's generated tokens (one padded batch)."""
    return each(lambda batch: ec.rankings(lm, batch), gens)


def layer_predictions(lm: ec.LM, gens: Sequence[ec.Generation], *, top_k: int) -> list[Any]:
    """Per generation: a tuple of LayerPredictions, one per generated position (one padded
    batch)."""
    return each(
        lambda batch: ec.layer_predictions(
            lm, batch, [list(range(g.n_input_tokens, g.n_tokens)) for g in batch], top_k=top_k
        ),
        gens,
    )


def watch(lm: ec.LM, gens: Sequence[ec.Generation], *, tokens: Sequence[str]) -> list[Any]:
    """RankingsWatch of ``tokens`` at each generation's first generated position (one padded
    batch)."""
    return each(
        lambda batch: ec.rankings_watch(lm, batch, list(tokens), [g.n_input_tokens for g in batch]),
        gens,
    )


def attribution(
    lm: ec.LM, gens: Sequence[ec.Generation], *, method: str, n_steps: int
) -> list[Any]:
    """Attributions of every generated token of each generation with ``method``."""
    return each(
        lambda batch: ec.attribute(lm, batch, method, n_steps=n_steps, progress=False), gens
    )


def activations(lm: ec.LM, gens: Sequence[ec.Generation]) -> list[Any]:
    """FFN neuron activations of every block at every position of each generation (one padded
    batch)."""
    return each(lambda batch: ec.activations(lm, batch), gens)
