"""JSON serialization of records: a versioned envelope and a closed registry.

A file holds ``{"kind": K, "version": V, "data": {...}}``. ``K`` must be a registered record
kind (see :data:`ecco_core.records.RECORD_TYPES`); nothing in a file names Python code, so
loading an untrusted file never runs code. Arrays are stored as
``{"dtype": "float32", "shape": [2, 3], "data": [...]}`` with row-major flat data; non-finite
floats are written as the strings ``"nan"``, ``"inf"`` and ``"-inf"`` (JSON itself is written
with ``allow_nan=False``). Whether a field may hold them is up to the record's validation.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import attrs
import numpy as np

from .errors import RecordFormatError
from .records import FIELD_KEY, FLOAT_DTYPES, RECORD_TYPES, Record, thaw_json

_NONFINITE = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}


def _encode_float(x: float) -> float | str:
    if np.isnan(x):
        return "nan"
    if np.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def _encode_array(array: np.ndarray) -> dict[str, Any]:
    flat = array.reshape(-1).tolist()
    if array.dtype.kind == "f":
        flat = [_encode_float(x) for x in flat]
    return {"dtype": str(array.dtype), "shape": list(array.shape), "data": flat}


def _encode_field(spec: dict[str, Any], value: Any) -> Any:
    kind = spec["type"]
    if kind == "array":
        return _encode_array(value)
    if kind == "strings":
        return list(value)
    if kind == "string_table":
        return [list(row) for row in value]
    if kind == "json_object":
        return thaw_json(value)
    if kind == "record":
        return to_envelope(value)["data"]
    return value


def to_envelope(rec: Record) -> dict[str, Any]:
    """The envelope ``{"kind", "version", "data"}`` of a record as plain Python data."""
    cls = type(rec)
    if RECORD_TYPES.get(getattr(cls, "KIND", "")) is not cls:
        raise RecordFormatError(f"{cls.__name__} is not a registered record type")
    data = {
        field.name: _encode_field(field.metadata[FIELD_KEY], getattr(rec, field.name))
        for field in attrs.fields(cast(Any, cls))
    }
    return {"kind": cls.KIND, "version": cls.VERSION, "data": data}


def dumps(rec: Record, indent: int | None = None) -> str:
    """Serialize a record to JSON (sorted keys, no NaN literals)."""
    return json.dumps(to_envelope(rec), allow_nan=False, sort_keys=True, indent=indent)


def save(rec: Record, path: str | os.PathLike[str]) -> Path:
    """Write a record's JSON to ``path`` via a temporary file and an atomic rename.

    Returns the path written.
    """
    target = Path(path)
    write_text_atomic(target, dumps(rec))
    return target


def _open_temporary(directory: Path, name: str) -> tuple[int, Path]:
    """Create a new hidden file next to the target, with the permissions any program's new
    file gets (``0o666`` minus the umask: the kernel applies it)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = directory / f".{name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` so that a reader never sees a half-written file.

    See :func:`write_bytes_atomic`.
    """
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a hidden temporary file and an atomic rename.

    The file gets the permissions a plain ``open(path, "w")`` would give it: those of the file
    it replaces, else ``0o666`` minus the umask. Errors name ``path``, never the temporary file,
    which is removed.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    tmp: Path | None = None
    try:
        fd, tmp = _open_temporary(directory, path.name)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        if path.exists():
            os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        message = f"cannot write {str(path)!r}: {exc.strerror or exc}"
        # OSError(errno, ...) builds the matching subclass (PermissionError, ...).
        raise (OSError(exc.errno, message) if exc.errno else OSError(message)) from None
    except BaseException:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise


def _decode_array(name: str, spec: dict[str, Any], value: Any) -> np.ndarray:
    if not isinstance(value, dict) or set(value) != {"dtype", "shape", "data"}:
        raise RecordFormatError(f"{name}: expected an array object with dtype, shape and data")
    dtype, shape, data = value["dtype"], value["shape"], value["data"]
    allowed = FLOAT_DTYPES if spec["dtype"] == "float" else (spec["dtype"],)
    if dtype not in allowed:
        raise RecordFormatError(f"{name}: dtype {dtype!r} is not one of {allowed}")
    if (
        not isinstance(shape, list)
        or len(shape) != spec["ndim"]
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)
    ):
        raise RecordFormatError(
            f"{name}: shape {shape!r} is not a list of {spec['ndim']} non-negative integers"
        )
    if not isinstance(data, list) or len(data) != int(np.prod(shape, dtype=np.int64)):
        raise RecordFormatError(f"{name}: data does not hold the {shape} values its shape says")
    for x in data:
        if dtype == "int64":
            ok = isinstance(x, int) and not isinstance(x, bool)
        elif dtype == "bool":
            ok = isinstance(x, bool)
        else:
            ok = (isinstance(x, (int, float)) and not isinstance(x, bool)) or (
                isinstance(x, str) and x in _NONFINITE
            )
        if not ok:
            raise RecordFormatError(f"{name}: invalid {dtype} array element {x!r}")
    values = [_NONFINITE[x] if isinstance(x, str) else x for x in data]
    try:
        return np.array(values, dtype=dtype).reshape(shape)
    except (ValueError, OverflowError) as exc:
        raise RecordFormatError(f"{name}: {exc}") from exc


def _decode_field(name: str, spec: dict[str, Any], value: Any) -> Any:
    kind = spec["type"]
    if kind == "array":
        return _decode_array(name, spec, value)
    if kind == "strings":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise RecordFormatError(f"{name}: expected a list of strings")
        return value
    if kind == "string_table":
        if not isinstance(value, list) or not all(
            isinstance(row, list) and all(isinstance(v, str) for v in row) for row in value
        ):
            raise RecordFormatError(f"{name}: expected a list of lists of strings")
        return value
    if kind == "json_object":
        if not isinstance(value, dict):
            raise RecordFormatError(f"{name}: expected an object")
        return value
    if kind == "record":
        return _build(spec["kind"], value)
    return value


def _build(kind: str, data: Any) -> Record:
    cls = RECORD_TYPES[kind]
    if not isinstance(data, dict):
        raise RecordFormatError(f"{kind}: 'data' must be an object")
    fields = attrs.fields(cast(Any, cls))
    expected = {f.name for f in fields}
    missing, extra = expected - set(data), set(data) - expected
    if missing or extra:
        raise RecordFormatError(
            f"{kind}: missing fields {sorted(missing)}, unexpected fields {sorted(extra)}"
        )
    kwargs = {
        f.name: _decode_field(f"{kind}.{f.name}", f.metadata[FIELD_KEY], data[f.name])
        for f in fields
    }
    try:
        return cls(**kwargs)
    except RecordFormatError as exc:
        raise RecordFormatError(f"{kind}: {exc}") from exc


def _reject_constant(name: str) -> Any:
    raise RecordFormatError(f"JSON literal {name} is not allowed; non-finite values are strings")


def from_envelope(envelope: Any) -> Record:
    """Build a record from envelope data (as produced by :func:`to_envelope`)."""
    if not isinstance(envelope, dict) or set(envelope) != {"kind", "version", "data"}:
        raise RecordFormatError(
            "not an ecco-core record: expected an object with exactly 'kind', 'version', 'data'"
        )
    kind, version = envelope["kind"], envelope["version"]
    if kind not in RECORD_TYPES:
        raise RecordFormatError(
            f"unknown record kind {kind!r}; known kinds: {', '.join(sorted(RECORD_TYPES))}"
        )
    cls = RECORD_TYPES[kind]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise RecordFormatError(f"{kind}: version must be a positive integer, got {version!r}")
    if version > cls.VERSION:
        raise RecordFormatError(
            f"{kind} version {version} is newer than this ecco-core reads ({cls.VERSION}); "
            "upgrade ecco-core to load it"
        )
    return _build(kind, envelope["data"])


def _parse(source: str | os.PathLike[str]) -> Any:
    """JSON data from JSON text or a path to a JSON file."""
    text: str
    if isinstance(source, str) and source.lstrip().startswith(("{", "[")):
        text = source
    else:
        path = Path(source)
        if not path.is_file():
            raise RecordFormatError(f"{str(source)[:200]!r} is neither JSON text nor a file")
        text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise RecordFormatError(f"invalid JSON: {exc}") from exc


def load_record(source: str | os.PathLike[str] | dict[str, Any]) -> Record:
    """Load a record from a JSON string, a path to a JSON file, or envelope data.

    Never executes code from the input. Raises :class:`~ecco_core.errors.RecordFormatError`
    on malformed input, an unknown kind or a newer version; a list of records (such as the
    command line's ``--json`` file) is refused with a pointer to :func:`load_records`.
    """
    data = source if isinstance(source, dict) else _parse(source)
    if isinstance(data, list):
        raise RecordFormatError(
            f"this holds a list of {len(data)} records, not one; "
            "use ec.load_records(...) to load them all"
        )
    return from_envelope(data)


def load_records(
    source: str | os.PathLike[str] | Sequence[dict[str, Any]] | dict[str, Any],
) -> tuple[Record, ...]:
    """Load every record of a JSON list (e.g. ``ecco-core report --json`` output).

    ``source`` is JSON text, a path to a JSON file, or envelope data: a list of envelopes, or
    one envelope (then a tuple of one record). Never executes code from the input.
    """
    data = _parse(source) if isinstance(source, (str, os.PathLike)) else source
    if isinstance(data, dict):
        return (from_envelope(data),)
    if not isinstance(data, (list, tuple)):
        raise RecordFormatError(
            f"expected a list of records or one record, got {type(data).__name__}"
        )
    records = []
    for i, envelope in enumerate(data):
        try:
            records.append(from_envelope(envelope))
        except RecordFormatError as exc:
            raise RecordFormatError(f"record {i}: {exc}") from exc
    return tuple(records)


def _field_schema(spec: dict[str, Any]) -> dict[str, Any]:
    kind = spec["type"]
    if kind == "array":
        element: dict[str, Any] = (
            {"type": "integer"}
            if spec["dtype"] == "int64"
            else {"anyOf": [{"type": "number"}, {"enum": sorted(_NONFINITE)}]}
        )
        return {
            "type": "object",
            "required": ["dtype", "shape", "data"],
            "additionalProperties": False,
            "properties": {
                "dtype": {
                    "enum": list(FLOAT_DTYPES if spec["dtype"] == "float" else (spec["dtype"],))
                },
                "shape": {
                    "type": "array",
                    "items": {"type": "integer", "minimum": 0},
                    "minItems": spec["ndim"],
                    "maxItems": spec["ndim"],
                },
                "data": {"type": "array", "items": element},
            },
        }
    if kind == "strings":
        return {"type": "array", "items": {"type": "string"}}
    if kind == "string_table":
        return {"type": "array", "items": {"type": "array", "items": {"type": "string"}}}
    if kind == "json_object":
        return {"type": "object"}
    if kind == "record":
        return _data_schema(RECORD_TYPES[spec["kind"]])
    return {"type": kind}


def _data_schema(cls: type[Record]) -> dict[str, Any]:
    fields = attrs.fields(cast(Any, cls))
    return {
        "type": "object",
        "required": [f.name for f in fields],
        "additionalProperties": False,
        "properties": {f.name: _field_schema(f.metadata[FIELD_KEY]) for f in fields},
    }


def json_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the envelope of one record kind."""
    if kind not in RECORD_TYPES:
        raise RecordFormatError(f"unknown record kind {kind!r}; known: {sorted(RECORD_TYPES)}")
    cls = RECORD_TYPES[kind]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"ecco-core {kind} record",
        "type": "object",
        "required": ["kind", "version", "data"],
        "additionalProperties": False,
        "properties": {
            "kind": {"const": kind},
            "version": {"type": "integer", "minimum": 1, "maximum": cls.VERSION},
            "data": _data_schema(cls),
        },
    }
