"""The error the corpus front end raises for bad input (exit code 2 on the command line).

The corpus command checks its input before torch is imported, so that a mistake is reported
in well under 2 seconds; importing anything from ``ecco_core`` would load torch (its package
imports every core module). This is therefore a ``ValueError`` of its own rather than a
subclass of ``ecco_core.errors.InvalidArgumentError``; once the model is loaded, the core's
own errors apply.
"""

from __future__ import annotations


class CorpusInputError(ValueError):
    """A corpus run's input is unusable: the file, a column, the options or the output folder."""
