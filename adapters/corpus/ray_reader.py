"""Ray Data reads the prompt file: a datasource that runs the local engine's reader on a Ray task.

Ray's own ``read_text`` splits lines at every separator ``str.splitlines`` knows (a form feed,
U+0085, U+2028 inside a prompt start new rows) and ``read_json`` fails the whole read on one
line that is not JSON, or on a text that is a number in one line and a string in another,
where the local engine makes an ``errors`` row or reads the number as text; neither
``read_csv`` nor ``read_parquet`` numbers the rows (``Dataset.zip`` with ``ray.data.range``
would, but it is deprecated in Ray 2.60 and holds the whole input before it starts).

So this datasource (Ray Data's documented extension point for a file format: a
:class:`~ray.data.datasource.FileBasedDatasource` that implements ``_read_stream``) lets Ray
open the file, with its filesystems and retries, on a node of the cluster, and reads it with
:func:`.readers.numbered_rows`, the code of the local engine. One file is read by one task
from its first row to its last, so the row numbers it gives are the local engine's.

Imported only when a Ray run starts (it imports ray).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
from ray.data.datasource import FileBasedDatasource

from .readers import PromptFile, PromptId, numbered_rows

ROWS_PER_BLOCK = 1024  # rows of each block the read task yields


def text_bytes(text: str | None) -> bytes | None:
    """UTF-8 bytes of a prompt, lone surrogates kept (see :func:`.ray_engine.text_of`)."""
    return None if text is None else text.encode("utf-8", "surrogatepass")


def rows_block(rows: list[tuple[int, PromptId, str | None, str]], string_ids: bool) -> pa.Table:
    """Numbered input rows (from :func:`.readers.numbered_rows`) as an Arrow block:
    ``_row``, ``prompt_id``, ``text``, ``problem``."""
    numbers, ids, texts, problems = zip(*rows, strict=True) if rows else ((), (), (), ())
    return pa.table(
        {
            "_row": pa.array(numbers, pa.int64()),
            "prompt_id": pa.array(ids, pa.string() if string_ids else pa.int64()),
            # Bytes, not strings: a lone surrogate (valid in a Python str, not in Arrow's UTF-8)
            # must reach the worker, which turns it into an errors row as the local engine does.
            "text": pa.array([text_bytes(t) for t in texts], pa.large_binary()),
            "problem": pa.array(problems, pa.string()),
        }
    )


def batch_rows(
    block: pa.Table, batch_size: int, n_rows: int, todo: list[int], limit: int | None = None
) -> pa.Table:
    """Add ``_start`` and ``_end``, the row range of each row's batch (rows ``k * batch_size``
    up to ``(k + 1) * batch_size``, as the local engine cuts them); keep only the rows of the
    batches that start at ``todo`` (not finished) and before ``limit`` (the fit pass of
    ``--nmf-sample``; the last batch then ends at ``limit``)."""
    rows = block.column("_row").to_numpy()
    start = rows - rows % batch_size
    end = np.minimum(start + batch_size, n_rows if limit is None else min(n_rows, limit))
    keep = np.isin(start, np.asarray(todo, np.int64))
    if limit is not None:
        keep &= rows < limit
    block = block.append_column("_start", pa.array(start, pa.int64()))
    block = block.append_column("_end", pa.array(end, pa.int64()))
    return block.filter(pa.array(keep))


class PromptRows(FileBasedDatasource):
    """The rows of a checked prompt file: ``_row`` (0-based), ``prompt_id``, ``text`` (UTF-8
    bytes) and ``problem``, in blocks of ``rows_per_block`` rows (default
    :data:`ROWS_PER_BLOCK`; see :func:`rows_block`)."""

    def __init__(self, source: PromptFile, rows_per_block: int | None = None) -> None:
        # Absolute: the read task runs in a Ray worker, whose working folder is not ours.
        super().__init__(str(source.path.absolute()))
        self.source = source
        self.rows_per_block = rows_per_block or ROWS_PER_BLOCK

    def _open_input_source(self, filesystem: Any, path: str, **open_args: Any) -> Any:
        if self.source.kind == ".parquet":  # its footer needs random access, not a stream
            return filesystem.open_input_file(path)
        return super()._open_input_source(filesystem, path, **open_args)

    def _read_stream(self, f: Any, path: str) -> Iterator[pa.Table]:
        string_ids = self.source.id_column is not None
        rows = []
        for row in numbered_rows(self.source, f):
            rows.append(row)
            if len(rows) == self.rows_per_block:
                yield rows_block(rows, string_ids)
                rows = []
        if rows:
            yield rows_block(rows, string_ids)
