"""Checking a corpus run before anything heavy is imported or loaded (no torch here)."""

from __future__ import annotations

import importlib.util
import socket
from typing import Any

import attrs

from . import store
from .errors import CorpusInputError
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
    if config.engine == "ray" and config.address is not None:
        check_address(config.address)
    if config.engine == "ray" and importlib.util.find_spec("ray") is None:
        raise CorpusInputError(
            "--engine ray needs Ray Data: pip install 'ecco-core[ray]' (ray[data] 2.60)"
        )
    source = open_prompts(config.data, config.column, config.id_column)
    string_ids = source.id_column is not None
    if config.options.string_ids != string_ids:
        options = attrs.evolve(config.options, string_ids=string_ids)
        config = attrs.evolve(config, options=options)
    manifest = store.check_out(config.out, config.resume)
    if manifest is not None:
        store.check_resume(manifest, config.key(), source.n_rows)
    return Checked(config, source, manifest)


def _split(address: str) -> tuple[str, int] | None:
    bare = address.removeprefix("ray://")
    host, _, port = bare.rpartition(":")
    if not host or not port.isdigit():
        return None
    return host, int(port)


def check_address(address: str) -> None:
    """Raise CorpusInputError when a Ray ``--address`` is malformed or refuses connections.

    ``auto`` is left to Ray (it looks for a cluster started on this machine).
    """
    if address == "auto":
        return
    where = _split(address)
    if where is None:
        raise CorpusInputError(
            f"--address {address!r} is not valid; use auto, host:port or ray://host:port"
        )
    try:
        socket.create_connection(where, timeout=5).close()
    except OSError as exc:
        raise CorpusInputError(
            f"no Ray cluster at --address {address}: {exc.strerror or exc}; start one with "
            "`ray start --head`, or check the address"
        ) from exc
