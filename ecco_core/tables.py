"""Records as tables: one long (tidy) ``pyarrow.Table`` per kind of result.

:func:`to_tables` turns records into tables that pandas (``t.to_pandas()``), Polars, DuckDB and
Ray read directly: one row per value (per layer, per step, per source token, ...). The table
names and the columns listed in docs/tables.md are a public contract. Numbers are copied, not
recomputed: a float32 score in a record is the same float32 in its table.

``prompt_id`` is the record's index in the sequence given to :func:`to_tables` unless
``prompt_ids`` says otherwise (a corpus run passes each input row's id). ``layer`` is the block
index 0..n_layers-1, as in records; ``k`` and ``rank`` start at 1 (1 = most probable).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from .errors import InvalidArgumentError, InvalidTypeError
from .records import (
    Activations,
    Attention,
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
    thaw_json,
)

PromptId = int | str

_STR = pa.string()
_I64 = pa.int64()
_F32 = pa.float32()

# Columns of every table except ``prompt_id`` (whose type is that of the ids: int64 or string).
_COLUMNS: dict[str, list[tuple[str, pa.DataType]]] = {
    "generations": [
        ("step", _I64),
        ("position", _I64),
        ("token_id", _I64),
        ("token", _STR),
        ("prob", _F32),
        ("top_ids", pa.list_(_I64)),
        ("top_tokens", pa.list_(_STR)),
        ("top_probs", pa.list_(_F32)),
        ("depth", _I64),
        ("prompt", _STR),
        ("model", _STR),
    ],
    "rankings": [
        ("step", _I64),
        ("position", _I64),
        ("token_id", _I64),
        ("token", _STR),
        ("layer", _I64),
        ("layer_label", _STR),
        ("rank", _I64),
        ("norm", _STR),
        ("model", _STR),
    ],
    "watch": [
        ("position", _I64),
        ("layer", _I64),
        ("layer_label", _STR),
        ("token_id", _I64),
        ("token", _STR),
        ("rank", _I64),
        ("norm", _STR),
        ("model", _STR),
    ],
    "layer_predictions": [
        ("position", _I64),
        ("target_token", _STR),
        ("layer", _I64),
        ("layer_label", _STR),
        ("k", _I64),
        ("token_id", _I64),
        ("token", _STR),
        ("prob", _F32),
        ("norm", _STR),
        ("model", _STR),
    ],
    "attributions": [
        ("method", _STR),
        ("step", _I64),
        ("target_position", _I64),
        ("target_id", _I64),
        ("target_token", _STR),
        ("source_index", _I64),
        ("source_id", _I64),
        ("source_token", _STR),
        ("is_input", pa.bool_()),
        ("score", _F32),
        ("target_value", _F32),
        ("convergence_delta", _F32),
        ("target", _STR),
        ("aggregation", _STR),
        ("model", _STR),
    ],
    "attention": [
        ("stack", _STR),
        ("layer", _I64),
        ("layer_label", _STR),
        ("head", _I64),
        ("query_index", _I64),
        ("query_token", _STR),
        ("key_index", _I64),
        ("key_token", _STR),
        ("weight", _F32),
        ("model", _STR),
    ],
    "activations": [
        ("position", _I64),
        ("token", _STR),
        ("layer", _I64),
        ("layer_label", _STR),
        ("neuron", _I64),
        ("value", _F32),
        ("stack", _STR),
        ("model", _STR),
    ],
    "factor_loadings": [
        ("factorization", _I64),
        ("factor", _I64),
        ("layer", _I64),
        ("neuron", _I64),
        ("loading", _F32),
    ],
    "factor_examples": [
        ("factorization", _I64),
        ("factor", _I64),
        ("rank", _I64),
        ("position", _I64),
        ("token_id", _I64),
        ("token", _STR),
        ("activation", _F32),
        ("context", _STR),
    ],
    "masked_predictions": [
        ("position", _I64),
        ("k", _I64),
        ("token_id", _I64),
        ("token", _STR),
        ("prob", _F32),
        ("model", _STR),
    ],
    "classifications": [
        ("label_index", _I64),
        ("label", _STR),
        ("prob", _F32),
        ("predicted", pa.bool_()),
        ("model", _STR),
    ],
    "provenance": [
        ("model", _STR),
        ("revision", _STR),
        ("function", _STR),
        ("params", _STR),
        ("library_version", _STR),
        ("transformers_version", _STR),
        ("torch_version", _STR),
    ],
    "errors": [
        ("stage", _STR),
        ("message", _STR),
        ("text", _STR),
    ],
}

# Tables without a prompt_id column (rows describe a factorization, not a prompt).
_NO_PROMPT = ("factor_loadings",)

TABLE_NAMES: tuple[str, ...] = tuple(_COLUMNS)

CONTEXT_TOKENS = 6  # tokens each side of an example token in factor_examples.context


def schema(name: str, id_type: pa.DataType = _I64) -> pa.Schema:
    """The schema of table ``name``, with ``prompt_id`` of type ``id_type`` (int64 or string)."""
    if name not in _COLUMNS:
        raise InvalidArgumentError(f"unknown table {name!r}; tables: {', '.join(TABLE_NAMES)}")
    fields = [] if name in _NO_PROMPT else [pa.field("prompt_id", id_type)]
    return pa.schema(fields + [pa.field(n, t) for n, t in _COLUMNS[name]])


def id_type(prompt_ids: Sequence[PromptId]) -> pa.DataType:
    """``string`` when any id is a string, else ``int64``."""
    return _STR if any(isinstance(p, str) for p in prompt_ids) else _I64


def prediction_depth(ranks: np.ndarray) -> list[int | None]:
    """First layer from which each token stays rank 1 through the last layer.

    Parameters
    ----------
    ranks : int [n_layers, n_tokens] ranks (1 = top), e.g. :attr:`Rankings.ranks`.

    Returns
    -------
    One entry per token: the layer index, or None where the token is not rank 1 at the last
    layer.
    """
    top = np.asarray(ranks) == 1  # [n_layers, n_tokens]
    # trailing[i] = number of consecutive rank-1 layers ending at the last layer
    trailing = np.cumprod(top[::-1], axis=0).sum(axis=0)
    n_layers = top.shape[0]
    return [int(n_layers - t) if t > 0 else None for t in trailing.tolist()]


def _grid(*sizes: int) -> list[np.ndarray]:
    """Index arrays [prod(sizes)] of every combination, row-major (the last index fastest)."""
    return [a.ravel() for a in np.meshgrid(*(np.arange(n) for n in sizes), indexing="ij")]


def _model(rec: Any) -> str:
    return str(rec.provenance.model)


def _repeat(value: Any, n: int) -> list[Any]:
    return [value] * n


def _matches(ranks: Rankings, gen: Generation) -> bool:
    return (
        ranks.norm == "final"
        and tuple(ranks.sequence_tokens) == tuple(gen.tokens)
        and np.array_equal(ranks.positions, np.arange(gen.n_input_tokens, gen.n_tokens))
        and np.array_equal(ranks.token_ids, gen.generated_ids)
    )


def _generation(gen: Generation, depth: list[int | None] | None) -> dict[str, Any]:
    n = gen.n_generated
    steps = np.arange(n, dtype=np.int64)
    chosen = gen.generated_ids
    prob: list[float | None] = []
    for s in range(n):
        hit = np.flatnonzero(gen.top_ids[s] == chosen[s])
        prob.append(float(gen.top_probs[s, hit[0]]) if hit.size else None)
    return {
        "step": steps,
        "position": steps + gen.n_input_tokens,
        "token_id": chosen,
        "token": list(gen.tokens[gen.n_input_tokens :]),
        "prob": pa.array(prob, _F32),
        "top_ids": [row.tolist() for row in gen.top_ids],
        "top_tokens": [list(row) for row in gen.top_tokens],
        "top_probs": [row.tolist() for row in gen.top_probs],
        "depth": depth if depth is not None else _repeat(None, n),
        "prompt": _repeat(gen.prompt, n),
        "model": _repeat(_model(gen), n),
    }


def _rankings(rec: Rankings) -> dict[str, Any]:
    n_layers, n_steps = rec.ranks.shape
    step, layer = _grid(n_steps, n_layers)  # step-major: every layer of step 0, then 1...
    n = step.size
    return {
        "step": step,
        "position": rec.positions[step],
        "token_id": rec.token_ids[step],
        "token": [rec.tokens[s] for s in step],
        "layer": layer,
        "layer_label": [rec.layer_labels[i] for i in layer],
        "rank": rec.ranks.T.ravel(),
        "norm": _repeat(rec.norm, n),
        "model": _repeat(_model(rec), n),
    }


def _watch(rec: RankingsWatch) -> dict[str, Any]:
    n_layers, n_watch = rec.ranks.shape
    layer, j = _grid(n_layers, n_watch)
    n = layer.size
    return {
        "position": np.full(n, rec.position, dtype=np.int64),
        "layer": layer,
        "layer_label": [rec.layer_labels[i] for i in layer],
        "token_id": rec.watch_ids[j],
        "token": [rec.watch_tokens[i] for i in j],
        "rank": rec.ranks.ravel(),
        "norm": _repeat(rec.norm, n),
        "model": _repeat(_model(rec), n),
    }


def _layer_predictions(rec: LayerPredictions) -> dict[str, Any]:
    n_layers, k = rec.token_ids.shape
    layer, rank = _grid(n_layers, k)
    n = layer.size
    return {
        "position": np.full(n, rec.position, dtype=np.int64),
        "target_token": _repeat(rec.target_token, n),
        "layer": layer,
        "layer_label": [rec.layer_labels[i] for i in layer],
        "k": rank + 1,
        "token_id": rec.token_ids.ravel(),
        "token": [t for row in rec.tokens for t in row],
        "prob": rec.probs.ravel(),
        "norm": _repeat(rec.norm, n),
        "model": _repeat(_model(rec), n),
    }


def _attributions(rec: Attributions) -> dict[str, Any]:
    n_targets, n_tokens = rec.scores.shape
    step, source = _grid(n_targets, n_tokens)
    n = step.size
    positions = rec.target_positions[step]
    delta = rec.convergence_delta[step] if rec.convergence_delta.size else None
    return {
        "method": _repeat(rec.method, n),
        "step": step,
        "target_position": positions,
        "target_id": rec.target_ids[step],
        "target_token": [rec.tokens[p] if p >= 0 else None for p in positions],
        "source_index": source,
        "source_id": rec.token_ids[source],
        "source_token": [rec.tokens[i] for i in source],
        "is_input": source < rec.n_input_tokens,
        "score": rec.scores.ravel(),
        "target_value": rec.target_values[step],
        "convergence_delta": delta if delta is not None else pa.nulls(n, _F32),
        "target": _repeat(rec.target, n),
        "aggregation": _repeat(rec.aggregation, n),
        "model": _repeat(_model(rec), n),
    }


def _labels(index: np.ndarray, labels: Sequence[str]) -> pa.Array:
    """Strings ``labels[index]`` as one column, built without a Python list per row."""
    return pa.DictionaryArray.from_arrays(index, list(labels)).cast(_STR)


def _attention(rec: Attention) -> dict[str, Any]:
    n_layers, n_heads, n_query, n_key = rec.weights.shape
    layer, head, query, key = _grid(n_layers, n_heads, n_query, n_key)
    n = layer.size
    return {
        "stack": _repeat(rec.stack, n),
        "layer": rec.layers[layer],
        "layer_label": _labels(layer, rec.layer_labels),
        "head": rec.heads[head],
        "query_index": query + rec.query_start,
        "query_token": _labels(query, rec.query_tokens),
        "key_index": key + rec.key_start,
        "key_token": _labels(key, rec.key_tokens),
        "weight": rec.weights.astype(np.float32).ravel(),  # float16 widens exactly
        "model": _repeat(_model(rec), n),
    }


def _activations(rec: Activations) -> dict[str, Any]:
    n_layers, n_neurons, n_positions = rec.values.shape
    position, row, neuron = _grid(n_positions, n_layers, n_neurons)
    n = position.size
    return {
        "position": position,
        "token": _labels(position, rec.tokens),
        "layer": rec.layers[row],
        "layer_label": _labels(row, rec.layer_labels),
        "neuron": neuron,
        "value": np.transpose(rec.values, (2, 0, 1)).ravel(),
        "stack": _repeat(rec.stack, n),
        "model": _repeat(_model(rec), n),
    }


def _factor_loadings(rec: Factorization, index: int) -> dict[str, Any]:
    k, n_neurons = rec.neuron_factors.shape
    factor, j = _grid(k, n_neurons)
    return {
        "factorization": np.full(factor.size, index, dtype=np.int64),
        "factor": factor,
        "layer": rec.neuron_layers[j],
        "neuron": rec.neuron_indices[j],
        "loading": rec.neuron_factors.ravel(),
    }


def context_window(tokens: Sequence[str], position: int, width: int = CONTEXT_TOKENS) -> str:
    """The tokens around ``position`` as text, the token itself in brackets: ``a b[c]d``."""
    before = "".join(tokens[max(0, position - width) : position])
    after = "".join(tokens[position + 1 : position + 1 + width])
    return f"{before}[{tokens[position]}]{after}"


def _factor_examples(rec: Factorization, index: int, top: int | None) -> dict[str, Any]:
    starts = np.flatnonzero(np.r_[True, rec.text_index[1:] != rec.text_index[:-1]])
    lengths = np.diff(np.r_[starts, rec.text_index.size])
    first_of = np.repeat(starts, lengths)  # [n_positions] first position of each one's text
    end_of = first_of + np.repeat(lengths, lengths)
    local = np.arange(rec.text_index.size) - first_of  # position within its own text
    columns: dict[str, list[Any]] = {name: [] for name in ("factor", "rank", "global")}
    for f in range(rec.n_components):
        # stable sort: ties keep position order, so the ranking is deterministic
        order = np.argsort(-rec.token_factors[f], kind="stable")
        order = order[:top] if top is not None else order
        columns["factor"] += [f] * order.size
        columns["rank"] += list(range(1, order.size + 1))
        columns["global"] += order.tolist()
    g = np.array(columns["global"], dtype=np.int64)
    factor = np.array(columns["factor"], dtype=np.int64)
    contexts = [
        context_window(rec.tokens[first_of[i] : end_of[i]], int(local[i])) for i in g.tolist()
    ]
    return {
        "prompt_id": rec.text_index[g],
        "factorization": np.full(g.size, index, dtype=np.int64),
        "factor": factor,
        "rank": np.array(columns["rank"], dtype=np.int64),
        "position": local[g],
        "token_id": rec.token_ids[g],
        "token": [rec.tokens[i] for i in g],
        "activation": rec.token_factors[factor, g],
        "context": contexts,
    }


def _masked(rec: MaskedPredictions) -> dict[str, Any]:
    n_masks, k = rec.top_ids.shape
    row, rank = _grid(n_masks, k)
    return {
        "position": rec.positions[row],
        "k": rank + 1,
        "token_id": rec.top_ids.ravel(),
        "token": [t for r in rec.top_tokens for t in r],
        "prob": rec.top_probs.ravel(),
        "model": _repeat(_model(rec), row.size),
    }


def _classification(rec: Classification) -> dict[str, Any]:
    n = len(rec.labels)
    best = int(np.argmax(rec.probs))
    return {
        "label_index": np.arange(n, dtype=np.int64),
        "label": list(rec.labels),
        "prob": rec.probs,
        "predicted": np.arange(n) == best,
        "model": _repeat(_model(rec), n),
    }


def _provenance(rec: Provenance) -> dict[str, Any]:
    return {
        "model": [rec.model],
        "revision": [rec.revision],
        "function": [rec.function],
        "params": [json.dumps(thaw_json(rec.params), sort_keys=True)],
        "library_version": [rec.library_version],
        "transformers_version": [rec.transformers_version],
        "torch_version": [rec.torch_version],
    }


_SIMPLE: dict[type, tuple[str, Callable[[Any], dict[str, Any]]]] = {
    Rankings: ("rankings", _rankings),
    RankingsWatch: ("watch", _watch),
    LayerPredictions: ("layer_predictions", _layer_predictions),
    Attributions: ("attributions", _attributions),
    Activations: ("activations", _activations),
    Attention: ("attention", _attention),
    MaskedPredictions: ("masked_predictions", _masked),
    Classification: ("classifications", _classification),
    Provenance: ("provenance", _provenance),
}


def _n_rows(columns: dict[str, Any]) -> int:
    return len(next(iter(columns.values())))


def table(name: str, parts: Sequence[dict[str, Any]], ids: pa.DataType = _I64) -> pa.Table:
    """Concatenate column dicts (each a {column: values} of one record) into table ``name``."""
    target = schema(name, ids)
    tables = [pa.table(part, schema=target) for part in parts]
    return pa.concat_tables(tables) if tables else target.empty_table()


def to_tables(
    records: Record | Sequence[Record],
    *,
    prompt_ids: Sequence[PromptId] | None = None,
    top_examples: int | None = None,
) -> dict[str, pa.Table]:
    """Turn records of any kinds into one long (tidy) ``pyarrow.Table`` per kind.

    Parameters
    ----------
    records : one record, or a sequence of records of any kinds.
    prompt_ids : one id (int or str) per record for the ``prompt_id`` column; default the
        record's index in ``records``.
    top_examples : rows kept per factor in ``factor_examples`` (default: every position).

    Returns
    -------
    ``{table name: pyarrow.Table}`` for the kinds present: ``generations`` (Generation),
    ``rankings`` (Rankings), ``watch`` (RankingsWatch), ``layer_predictions``
    (LayerPredictions), ``attributions`` (Attributions), ``activations`` (Activations),
    ``attention`` (Attention: one row per layer, head, query and key),
    ``factor_loadings`` and ``factor_examples`` (Factorization), ``masked_predictions``
    (MaskedPredictions), ``classifications`` (Classification), ``provenance`` (Provenance).
    A Generation's ``depth`` is filled when a Rankings record of the same sequence with
    ``norm="final"`` is among ``records``; otherwise it is null. In ``factor_examples``,
    ``prompt_id`` is the index of the text among those factorized and ``position`` the index
    within that text.
    """
    items = [records] if isinstance(records, Record) else list(records)
    for i, rec in enumerate(items):
        if not isinstance(rec, Record):
            raise InvalidTypeError(
                f"records[{i}] is a {type(rec).__name__}, not an ecco-core record"
            )
    ids: list[PromptId] = list(range(len(items))) if prompt_ids is None else list(prompt_ids)
    if len(ids) != len(items):
        raise InvalidArgumentError(
            f"prompt_ids has {len(ids)} entries for {len(items)} records; give one per record"
        )
    if top_examples is not None and (isinstance(top_examples, bool) or top_examples < 1):
        raise InvalidArgumentError(f"top_examples must be None or >= 1, got {top_examples!r}")
    rankings = [r for r in items if isinstance(r, Rankings)]
    parts: dict[str, list[dict[str, Any]]] = {}

    def add(name: str, columns: dict[str, Any], pid: PromptId | None) -> None:
        if pid is not None:
            columns = {"prompt_id": _repeat(pid, _n_rows(columns)), **columns}
        parts.setdefault(name, []).append(columns)

    for n_fact, (rec, pid) in enumerate(zip(items, ids, strict=True)):
        if isinstance(rec, Generation):
            match = next((r for r in rankings if _matches(r, rec)), None)
            depth = prediction_depth(match.ranks) if match is not None else None
            add("generations", _generation(rec, depth), pid)
        elif isinstance(rec, Factorization):
            add("factor_loadings", _factor_loadings(rec, n_fact), None)
            add("factor_examples", _factor_examples(rec, n_fact, top_examples), None)
        else:
            name, build = _SIMPLE[type(rec)]
            add(name, build(rec), pid)
    kinds = id_type(ids)
    out = {}
    for name, columns in parts.items():
        examples = name == "factor_examples"
        out[name] = table(name, columns, _I64 if examples else kinds)
    return out
