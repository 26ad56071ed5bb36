"""Corpus neuron factors: MiniBatchNMF fed from a stream of activation matrices.

Every engine produces, batch by batch and in input order, the clipped FFN activations of every
token of every prompt (:func:`~.batch.activation_matrix`, [n_positions, n_layers * n_neurons]).
:func:`fit_stream` cuts that stream into blocks of :data:`NMF_ROWS` positions and feeds each to
scikit-learn's ``MiniBatchNMF.partial_fit``, so memory holds one block plus one batch, whatever
the size of the corpus. The blocks do not depend on the batch size or the engine: the same data
gives the same factors. The factors are saved in ``factor_loadings`` (and the tokens they
promote in ``factor_tokens``); a resumed run reads them back instead of refitting.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ecco_core.tables import schema

from . import store
from .errors import CorpusInputError

NMF_ROWS = 1024  # token positions per partial_fit call (MiniBatchNMF's default batch size)
RANDOM_STATE = 0
PROMOTED = 10  # tokens listed per factor in factor_tokens

FACTOR_TOKENS_SCHEMA = pa.schema(
    [("factor", pa.int64()), ("rank", pa.int64()), ("token_id", pa.int64()), ("token", pa.string())]
)


def blocks(matrices: Iterable[np.ndarray], rows: int = NMF_ROWS) -> Iterator[np.ndarray]:
    """Re-cut a stream of [n_i, n_neurons] matrices into blocks of ``rows`` rows (last shorter)."""
    held: list[np.ndarray] = []
    n_held = 0
    for x in matrices:
        if not x.shape[0]:
            continue
        held.append(x)
        n_held += x.shape[0]
        while n_held >= rows:
            joined = np.concatenate(held) if len(held) > 1 else held[0]
            yield joined[:rows]
            rest = joined[rows:]
            held, n_held = ([rest] if rest.shape[0] else []), rest.shape[0]
    if n_held:
        yield np.concatenate(held)


def new_model(n_components: int) -> Any:
    """The MiniBatchNMF every engine feeds (random init: "nndsvd" would need all the data)."""
    from sklearn.decomposition import MiniBatchNMF

    return MiniBatchNMF(
        n_components=n_components, init="random", batch_size=NMF_ROWS, random_state=RANDOM_STATE
    )


def fit_stream(matrices: Iterable[np.ndarray], n_components: int) -> tuple[np.ndarray, int]:
    """Fit ``n_components`` factors on a stream of activation matrices, one pass.

    Parameters
    ----------
    matrices : float32 [n_positions_i, n_layers * n_neurons] non-negative activations, in
        input order (engines must keep the order: partial_fit depends on it).

    Returns
    -------
    (components float32 [n_components, n_layers * n_neurons], positions seen). Raises
    CorpusInputError when the stream holds no position (no prompt could be generated from).
    """
    from sklearn.exceptions import ConvergenceWarning

    model = new_model(n_components)
    seen = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for block in blocks(matrices):
            model.partial_fit(block)
            seen += block.shape[0]
    if not seen:
        raise CorpusInputError("no prompt of the data set could be generated from: nothing to fit")
    return np.asarray(model.components_, dtype=np.float32), seen


def loadings_table(components: np.ndarray, n_layers: int) -> pa.Table:
    """``factor_loadings`` rows of components [k, n_layers * n_neurons] (blocks 0..n-1)."""
    k, width = components.shape
    n_neurons = width // n_layers
    factor = np.repeat(np.arange(k), width)
    column = np.tile(np.arange(width), k)
    return pa.table(
        {
            "factorization": np.zeros(factor.size, dtype=np.int64),
            "factor": factor.astype(np.int64),
            "layer": (column // n_neurons).astype(np.int64),
            "neuron": (column % n_neurons).astype(np.int64),
            "loading": components.ravel().astype(np.float32),
        },
        schema=schema("factor_loadings"),
    )


def tokens_table(ids: np.ndarray, tokens: list[list[str]]) -> pa.Table:
    """``factor_tokens`` rows: the tokens each factor promotes, rank 1 first."""
    k, n = ids.shape
    return pa.table(
        {
            "factor": np.repeat(np.arange(k), n).astype(np.int64),
            "rank": np.tile(np.arange(1, n + 1), k).astype(np.int64),
            "token_id": ids.ravel().astype(np.int64),
            "token": [t for row in tokens for t in row],
        },
        schema=FACTOR_TOKENS_SCHEMA,
    )


def loadings_path(out: Path) -> Path:
    return out / "factor_loadings" / f"{store.FIT_PART}.parquet"


def tokens_path(out: Path) -> Path:
    return out / "factor_tokens" / f"{store.FIT_PART}.parquet"


def read_components(out: Path) -> np.ndarray | None:
    """The factors saved in ``out`` (float32 [k, n_neurons]), or None before the fit."""
    path = loadings_path(out)
    if not path.is_file():
        return None
    loads = pq.read_table(path).sort_by(
        [("factor", "ascending"), ("layer", "ascending"), ("neuron", "ascending")]
    )
    k = len(pc.unique(loads.column("factor")))
    return np.array(loads.column("loading").to_numpy().reshape(k, -1), dtype=np.float32)
