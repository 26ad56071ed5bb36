"""Short text forms of records: what a notebook shows as ``text/plain``.

:func:`summary` says what a record is (kind, model, tokens) and gives its headline numbers in a
few lines, instead of a dump of every array. Front ends use it as the plain-text form of their
displays; ``repr(record)`` stays the full ``attrs`` representation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .convergence import unconverged_steps
from .records import (
    Activations,
    Attributions,
    Classification,
    Factorization,
    Generation,
    LayerPredictions,
    MaskedPredictions,
    Provenance,
    Rankings,
    RankingsWatch,
    Record,
)

__all__ = ["summary"]

_MAX_LIST = 5


def _clip(text: str, width: int = 70) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _top(tokens: Sequence[str], probs: Any, k: int = 3) -> str:
    return ", ".join(f"{t!r} {float(p):.2f}" for t, p in zip(tokens[:k], probs[:k], strict=True))


def _generation(rec: Generation) -> list[str]:
    lines = [
        f"{rec.n_tokens} tokens ({rec.n_input_tokens} input + {rec.n_generated} generated)",
        f"prompt: {_clip(repr(rec.prompt))}",
        f"generated: {_clip(repr(rec.text))}",
    ]
    for step in range(min(rec.n_generated, _MAX_LIST)):
        token = rec.tokens[rec.n_input_tokens + step]
        lines.append(f"  {token!r}: top {_top(rec.top_tokens[step], rec.top_probs[step])}")
    if rec.n_generated > _MAX_LIST:
        lines.append(f"  ... {rec.n_generated - _MAX_LIST} more steps")
    return lines


def _masked(rec: MaskedPredictions) -> list[str]:
    lines = [
        f"{len(rec.tokens)} tokens, {len(rec.positions)} masks",
        f"text: {_clip(repr(rec.text))}",
    ]
    for i, position in enumerate(rec.positions[:_MAX_LIST]):
        lines.append(f"  mask at {int(position)}: {_top(rec.top_tokens[i], rec.top_probs[i])}")
    return lines


def _classification(rec: Classification) -> list[str]:
    order = np.argsort(-rec.probs)[:_MAX_LIST]
    listed = ", ".join(f"{rec.labels[i]!r} {float(rec.probs[i]):.2f}" for i in order)
    return [f"{len(rec.tokens)} tokens: {_clip(repr(rec.text))}", f"classes: {listed}"]


def _first_rank_one(ranks: np.ndarray) -> list[int | None]:
    """The first layer at which each column is ranked 1 and stays so, else None."""
    result: list[int | None] = []
    for column in ranks.T:
        top = column == 1
        if not top[-1]:
            result.append(None)
            continue
        below = np.flatnonzero(~top)
        result.append(int(below[-1]) + 1 if below.size else 0)
    return result


def _rankings(rec: Rankings) -> list[str]:
    n_layers, n_gen = rec.ranks.shape
    depth = _first_rank_one(rec.ranks)
    listed = ", ".join(
        f"{t!r} {'-' if d is None else d}"
        for t, d in zip(rec.tokens[:_MAX_LIST], depth[:_MAX_LIST], strict=True)
    )
    return [
        f"ranks [{n_layers} layers x {n_gen} generated tokens], norm={rec.norm}",
        f"first layer ranking each token 1 for good: {listed}"
        + (" ..." if n_gen > _MAX_LIST else ""),
    ]


def _watch(rec: RankingsWatch) -> list[str]:
    last = rec.ranks[-1]
    listed = ", ".join(
        f"{t!r} {int(r)}"
        for t, r in zip(rec.watch_tokens[:_MAX_LIST], last[:_MAX_LIST], strict=True)
    )
    return [
        f"ranks [{rec.ranks.shape[0]} layers x {rec.ranks.shape[1]} watched tokens] at position "
        f"{rec.position}, norm={rec.norm}",
        f"rank at the last layer: {listed}",
    ]


def _layer_predictions(rec: LayerPredictions) -> list[str]:
    return [
        f"top-{rec.probs.shape[1]} tokens of {rec.probs.shape[0]} layers at position "
        f"{rec.position} (actual token {rec.target_token!r}), norm={rec.norm}",
        f"last layer: {_top(rec.tokens[-1], rec.probs[-1])}",
    ]


def _attributions(rec: Attributions) -> list[str]:
    n_targets, n_tokens = rec.scores.shape
    lines = [
        f"{rec.method} ({rec.target}, {rec.aggregation}, baseline {rec.baseline}): "
        f"scores [{n_targets} explained x {n_tokens} tokens]"
    ]
    for step in range(min(n_targets, _MAX_LIST)):
        position = int(rec.target_positions[step])
        label = repr(rec.tokens[position]) if position >= 0 else f"class {rec.target_ids[step]}"
        row = rec.scores[step]
        best = np.argsort(-np.abs(row), kind="stable")[:3]
        listed = ", ".join(f"{rec.tokens[j]!r} {float(row[j]):.2f}" for j in best)
        lines.append(f"  {label}: {listed}")
    flags = unconverged_steps(rec)
    if flags.any():
        lines.append(
            f"not converged for {int(flags.sum())} of {n_targets} explained tokens "
            f"(largest completeness delta {float(np.abs(rec.convergence_delta).max()):.3g})"
        )
    return lines


def _factorization(rec: Factorization) -> list[str]:
    texts = int(rec.text_index.max()) + 1 if rec.text_index.size else 0
    lines = [
        f"{rec.n_components} factors over {len(rec.tokens)} positions ({texts} texts) and "
        f"{rec.neuron_factors.shape[1]} neurons of {len(rec.layer_labels)} layers; "
        f"reconstruction error {rec.reconstruction_error:.3g}"
    ]
    for c in range(min(rec.n_components, _MAX_LIST)):
        j = int(np.argmax(rec.token_factors[c])) if rec.token_factors.shape[1] else 0
        lines.append(f"  factor {c}: strongest at {rec.tokens[j]!r} (position {j})")
    return lines


def _activations(rec: Activations) -> list[str]:
    n_layers, n_neurons, n_positions = rec.values.shape
    return [
        f"values [{n_layers} layers x {n_neurons} neurons x {n_positions} positions] "
        f"({rec.stack}, {rec.values.dtype})",
        f"tokens: {_clip(repr(''.join(rec.tokens)))}",
    ]


def _provenance(rec: Provenance) -> list[str]:
    return [f"{rec.function} with ecco-core {rec.library_version}"]


_LINES: dict[type[Record], Callable[[Any], list[str]]] = {
    Generation: _generation,
    MaskedPredictions: _masked,
    Classification: _classification,
    Rankings: _rankings,
    RankingsWatch: _watch,
    LayerPredictions: _layer_predictions,
    Attributions: _attributions,
    Factorization: _factorization,
    Activations: _activations,
    Provenance: _provenance,
}


def summary(record: Record) -> str:
    """A few lines saying what ``record`` is: its kind and model, then headline numbers.

    The first line is ``<Kind> of <model>``; the rest depends on the kind (generated text and
    top predictions, the rank-1 depth of each token, the top inputs behind each explained
    token, ...).
    """
    provenance = getattr(record, "provenance", record if isinstance(record, Provenance) else None)
    model = provenance.model if isinstance(provenance, Provenance) else "unknown model"
    lines = _LINES.get(type(record), lambda _: [])(record)
    return "\n".join([f"{type(record).KIND} of {model}", *lines])
