"""Non-negative matrix factorization (NMF) of neuron activations, as in Ecco's neuron view.

The selected layers' neurons are concatenated into one matrix ``X`` [positions, neurons] with
negative activations clipped to 0, and factorized as ``X ≈ W H`` with scikit-learn's NMF:
``W.T`` are the token factors [component, position], ``H`` the neuron factors
[component, neuron]. Defaults match Ecco (random init, random_state 0, max_iter 500), so the
same activations give the same factors. ``method="minibatch"`` streams the records through
``MiniBatchNMF`` (records may be file paths, loaded one at a time) for inputs larger than memory.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, cast

import attrs
import numpy as np
import torch
from sklearn.decomposition import NMF, MiniBatchNMF
from sklearn.exceptions import ConvergenceWarning

from .checks import check_choice, check_int
from .errors import InvalidArgumentError, InvalidTypeError
from .loading import LM
from .neurons import main_stack
from .records import Activations, Factorization
from .serialization import load_record
from .tokens import token_table

METHODS = ("nmf", "minibatch")
ActivationsSource = Activations | str | os.PathLike[str]


def _load(item: ActivationsSource) -> Activations:
    record = item if isinstance(item, Activations) else load_record(os.fspath(item))
    if not isinstance(record, Activations):
        raise InvalidTypeError(f"expected Activations records, got {type(record).__name__}")
    return record


def _matrix(record: Activations, rows: list[int]) -> np.ndarray:
    """[n_positions, n_selected_layers * n_neurons] float32, negatives clipped to 0."""
    values = np.asarray(record.values[rows], dtype=np.float32)  # finite: records check it
    n_layers, n_neurons, n_positions = values.shape
    return np.maximum(values.reshape(n_layers * n_neurons, n_positions).T, 0.0)


def _layer_rows(record: Activations, layers: Sequence[int] | None) -> list[int]:
    available = record.layers.tolist()
    if layers is None:
        return list(range(len(available)))
    wanted = list(layers)
    if not wanted:
        raise InvalidArgumentError("layers is empty; pass None to use every captured layer")
    missing = [layer for layer in wanted if layer not in available]
    if missing:
        raise InvalidArgumentError(
            f"layers {missing} were not captured; the activations hold layers {available}"
        )
    return sorted(available.index(layer) for layer in set(wanted))


def _promoted(
    lm: LM, record: Activations, rows: list[int], neuron_factors: np.ndarray, k: int
) -> np.ndarray:
    """int64 [n_components, k]: top tokens of each factor's direction (see promoted_tokens)."""
    if record.stack != main_stack(lm.spec.kind):
        return np.zeros((neuron_factors.shape[0], 0), dtype=np.int64)
    layers = [int(record.layers[row]) for row in rows]
    return _promoted_ids(lm, layers, neuron_factors, k)


def _promoted_ids(lm: LM, layers: Sequence[int], neuron_factors: np.ndarray, k: int) -> np.ndarray:
    """int64 [n_components, k]: top tokens of each factor's direction in the unembedding.

    Each factor's neuron loadings are mapped into the residual stream through the FFN output
    projections of their layers (bias removed) and summed, scaled by the final norm's
    per-dimension gain when it has one; the output embedding then scores every token against
    that direction (a direct logit attribution of the factor).
    """
    spec = lm.spec
    output = cast(Any, lm.model).get_output_embeddings()
    if spec.head_input is None or output is None or k == 0:
        return np.zeros((neuron_factors.shape[0], 0), dtype=np.int64)
    n_neurons = neuron_factors.shape[1] // len(layers)
    weight = output.weight
    with torch.inference_mode():
        direction = torch.zeros(neuron_factors.shape[0], spec.hidden_size, device=weight.device)
        for j, layer in enumerate(layers):
            proj = lm.model.get_submodule(spec.ffn_out[layer])
            loads = torch.as_tensor(
                neuron_factors[:, j * n_neurons : (j + 1) * n_neurons], device=weight.device
            ).to(weight.dtype)
            direction += (proj(loads) - proj(torch.zeros_like(loads))).float()
        norm = lm.model.get_submodule(spec.final_norm) if spec.final_norm else None
        gain = getattr(norm, "weight", None)
        if isinstance(gain, torch.Tensor) and gain.shape == (spec.hidden_size,):
            direction = direction * gain.float()  # the final norm's per-dimension gain
        scores = direction.to(weight.dtype) @ weight.T
        return cast(np.ndarray, torch.topk(scores.float(), k, dim=-1).indices.cpu().numpy())


def promoted_tokens(
    lm: LM, neuron_factors: np.ndarray, layers: Sequence[int], *, top_k: int = 10
) -> tuple[np.ndarray, list[list[str]]]:
    """The tokens each factor's neurons promote through the unembedding (decoder FFNs).

    Parameters
    ----------
    neuron_factors : float [n_components, len(layers) * n_neurons] loadings, layer by layer
        (``Factorization.neuron_factors``, or ``factor_loadings`` of a corpus run).
    layers : the block index of each group of ``n_neurons`` columns, in order.
    top_k : tokens per factor.

    Returns
    -------
    (ids int64 [n_components, top_k], tokens [n_components][top_k]); ``top_k`` is 0 for a
    model without an LM head.
    """
    top_k = check_int("top_k", top_k, 0)
    loads = np.array(neuron_factors, dtype=np.float32)  # a writable copy for torch
    if loads.ndim != 2 or not len(layers) or loads.shape[1] % len(layers):
        raise InvalidArgumentError(
            f"neuron_factors of shape {loads.shape} do not split into {len(layers)} layers"
        )
    ids = _promoted_ids(lm, [int(layer) for layer in layers], loads, top_k)
    return ids, token_table(lm.tokenizer, ids)


