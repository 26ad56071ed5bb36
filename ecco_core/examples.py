"""The contexts where one neuron, or one neuron factor, is most active.

:func:`factor_codes` scores every position of an :class:`Activations` record against fixed
NMF neuron factors (the non-negative least-squares code, as scikit-learn's ``NMF.transform``);
:func:`top_examples` streams records (or texts) one at a time and keeps the ``top`` strongest
positions of a neuron or a factor, so the sequence may be longer than memory allows.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa

from .checks import check_int
from .errors import InvalidArgumentError, InvalidTypeError
from .loading import LM
from .neurons import activations
from .records import Activations, Factorization
from .tables import context_window

EXAMPLES_SCHEMA = pa.schema(
    [
        ("prompt_id", pa.int64()),
        ("rank", pa.int64()),
        ("position", pa.int64()),
        ("token_id", pa.int64()),
        ("token", pa.string()),
        ("activation", pa.float32()),
        ("context", pa.string()),
    ]
)


def _rows_of(record: Activations, layers: Iterable[int]) -> list[int]:
    held = record.layers.tolist()
    wanted = [int(layer) for layer in layers]
    missing = [layer for layer in dict.fromkeys(wanted) if layer not in held]
    if missing:
        raise InvalidArgumentError(
            f"the factors use layers {missing} that the activations do not hold ({held})"
        )
    return [held.index(layer) for layer in wanted]


def factor_codes(
    record: Activations, neuron_factors: np.ndarray, layers: Iterable[int] | None = None
) -> np.ndarray:
    """float32 [n_factors, n_positions]: how strongly each position expresses each factor.

    Parameters
    ----------
    record : activations with ``values`` [n_layers, n_neurons, n_positions].
    neuron_factors : [n_factors, len(layers) * n_neurons] non-negative loadings, layer by layer.
    layers : the block index of each group of ``n_neurons`` columns (default: every layer of
        ``record``, in its order).

    The code of a position is the non-negative ``w`` minimizing ``||x - w H||`` for its clipped
    activations ``x`` and the fixed factors ``H`` (scikit-learn's ``NMF.transform``).
    """
    from sklearn.decomposition import non_negative_factorization
    from sklearn.exceptions import ConvergenceWarning

    rows = list(range(record.layers.size)) if layers is None else _rows_of(record, layers)
    values = np.asarray(record.values[rows], dtype=np.float32)
    n_layers, n_neurons, n_positions = values.shape
    h = np.asarray(neuron_factors, dtype=np.float32)
    if h.ndim != 2 or h.shape[1] != n_layers * n_neurons:
        raise InvalidArgumentError(
            f"neuron_factors of shape {h.shape} do not match {n_layers} layers of "
            f"{n_neurons} neurons; expected [n_factors, {n_layers * n_neurons}]"
        )
    x = np.maximum(values.reshape(n_layers * n_neurons, n_positions).T, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        w, _, _ = non_negative_factorization(
            x, H=h, n_components=h.shape[0], update_H=False, max_iter=500
        )
    return np.asarray(w.T, dtype=np.float32)


def _scores(
    record: Activations,
    neuron: tuple[int, int] | None,
    factor: int | None,
    loads: np.ndarray | None,
    layers: list[int] | None,
) -> np.ndarray:
    """float32 [n_positions]: the neuron's activation, or the factor's code, per position."""
    if neuron is not None:
        layer, index = neuron
        (row,) = _rows_of(record, [layer])
        if not 0 <= index < record.values.shape[1]:
            raise InvalidArgumentError(
                f"neuron {index} does not exist; layer {layer} has {record.values.shape[1]}"
            )
        return np.asarray(record.values[row, index], dtype=np.float32)
    if loads is None or factor is None:
        raise InvalidArgumentError("give exactly one of neuron=(layer, index) or factor=k")
    return factor_codes(record, loads, layers)[factor]


def _factors(factors: Any, factor: int) -> tuple[np.ndarray, list[int] | None]:
    if isinstance(factors, Factorization):
        loads, layers = factors.neuron_factors, sorted(set(factors.neuron_layers.tolist()))
    elif factors is not None:
        loads, layers = np.asarray(factors, dtype=np.float32), None
    else:
        raise InvalidArgumentError("factor needs factors (a Factorization or [k, n] loadings)")
    if loads.ndim != 2:
        raise InvalidArgumentError(f"factors must be 2-d [k, n_neurons], got shape {loads.shape}")
    check_int("factor", factor, 0, loads.shape[0] - 1)
    return loads, layers


def top_examples(
    sources: Iterable[Activations | str],
    *,
    neuron: tuple[int, int] | None = None,
    factor: int | None = None,
    factors: Factorization | np.ndarray | None = None,
    top: int = 10,
    lm: LM | None = None,
) -> pa.Table:
    """The ``top`` positions where a neuron or a factor is most active over many texts.

    Parameters
    ----------
    sources : Activations records, or texts (then ``lm`` computes each one's activations);
        any iterable, consumed one item at a time (a generator keeps memory flat).
    neuron : ``(layer, index)``: rank positions by that FFN neuron's raw activation.
    factor : rank positions by that factor's code (see :func:`factor_codes`) against
        ``factors``: a :class:`Factorization`, or loadings [k, n_layers * n_neurons] over
        every layer of the records.
    top : positions kept.
    lm : the model, needed when ``sources`` holds texts.

    Returns
    -------
    pyarrow.Table with ``prompt_id`` (index of the source in ``sources``), ``rank`` (1 =
    strongest), ``position``, ``token_id``, ``token``, ``activation`` and ``context`` (the
    tokens around it, the token in brackets). Ties keep the earlier source and position.
    """
    if (neuron is None) == (factor is None):
        raise InvalidArgumentError("give exactly one of neuron=(layer, index) or factor=k")
    top = check_int("top", top, 1)
    loads, layers = _factors(factors, factor) if factor is not None else (None, None)
    best: list[tuple[float, int, int, int, str, str]] = []  # (-act, id, pos, tok id, tok, ctx)
    for index, item in enumerate(sources):
        if isinstance(item, str):
            if lm is None:
                raise InvalidArgumentError("texts need lm= to compute their activations")
            record = activations(lm, item)
        elif isinstance(item, Activations):
            record = item
        else:
            raise InvalidTypeError(
                f"sources must hold Activations or texts, got {type(item).__name__}"
            )
        scores = _scores(record, neuron, factor, loads, layers)
        for p in np.argsort(-scores, kind="stable")[:top].tolist():
            token = record.tokens[p]
            context = context_window(record.tokens, p)
            best.append((-float(scores[p]), index, p, int(record.token_ids[p]), token, context))
        best = sorted(best)[:top]
    return pa.table(
        {
            "prompt_id": [b[1] for b in best],
            "rank": list(range(1, len(best) + 1)),
            "position": [b[2] for b in best],
            "token_id": [b[3] for b in best],
            "token": [b[4] for b in best],
            "activation": [-b[0] for b in best],
            "context": [b[5] for b in best],
        },
        schema=EXAMPLES_SCHEMA,
    )
