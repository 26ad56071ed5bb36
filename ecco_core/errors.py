"""Exceptions raised by ecco-core.

Every error the library raises on purpose derives from :class:`EccoError`; the subclasses also
derive from the built-in exception that fits, so ``except ValueError`` keeps working.
"""

from __future__ import annotations


class EccoError(Exception):
    """Base class of every error raised by ecco-core."""


class InvalidArgumentError(EccoError, ValueError):
    """An argument has a value outside its valid range or set."""


class InvalidTypeError(EccoError, TypeError):
    """An argument has the wrong type."""


class ModelLoadError(EccoError, OSError):
    """A model or tokenizer could not be loaded."""


class UnsupportedModelError(EccoError, ValueError):
    """A part of the model (blocks, final norm, head, ...) could not be located."""


class RecordFormatError(EccoError, ValueError):
    """A serialized record is malformed, of an unknown kind or of a newer version."""


class EccoWarning(UserWarning):
    """Base class of every warning issued by ecco-core (errors in the test suite)."""


class ConvergenceWarning(EccoWarning):
    """Integrated gradients did not converge: the completeness gap of some explained tokens
    is large (see :func:`ecco_core.convergence.unconverged_steps`); use more ``n_steps`` or
    another baseline."""
