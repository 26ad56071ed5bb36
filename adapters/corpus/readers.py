"""Lazy readers of prompt files: ``.txt``, ``.jsonl``, ``.csv`` and ``.parquet``.

:func:`open_prompts` checks a file cheaply (it exists, its extension is known, the columns are
there, it has at least one row) without reading it all; :func:`read_batches` then streams it in
batches of rows, so a corpus of any size is never held in memory.

Rows are ``(prompt_id, text)``. ``prompt_id`` is the value of the id column as a string when
one is named, else the 0-based row number. ``text`` is None when the row has no usable text
(a null, or a ``.jsonl`` line that is not a JSON object); such rows become ``errors`` rows.
A ``.txt`` file holds one prompt per line (a blank line is an empty prompt); blank lines of a
``.jsonl`` file are skipped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

from .errors import CorpusInputError

EXTENSIONS = (".txt", ".jsonl", ".csv", ".parquet")
READ_BLOCK = 1 << 20  # bytes per block of the CSV reader

PromptId = int | str


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


def _jsonl_lines(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield line


def _txt_lines(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8", newline=None) as handle:
        for line in handle:
            yield line[:-1] if line.endswith("\n") else line


def _csv_reader(path: Path, columns: list[str]) -> Any:
    import pyarrow as pa
    from pyarrow import csv

    return csv.open_csv(
        path,
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
    first = next(_jsonl_lines(path), None)
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
        return sum(b.num_rows for b in _csv_reader(path, _columns(path, kind)[:1]))
    lines = _jsonl_lines(path) if kind == ".jsonl" else _txt_lines(path)
    return sum(1 for _ in lines)


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


def _text(value: Any) -> tuple[str | None, str]:
    if value is None:
        return None, "the text is null"
    if isinstance(value, str):
        return value, ""
    if isinstance(value, (int, float, bool)):
        return str(value), ""
    return None, f"the text is a {type(value).__name__}, not a string"


def _rows(source: PromptFile) -> Iterator[tuple[Any, str | None, str]]:
    """(raw id or None, text, problem) for every row, in order."""
    if source.kind == ".txt":
        for line in _txt_lines(source.path):
            yield None, line, ""
    elif source.kind == ".jsonl":
        for line in _jsonl_lines(source.path):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                yield None, None, f"line is not JSON: {exc}"
                continue
            if not isinstance(row, dict):
                yield None, None, "line is not a JSON object"
                continue
            raw_id = row.get(source.id_column) if source.id_column else None
            if source.column not in row:
                yield raw_id, None, f"no {source.column!r} field"
                continue
            text, problem = _text(row[source.column])
            yield raw_id, text, problem
    else:
        columns = [source.column] + ([source.id_column] if source.id_column else [])
        if source.kind == ".csv":
            batches: Any = _csv_reader(source.path, columns)
        else:
            import pyarrow.parquet as pq

            batches = pq.ParquetFile(source.path).iter_batches(batch_size=4096, columns=columns)
        for batch in batches:
            texts = batch.column(source.column).to_pylist()
            ids = batch.column(source.id_column).to_pylist() if source.id_column else None
            for i, value in enumerate(texts):
                text, problem = _text(value)
                yield (ids[i] if ids is not None else None), text, problem


def _batch(index: int, start: int, rows: list[tuple[PromptId, str | None, str]]) -> Batch:
    return Batch(
        index=index,
        start=start,
        ids=[r[0] for r in rows],
        texts=[r[1] for r in rows],
        problems=[r[2] for r in rows],
    )


def read_batches(source: PromptFile, batch_size: int) -> Iterator[Batch]:
    """Stream the file as batches of ``batch_size`` rows (the last one may be shorter)."""
    rows: list[tuple[PromptId, str | None, str]] = []
    index = 0
    for number, (raw_id, text, problem) in enumerate(_rows(source)):
        if source.id_column is None:
            pid: PromptId = number
        elif raw_id is None or raw_id == "":  # a blank CSV cell reads as ""
            pid, text = f"<row {number}>", None
            problem = problem or f"no value in id column {source.id_column!r}"
        else:
            pid = str(raw_id)
        rows.append((pid, text, problem))
        if len(rows) == batch_size:
            yield _batch(index, index * batch_size, rows)
            index, rows = index + 1, []
    if rows:
        yield _batch(index, index * batch_size, rows)
