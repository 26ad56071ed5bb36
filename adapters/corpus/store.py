"""The output folder of a corpus run: Parquet datasets written batch by batch, atomically.

::

    DIR/manifest.json                          model, options, versions, row counts, time
    DIR/<table>/part-0000000000-0000000016.parquet   rows 0..15 of the input, one per table
    DIR/factor_loadings/part-fit.parquet       neuron factors (fitted before the batches)
    DIR/factor_examples/part-all.parquet       the top examples of every factor (at the end)
    DIR/report.html
    DIR/_shards/part-0000000000-0000000016.json      "batch done" marker: rows per table
    DIR/_factor_candidates/part-....parquet    each batch's strongest examples per factor

Every file is written under a hidden temporary name in its own folder and renamed into place,
so a reader (or a resumed run) never sees half a file. A batch counts as done only once its
marker exists, which is written after all of its parts: a run killed at any point leaves
parts without a marker at most, and those are deleted and recomputed on ``--resume``. Names
starting with ``_`` or ``.`` are skipped by pyarrow's and Ray's dataset readers, so
``pyarrow.dataset.dataset(DIR / "rankings")`` never reads a temporary file. After a run was
killed, and until it is resumed, a table folder may also hold parts of a batch without a
marker (and without its other tables): read a run whose manifest says ``complete``.

Nothing here imports torch: the folder is checked before the model loads.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import CorpusInputError

MANIFEST = "manifest.json"
REPORT = "report.html"
DONE = "_shards"
CANDIDATES = "_factor_candidates"
FIT_PART = "part-fit"
ALL_PART = "part-all"
FORMAT = 1  # version of the folder layout written into manifest.json


def shard_stem(start: int, end: int) -> str:
    """Name (without suffix) of the parts holding input rows ``start`` to ``end - 1``."""
    return f"part-{start:010d}-{end:010d}"


def write_atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """Call ``write(temporary path)`` in ``path``'s folder, then rename it to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: Path, value: Any) -> None:
    """Write JSON atomically (sorted keys, indented)."""
    text = json.dumps(value, indent=2, sort_keys=True, allow_nan=False)
    write_atomic(path, lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))


def write_table(path: Path, table: Any) -> None:
    """Write a pyarrow Table to a Parquet file atomically."""
    import pyarrow.parquet as pq

    write_atomic(path, lambda tmp: pq.write_table(table, tmp))


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_out(out: Path, resume: bool) -> dict[str, Any] | None:
    """Check the output folder; return the manifest of the run to resume (or None).

    Raises CorpusInputError when ``out`` is a file, cannot be written, is not empty without
    ``resume``, or is not a corpus run's folder with ``resume``.
    """
    out = out.expanduser()
    if out.exists() and not out.is_dir():
        raise CorpusInputError(f"--out {str(out)!r} is a file; give a folder")
    base = _nearest_existing(out.absolute())
    if not base.is_dir() or not os.access(base, os.W_OK | os.X_OK):
        raise CorpusInputError(f"--out {str(out)!r} cannot be written (no write access to {base})")
    if not out.exists() or not any(out.iterdir()):
        return None
    if not resume:
        raise CorpusInputError(
            f"--out {str(out)!r} is not empty; add --resume to continue the run in it, "
            "or choose a new folder (nothing is overwritten)"
        )
    manifest = read_manifest(out)
    if manifest is None:
        raise CorpusInputError(
            f"--out {str(out)!r} holds no {MANIFEST}: it is not a corpus run that --resume "
            "can continue"
        )
    return manifest


def read_manifest(out: Path) -> dict[str, Any] | None:
    """The manifest of the run in ``out``, or None."""
    path = out / MANIFEST
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CorpusInputError(f"{path} cannot be read: {exc}") from exc
    return value if isinstance(value, dict) else None


def check_resume(manifest: dict[str, Any], key: dict[str, Any], n_rows: int) -> None:
    """Raise CorpusInputError when a resumed run's options or data differ from the first run."""
    if manifest.get("format") != FORMAT:
        raise CorpusInputError(
            f"the run was written in layout {manifest.get('format')!r}; this version writes "
            f"{FORMAT}: start a new --out"
        )
    before = manifest.get("run", {})
    changed = [
        f"{name} was {before.get(name)!r}, now {value!r}"
        for name, value in key.items()
        if before.get(name) != value
    ]
    if manifest.get("n_rows") != n_rows:
        changed.append(f"the data had {manifest.get('n_rows')} rows, now {n_rows}")
    if changed:
        raise CorpusInputError(
            "cannot resume: " + "; ".join(changed) + ". Use the first run's options or a new --out"
        )


def done_shards(out: Path) -> dict[str, dict[str, int]]:
    """``{shard stem: {table: rows}}`` of the batches finished in ``out``."""
    folder = out / DONE
    if not folder.is_dir():
        return {}
    return {
        path.stem: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(folder.glob("part-*.json"))
    }


def remove_unfinished(out: Path, folders: list[str]) -> int:
    """Delete temporary files and parts of batches without a marker; return how many."""
    done = set(done_shards(out))
    removed = 0
    for name in [*folders, DONE, "."]:  # markers and manifest/report: temporary files only
        folder = out / name
        if not folder.is_dir():
            continue
        parts = name not in (DONE, ".")
        for path in folder.iterdir():
            temporary = path.name.startswith(".") and ".tmp-" in path.name
            unfinished = parts and path.name.startswith("part-0") and path.stem not in done
            if temporary or unfinished:
                path.unlink()
                removed += 1
    return removed


def save_shard(out: Path, stem: str, tables: dict[str, Any], folders: dict[str, str]) -> None:
    """Write one batch's tables (``folders`` maps a table to its folder), then its marker."""
    counts = {}
    for name, table in tables.items():
        write_table(out / folders.get(name, name) / f"{stem}.parquet", table)
        counts[name] = int(table.num_rows)
    write_json(out / DONE / f"{stem}.json", counts)
