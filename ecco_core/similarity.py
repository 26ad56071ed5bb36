"""Similarity of two representations of the same positions: CCA, SVCCA, PWCCA and CKA.

Inputs are matrices [n_positions, n_features] (rows are the same tokens in both; the feature
counts may differ), numpy arrays or torch tensors, or :class:`Activations` holding exactly one
layer. Written from the published definitions:

- CCA: mean of the canonical correlations (Hotelling 1936), computed from orthonormal bases of
  the centered column spaces: the singular values of ``U_x^T U_y``.
- SVCCA (Raghu et al. 2017): CCA after keeping each side's top singular directions (``dims``,
  default: enough to explain 99% of the variance).
- PWCCA (Morcos et al. 2018): canonical correlations weighted by how much each canonical
  variate of ``a`` accounts for ``a``'s features (sum of absolute correlations).
- CKA (Kornblith et al. 2019): linear centered kernel alignment,
  ``||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)`` on centered features; ``debiased_cka`` uses the
  unbiased HSIC estimator (Song et al. 2012), which is near 0 for independent inputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .checks import check_choice, check_int
from .errors import InvalidArgumentError, InvalidTypeError
from .records import Activations

METHODS = ("cca", "svcca", "pwcca", "cka", "debiased_cka")
_NEEDS_MORE_POSITIONS = ("cca", "svcca", "pwcca")


def _as_matrix(name: str, value: Any) -> np.ndarray:
    if isinstance(value, Activations):
        if value.values.shape[0] != 1:
            raise InvalidArgumentError(
                f"{name} holds {value.values.shape[0]} layers; pass one layer "
                "(ec.activations(..., layers=[i])) or a matrix [n_positions, n_features]"
            )
        value = value.values[0].T
    elif hasattr(value, "detach"):
        value = value.detach().float().cpu().numpy()
    try:
        matrix = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidTypeError(f"{name} must be a numeric matrix") from exc
    if matrix.ndim != 2 or min(matrix.shape) == 0:
        raise InvalidArgumentError(
            f"{name} must be a non-empty matrix [n_positions, n_features], got shape {matrix.shape}"
        )
    if not np.isfinite(matrix).all():
        raise InvalidArgumentError(f"{name} contains NaN or infinite values")
    return matrix


def _basis(x: np.ndarray) -> np.ndarray:
    """Orthonormal basis [n, rank] of the column space of centered ``x``."""
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    if s.size == 0 or s[0] == 0:
        raise InvalidArgumentError("a representation is constant over positions")
    return u[:, s > s[0] * 1e-10]


def _canonical(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Canonical correlations [r] and canonical variates of ``x`` [n, r] (unit norm)."""
    ux, uy = _basis(x), _basis(y)
    u, rho, _ = np.linalg.svd(ux.T @ uy, full_matrices=False)
    r = rho.size
    return np.clip(rho, 0.0, 1.0), ux @ u[:, :r]


def _top_directions(x: np.ndarray, dims: int | None) -> np.ndarray:
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    if dims is None:
        explained = np.cumsum(s**2) / np.sum(s**2)
        dims = int(np.searchsorted(explained, 0.99) + 1)
    return u[:, :dims] * s[:dims]


def _hsic_unbiased(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741
    n = k.shape[0]
    k, l = k.copy(), l.copy()  # noqa: E741
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(l, 0.0)
    ones_k, ones_l = k.sum(axis=0), l.sum(axis=0)
    term = np.sum(k * l) + ones_k.sum() * ones_l.sum() / ((n - 1) * (n - 2))
    term -= 2.0 / (n - 2) * float(ones_k @ ones_l)
    return float(term / (n * (n - 3)))


def similarity(a: Any, b: Any, method: str = "cka", *, dims: int | None = None) -> float:
    """Similarity in [0, 1] of two representations of the same positions.

    Parameters
    ----------
    a, b : [n_positions, n_features_a] and [n_positions, n_features_b] (numpy, torch, or
        single-layer :class:`Activations`).
    method : ``cca``, ``svcca``, ``pwcca``, ``cka`` or ``debiased_cka``.
    dims : SVCCA only: singular directions kept on each side (default: 99% of the variance).
    """
    method = check_choice("method", method, METHODS)
    x, y = _as_matrix("a", a), _as_matrix("b", b)
    if x.shape[0] != y.shape[0]:
        raise InvalidArgumentError(
            f"a has {x.shape[0]} positions but b has {y.shape[0]}; both must describe the "
            "same positions"
        )
    if dims is not None:
        if method != "svcca":
            raise InvalidArgumentError("dims applies to method='svcca' only")
        dims = check_int("dims", dims, 1, min(x.shape[1], y.shape[1]))
    n = x.shape[0]
    widest = max(x.shape[1], y.shape[1]) if method != "svcca" else (dims or 0)
    if method in _NEEDS_MORE_POSITIONS and n <= widest:
        raise InvalidArgumentError(
            f"{method} needs more positions ({n}) than dimensions ({widest}); add text, pick "
            "fewer neurons, use svcca with a small dims, or use cka"
        )
    if method == "debiased_cka" and n < 4:
        raise InvalidArgumentError("debiased_cka needs at least 4 positions")
    x, y = x - x.mean(axis=0), y - y.mean(axis=0)

    if method == "cka":
        cross = np.linalg.norm(y.T @ x) ** 2
        return float(cross / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))
    if method == "debiased_cka":
        k, l = x @ x.T, y @ y.T  # noqa: E741
        denominator = np.sqrt(max(_hsic_unbiased(k, k) * _hsic_unbiased(l, l), 0.0))
        return float(_hsic_unbiased(k, l) / denominator) if denominator > 0 else 0.0
    if method == "svcca":
        x, y = _top_directions(x, dims), _top_directions(y, dims)
        if n <= max(x.shape[1], y.shape[1]):
            raise InvalidArgumentError(
                f"svcca keeps {max(x.shape[1], y.shape[1])} directions but there are only {n} "
                "positions; pass a smaller dims"
            )
    rho, variates = _canonical(x, y)
    if method in ("cca", "svcca"):
        return float(rho.mean())
    features = x / np.maximum(np.linalg.norm(x, axis=0), 1e-12)
    weights = np.abs(variates.T @ features).sum(axis=1)
    return float(np.sum(weights * rho) / np.sum(weights))
