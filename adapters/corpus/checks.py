"""Checking a corpus run before anything heavy is imported or loaded (no torch here)."""

from __future__ import annotations

from typing import Any

import attrs

from . import store
from .options import RunConfig
from .readers import PromptFile, open_prompts


@attrs.frozen
class Checked:
    """A run whose input and output folder were checked.

    Attributes
    ----------
    config : the run (``options.string_ids`` set from whether an id column is used).
    source : the checked prompt file; manifest : the run to resume in ``out``, or None.
    """

    config: RunConfig
    source: PromptFile
    manifest: dict[str, Any] | None


def check(config: RunConfig) -> Checked:
    """Check the data file, the options and the output folder; raise CorpusInputError."""
    source = open_prompts(config.data, config.column, config.id_column)
    string_ids = source.id_column is not None
    if config.options.string_ids != string_ids:
        options = attrs.evolve(config.options, string_ids=string_ids)
        config = attrs.evolve(config, options=options)
    manifest = store.check_out(config.out, config.resume)
    if manifest is not None:
        store.check_resume(manifest, config.key(), source.n_rows)
    return Checked(config, source, manifest)
