"""Known properties of CCA, SVCCA, PWCCA and CKA on synthetic data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ecco_core as ec

rng = np.random.default_rng(0)
X = rng.normal(size=(500, 12))
ALL = ["cca", "svcca", "pwcca", "cka", "debiased_cka"]


def _orthogonal(n: int) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    return q


@pytest.mark.parametrize("method", ALL)
def test_identical_inputs_give_one(method: str) -> None:
    assert ec.similarity(X, X, method) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("method", ["cka", "debiased_cka"])
def test_cka_invariant_to_orthogonal_transform_and_isotropic_scaling(method: str) -> None:
    y = np.tanh(X @ rng.normal(size=(12, 7)))
    base = ec.similarity(X, y, method)
    assert 0.05 < base < 0.999
    assert ec.similarity(X @ _orthogonal(12) * 3.7, y, method) == pytest.approx(base, rel=1e-9)
    assert ec.similarity(X, y * 0.01, method) == pytest.approx(base, rel=1e-9)


def test_cka_is_not_invariant_to_anisotropic_scaling() -> None:
    y = np.tanh(X @ rng.normal(size=(12, 7)))
    stretched = X * np.linspace(0.1, 10, 12)
    assert abs(ec.similarity(stretched, y) - ec.similarity(X, y)) > 1e-3


@pytest.mark.parametrize("method", ["cca", "svcca", "pwcca"])
def test_cca_family_of_full_rank_linear_transform_is_one(method: str) -> None:
    a = rng.normal(size=(12, 12)) + 3 * np.eye(12)
    assert ec.similarity(X, X @ a + 5.0, method) == pytest.approx(1.0, abs=1e-8)


def test_independent_inputs_are_near_zero() -> None:
    big_a, big_b = rng.normal(size=(4000, 5)), rng.normal(size=(4000, 5))
    assert ec.similarity(big_a, big_b, "cca") < 0.05
    assert ec.similarity(big_a, big_b, "pwcca") < 0.05
    assert ec.similarity(big_a, big_b, "cka") < 0.01
    assert abs(ec.similarity(big_a, big_b, "debiased_cka")) < 0.005


def test_cca_matches_direct_canonical_correlation_formula() -> None:
    a, b = X[:, :4], np.tanh(X[:, 2:8] + rng.normal(size=(500, 6)))
    a0, b0 = a - a.mean(0), b - b.mean(0)
    saa, sbb, sab = a0.T @ a0, b0.T @ b0, a0.T @ b0
    m = np.linalg.inv(saa) @ sab @ np.linalg.inv(sbb) @ sab.T
    rho = np.sqrt(np.sort(np.linalg.eigvals(m).real)[::-1])
    assert ec.similarity(a, b, "cca") == pytest.approx(rho.mean(), rel=1e-8)


def test_linear_cka_matches_gram_matrix_formula() -> None:
    a, b = X[:, :5], np.sin(X[:, 3:])
    n = a.shape[0]
    h = np.eye(n) - 1.0 / n
    k, l = h @ a @ a.T @ h, h @ b @ b.T @ h  # noqa: E741
    expected = np.sum(k * l) / np.sqrt(np.sum(k * k) * np.sum(l * l))
    assert ec.similarity(a, b, "cka") == pytest.approx(expected, rel=1e-9)


def _top_components(m: np.ndarray, k: int) -> np.ndarray:
    """Scores of the k leading principal components (eigenvectors of the covariance)."""
    m = m - m.mean(axis=0)
    _, vectors = np.linalg.eigh(m.T @ m)
    return m @ vectors[:, ::-1][:, :k]


def _mean_cca_by_covariance(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(axis=0), b - b.mean(axis=0)
    cross = a.T @ b
    m = np.linalg.solve(a.T @ a, cross) @ np.linalg.solve(b.T @ b, cross.T)
    return float(np.sqrt(np.clip(np.linalg.eigvals(m).real, 0.0, 1.0)).mean())


def test_svcca_dims_and_torch_input() -> None:
    y = X @ rng.normal(size=(12, 12))
    expected = _mean_cca_by_covariance(_top_components(X, 3), _top_components(y, 3))
    assert expected < 0.99  # the leading directions of X and y differ
    # A torch tensor arrives as float32: agreement to float32 precision.
    assert ec.similarity(torch.tensor(X), y, "svcca", dims=3) == pytest.approx(expected, rel=1e-5)
    assert ec.similarity(X, y, "svcca", dims=12) == pytest.approx(1.0, abs=1e-8)


def test_bad_similarity_input() -> None:
    with pytest.raises(ec.InvalidArgumentError, match="same positions"):
        ec.similarity(X, X[:10])
    with pytest.raises(ec.InvalidArgumentError, match="more positions"):
        ec.similarity(X[:8], X[:8], "cca")
    with pytest.raises(ec.InvalidArgumentError, match="NaN"):
        ec.similarity(np.full((5, 2), np.nan), X[:5, :2])
    with pytest.raises(ec.InvalidArgumentError, match="method='mutual'"):
        ec.similarity(X, X, "mutual")
    with pytest.raises(ec.InvalidArgumentError, match="svcca' only"):
        ec.similarity(X, X, "cka", dims=2)
    with pytest.raises(ec.InvalidArgumentError, match="matrix"):
        ec.similarity(X[0], X[0])
    assert ec.similarity(X[:8], X[:8] * 2, "cka") == pytest.approx(1.0)
