"""Which integrated-gradients steps have not converged.

Integrated gradients satisfy completeness: the raw attributions of a step sum to
``f(input) - f(baseline)``. Their gap (``Attributions.convergence_delta``) measures how far the
path integral is from converged. A step is flagged when the gap exceeds ``tolerance`` (5% by
default) of the explained quantity ``target_values`` of that step. The views mark flagged
steps, and ``attribute`` warns with :class:`~ecco_core.errors.ConvergenceWarning`.
"""

from __future__ import annotations

import numpy as np

from .errors import InvalidArgumentError
from .records import Attributions

DEFAULT_TOLERANCE = 0.05

__all__ = ["DEFAULT_TOLERANCE", "unconverged", "unconverged_steps"]


def unconverged(
    delta: np.ndarray, values: np.ndarray, tolerance: float = DEFAULT_TOLERANCE
) -> np.ndarray:
    """bool [n_targets]: ``|delta| > tolerance * |values|`` step by step.

    Parameters
    ----------
    delta : [n_targets] completeness gaps; an empty array means "no gaps measured".
    values : [n_targets] the explained quantities.
    tolerance : the allowed gap as a fraction of ``|values|`` (non-negative).

    Returns
    -------
    bool [n_targets], all False when ``delta`` is empty.
    """
    if not (isinstance(tolerance, (int, float)) and tolerance >= 0):
        raise InvalidArgumentError(f"tolerance={tolerance!r} must be a number >= 0")
    values = np.asarray(values, dtype=np.float64)
    delta = np.asarray(delta, dtype=np.float64)
    if delta.size == 0:
        return np.zeros(values.shape, dtype=bool)
    if delta.shape != values.shape:
        raise InvalidArgumentError(
            f"delta {delta.shape} and values {values.shape} must have the same shape"
        )
    # A value of exactly 0 still needs a gap above a tiny floor to be flagged.
    return np.abs(delta) > tolerance * np.maximum(np.abs(values), 1e-9)


def unconverged_steps(record: Attributions, tolerance: float = DEFAULT_TOLERANCE) -> np.ndarray:
    """bool [n_targets]: the steps of ``record`` whose completeness gap is too large."""
    return unconverged(record.convergence_delta, record.target_values, tolerance)