def _fit_minibatch(
    sources: Sequence[ActivationsSource], rows: list[int], model: MiniBatchNMF
) -> tuple[np.ndarray, float]:
    def matrices() -> Iterator[np.ndarray]:
        for item in sources:
            yield _matrix(_load(item), rows)

    for _ in range(max(1, model.max_iter // 100)):
        for x in matrices():
            model.partial_fit(x)
    parts, squared = [], 0.0
    for x in matrices():
        w = model.transform(x)
        parts.append(w)
        squared += float(((x - w @ model.components_) ** 2).sum())
    return np.concatenate(parts), float(np.sqrt(squared))


def factorize(
    acts: ActivationsSource | Sequence[ActivationsSource],
    n_components: int = 10,
    *,
    layers: Sequence[int] | None = None,
    method: str = "nmf",
    init: str = "random",
    random_state: int = 0,
    max_iter: int = 500,
    lm: LM | None = None,
    top_k: int = 10,
) -> Factorization:
    """Factorize neuron activations of one or many texts into shared factors.

    Parameters
    ----------
    acts : an :class:`Activations` record, or a list of them (factors shared across texts);
        with ``method="minibatch"`` entries may be paths of saved records, loaded one at a time.
    n_components : number of factors (at most the number of positions).
    layers : block indices to factorize together (default: every captured layer).
    method : ``nmf`` (scikit-learn NMF, as Ecco) or ``minibatch`` (MiniBatchNMF, streaming).
    init, random_state : passed to scikit-learn (Ecco's defaults).
    max_iter : for ``nmf``, passed to scikit-learn's ``NMF`` unchanged (Ecco's default 500).
        For ``minibatch``, streaming has no iteration count of its own: the records are passed
        ``max(1, max_iter // 100)`` times through ``MiniBatchNMF.partial_fit`` (5 by default).
    lm : the model the activations came from; when given (and it has an LM head), each factor
        lists the ``top_k`` tokens its direction promotes through the unembedding.
    """
    method = check_choice("method", method, METHODS)
    check_int("max_iter", max_iter, 1)
    top_k = check_int("top_k", top_k, 0)
    sources: list[ActivationsSource] = (
        [acts] if isinstance(acts, (Activations, str, os.PathLike)) else list(acts)
    )
    if not sources:
        raise InvalidArgumentError("no activations given")
    first = _load(sources[0])
    rows = _layer_rows(first, layers)
    # "nmf" keeps every record in memory; "minibatch" loads them one at a time when needed.
    records = [first] + [_load(s) for s in sources[1:]] if method == "nmf" else None
    meta: list[tuple[list[int], list[str], int]] = []
    for record in records if records is not None else (_load(s) for s in sources):
        if record.layers.tolist() != first.layers.tolist() or (
            record.values.shape[1] != first.values.shape[1]
        ):
            raise InvalidArgumentError("all activations must hold the same layers and neurons")
        meta.append((record.token_ids.tolist(), list(record.tokens), record.values.shape[2]))
    n_positions = sum(m[2] for m in meta)
    n_components = check_int("n_components", n_components, 1, n_positions)

    params = {
        "n_components": n_components,
        "layers": [int(first.layers[r]) for r in rows],
        "method": method,
        "init": init,
        "random_state": random_state,
        "max_iter": max_iter,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if records is not None:
            x = np.concatenate([_matrix(r, rows) for r in records])
            model = NMF(n_components, init=init, random_state=random_state, max_iter=max_iter)
            w = model.fit_transform(x)
            error = float(model.reconstruction_err_)
            h = model.components_
        else:
            mini = MiniBatchNMF(
                n_components, init=init, random_state=random_state, max_iter=max_iter
            )
            w, error = _fit_minibatch(sources, rows, mini)
            h = mini.components_
    n_neurons = first.values.shape[1]
    promoted = (
        _promoted(lm, first, rows, h, top_k)
        if lm is not None
        else np.zeros((n_components, 0), dtype=np.int64)
    )
    promoted_tokens = token_table(lm.tokenizer, promoted) if lm else [[] for _ in promoted]
    return Factorization(
        token_factors=w.T.astype(np.float32),
        neuron_factors=h.astype(np.float32),
        neuron_layers=np.repeat(first.layers[rows], n_neurons),
        neuron_indices=np.tile(np.arange(n_neurons), len(rows)),
        token_ids=np.concatenate([np.array(m[0], dtype=np.int64) for m in meta]),
        tokens=[t for m in meta for t in m[1]],
        text_index=np.repeat(np.arange(len(meta)), [m[2] for m in meta]),
        layer_labels=[first.layer_labels[r] for r in rows],
        reconstruction_error=error,
        promoted_ids=promoted,
        promoted_tokens=promoted_tokens,
        provenance=attrs.evolve(first.provenance, function="factorize", params=params),
    )
