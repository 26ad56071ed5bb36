"""Lazy readers of prompt files: ``.txt``, ``.jsonl``, ``.csv`` and ``.parquet``.

:func:`open_prompts` checks a file cheaply (it exists, its extension is known, the columns are
there, it has at least one row) without reading it all; :func:`read_batches` then streams it in
batches of rows, so a corpus of any size is never held in memory.

Rows are ``(prompt_id, text)``. ``prompt_id`` is the value of the id column as a string when
one is named, else the 0-based row number. ``text`` is None when the row has no usable text
(a null, or a ``.jsonl`` line that is not a JSON object); such rows become ``errors`` rows.
A ``.txt`` file holds one prompt per line (a blank line is an empty prompt); blank lines of a
``.jsonl`` file are skipped. Lines end at ``\\n``, ``\\r\\n`` or ``\\r`` (Python's universal
newlines), never inside a line at a form feed or U+2028.

:func:`numbered_rows` reads a file already opened in binary: the local engine opens it here
(:func:`read_batches`), the Ray engine's read task through Ray's filesystems
(:mod:`.ray_reader`), and both run this same code, so rows, ids and problems are the same.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import attrs

from .errors import CorpusInputError

EXTENSIONS = (".txt", ".jsonl", ".csv", ".parquet")
READ_BLOCK = 1 << 20  # bytes per block of the CSV reader

PromptId = int | str
RawRow = tuple[Any, str | None, str]  # (raw id or None, text or None, problem or "")
Row = tuple[PromptId, str | None, str]  # (prompt_id, text or None, problem or "")


@attrs.frozen
class PromptFile:
    """A checked prompt file.

    Attributes
    ----------
    path : the file; kind : its extension (one of :data:`EXTENSIONS`).
    column : column holding the prompt text (ignored for ``.txt``).
    id_column : column holding each prompt's id, or None for row numbers.
    n_rows : number of rows (prompts, including empty ones).
    """

    path: Path
    kind: str
    column: str
    id_column: str | None
    n_rows: int


@attrs.frozen
class Batch:
    """Consecutive rows ``start``..``start + len(ids) - 1`` of a prompt file.

    Attributes
    ----------
    index : the batch number (0-based); start : row number of its first row.
    ids : [n] prompt ids; texts : [n] prompt texts (None where a row has no usable text).
    problems : [n] why a row could not be read ("" when it was read).
    """

    index: int
    start: int
    ids: list[PromptId]
    texts: list[str | None]
    problems: list[str]

    @property
    def end(self) -> int:
        """Row number after the last row of the batch."""
        return self.start + len(self.ids)


def _missing(path: Path, name: str, option: str, found: list[str]) -> CorpusInputError:
    return CorpusInputError(
        f"{path.name} has no column {name!r} ({option}); its columns: {', '.join(found)}"
    )


def _lines(file: BinaryIO) -> Iterator[str]:
    """Lines of an open binary file decoded as UTF-8, split at ``\\n``, ``\\r\\n`` or ``\\r``
    only (Python's universal newlines: a form feed or U+2028 inside a line stays there)."""
    handle = io.TextIOWrapper(file, encoding="utf-8", newline=None)
    try:
        yield from handle
    finally:
        with contextlib.suppress(ValueError):  # already closed by the caller
            handle.detach()  # the caller closes ``file``


def jsonl_lines(file: BinaryIO) -> Iterator[str]:
    """The lines of a ``.jsonl`` file that are not blank (whitespace only)."""
    for line in _lines(file):
        if line.strip():
            yield line


def txt_lines(file: BinaryIO) -> Iterator[str]:
    """Every line of a ``.txt`` file without its line end (a blank line is an empty prompt)."""
    for line in _lines(file):
        yield line[:-1] if line.endswith("\n") else line


def _open_lines(path: Path, kind: str) -> Iterator[str]:
    with path.open("rb") as file:
        yield from (jsonl_lines(file) if kind == ".jsonl" else txt_lines(file))


def csv_reader(file: Any, columns: list[str]) -> Any:
    """A streaming pyarrow CSV reader of ``columns`` (a path or an open binary file), all read
    as strings (a blank cell is ``""``, not null)."""
    import pyarrow as pa
    from pyarrow import csv

    return csv.open_csv(
        file,
        read_options=csv.ReadOptions(block_size=READ_BLOCK),
        convert_options=csv.ConvertOptions(
            include_columns=columns,
            column_types={c: pa.string() for c in columns},
            strings_can_be_null=False,
        ),
    )


def _columns(path: Path, kind: str) -> list[str]:
    """Column names of a file, reading as little as possible."""
    if kind == ".parquet":
        import pyarrow.parquet as pq

        return list(pq.ParquetFile(path).schema_arrow.names)
    if kind == ".csv":
        from pyarrow import csv

        return list(csv.open_csv(path).schema.names)
    first = next(_open_lines(path, kind), None)
    if first is None:
        return []
    try:
        row = json.loads(first)
    except json.JSONDecodeError as exc:
        raise CorpusInputError(f"{path.name}: first line is not JSON ({exc})") from exc
    if not isinstance(row, dict):
        raise CorpusInputError(f"{path.name}: first line is not a JSON object")
    return list(row)


def count_rows(path: Path, kind: str) -> int:
    """Number of rows (one pass over the file for text formats; metadata for Parquet)."""
    if kind == ".parquet":
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    if kind == ".csv":
        return sum(b.num_rows for b in csv_reader(path, _columns(path, kind)[:1]))
    return sum(1 for _ in _open_lines(path, kind))


def open_prompts(
    path: str | Path, column: str = "text", id_column: str | None = None
) -> PromptFile:
    """Check a prompt file and count its rows; raise CorpusInputError saying what is wrong."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CorpusInputError(f"data file {str(path)!r} does not exist")
    if not path.is_file():
        raise CorpusInputError(f"data file {str(path)!r} is not a file")
    kind = path.suffix.lower()
    if kind not in EXTENSIONS:
        raise CorpusInputError(
            f"data file {path.name!r} has an unknown extension {path.suffix!r}; "
            f"use one of {', '.join(EXTENSIONS)}"
        )
    if kind == ".txt" and id_column is not None:
        raise CorpusInputError(
            f"--id-column does not apply to {path.name}: a .txt file has one prompt per line "
            "and no columns (prompt_id is the line number); use .jsonl, .csv or .parquet for ids"
        )
    try:
        if kind != ".txt":
            found = _columns(path, kind)
            if found and column not in found:
                raise _missing(path, column, "--column", found)
            if found and id_column is not None and id_column not in found:
                raise _missing(path, id_column, "--id-column", found)
        n_rows = count_rows(path, kind)
    except UnicodeDecodeError as exc:
        raise CorpusInputError(f"{path.name} is not UTF-8 text: {exc}") from exc
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        if isinstance(exc, CorpusInputError):
            raise
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CorpusInputError(f"cannot read {path.name}: {first}") from exc
    if n_rows == 0:
        raise CorpusInputError(f"data file {path.name} has no prompts (empty data set)")
    return PromptFile(
        path=path,
        kind=kind,
        column=column,
        id_column=id_column,
        n_rows=n_rows,
    )


def text_value(value: Any) -> tuple[str | None, str]:
    """(text, problem) of a value of the text column: numbers become text; null, lists and
    objects have no text."""
    if value is None:
        return None, "the text is null"
    if isinstance(value, str):
        return value, ""
    if isinstance(value, (int, float, bool)):
        return str(value), ""
    return None, f"the text is a {type(value).__name__}, not a string"


def jsonl_row(line: str, column: str, id_column: str | None) -> RawRow:
    """(raw id, text, problem) of one ``.jsonl`` line; a line that is not a JSON object, or
    has no ``column`` field, has no text."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        return None, None, f"line is not JSON: {exc}"
    if not isinstance(row, dict):
        return None, None, "line is not a JSON object"
    raw_id = row.get(id_column) if id_column else None
    if column not in row:
        return raw_id, None, f"no {column!r} field"
    return (raw_id, *text_value(row[column]))


def file_rows(source: PromptFile, file: Any) -> Iterator[RawRow]:
    """(raw id or None, text, problem) of every row of ``file``, in order.

    ``file`` is ``source``'s file opened for reading in binary (random access for Parquet):
    by this process for the local engine, by a Ray Data read task for the Ray engine, which
    both run this code.
    """
    if source.kind == ".txt":
        for line in txt_lines(file):
            yield None, line, ""
    elif source.kind == ".jsonl":
        for line in jsonl_lines(file):
            yield jsonl_row(line, source.column, source.id_column)
    else:
        columns = [source.column] + ([source.id_column] if source.id_column else [])
        if source.kind == ".csv":
            batches: Any = csv_reader(file, columns)
        else:
            import pyarrow.parquet as pq

            batches = pq.ParquetFile(file).iter_batches(batch_size=4096, columns=columns)
        for batch in batches:
            texts = batch.column(source.column).to_pylist()
            ids = batch.column(source.id_column).to_pylist() if source.id_column else None
            for i, value in enumerate(texts):
                yield (ids[i] if ids is not None else None, *text_value(value))


def prompt_row(number: int, row: RawRow, id_column: str | None) -> Row:
    """(prompt_id, text, problem) of row ``number``: the id column's value as a string, or
    the row number; a missing, null or blank id gives ``<row N>`` and no text."""
    raw_id, text, problem = row
    if id_column is None:
        return number, text, problem
    if raw_id is None or raw_id == "":  # a blank CSV cell reads as ""
        return f"<row {number}>", None, problem or f"no value in id column {id_column!r}"
    return str(raw_id), text, problem


def numbered_rows(source: PromptFile, file: Any) -> Iterator[tuple[int, PromptId, str | None, str]]:
    """(row number, prompt_id, text, problem) of every row of ``file`` (see :func:`file_rows`)."""
    for number, row in enumerate(file_rows(source, file)):
        yield (number, *prompt_row(number, row, source.id_column))


def _batch(index: int, start: int, rows: list[Row]) -> Batch:
    return Batch(
        index=index,
        start=start,
        ids=[r[0] for r in rows],
        texts=[r[1] for r in rows],
        problems=[r[2] for r in rows],
    )


def read_batches(source: PromptFile, batch_size: int) -> Iterator[Batch]:
    """Stream the file as batches of ``batch_size`` rows (the last one may be shorter)."""
    rows: list[Row] = []
    index = 0
    with source.path.open("rb") as file:
        for _, pid, text, problem in numbered_rows(source, file):
            rows.append((pid, text, problem))
            if len(rows) == batch_size:
                yield _batch(index, index * batch_size, rows)
                index, rows = index + 1, []
    if rows:
        yield _batch(index, index * batch_size, rows)
