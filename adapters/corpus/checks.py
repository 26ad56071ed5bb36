"""Checking a corpus run before anything heavy is imported or loaded (no torch here)."""

from __future__ import annotations

import importlib.util
import os
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
        connection = socket.create_connection(where, timeout=5)
    except OSError as exc:
        raise CorpusInputError(
            f"no Ray cluster at --address {address}: {exc.strerror or exc}; start one with "
            "`ray start --head`, or check the address"
        ) from exc
    with connection:
        if os.environ.get("RAY_USE_TLS", "0") in ("0", "") and not _answers_http2(connection):
            raise CorpusInputError(
                f"--address {address} accepts connections but does not answer as Ray does "
                "(no gRPC server there); give the head's GCS port (6379 by default) or "
                "ray://host:10001 for Ray Client"
            )


# Client connection preface of HTTP/2 (RFC 9113, section 3.4) followed by an empty SETTINGS frame.
_HTTP2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def _answers_http2(connection: socket.socket, timeout: float = 5.0) -> bool:
    """Whether the server behind ``connection`` answers like a gRPC server (Ray's GCS and Ray
    Client both are): its first frame after the client preface is a SETTINGS frame (type 4)."""
    connection.settimeout(timeout)
    try:
        connection.sendall(_HTTP2_HELLO)
        header = b""
        while len(header) < 9:
            chunk = connection.recv(9 - len(header))
            if not chunk:
                return False
            header += chunk
    except OSError:
        return False
    return header[3] == 4
