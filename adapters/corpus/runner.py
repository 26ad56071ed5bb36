"""The local engine: stream a prompt file through :class:`~.batch.BatchFunction` in this process.

:func:`run` takes a run checked by :func:`.checks.check` (no model loaded yet), loads the
model, fits the neuron factors when asked, and loops over the batches not yet done, writing
each one's tables as Parquet parts (see :mod:`.store`). Memory holds one batch of input and
its results at a time, whatever the size of the corpus.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

import ecco_core as ec

from . import factors as factor_fit
from . import store
from .batch import (
    BatchFunction,
    Factors,
    activation_matrix,
    describe,
    examples_schema,
    load_model,
)
from .checks import Checked
from .errors import CorpusInputError
from .options import RunConfig
from .readers import Batch, read_batches


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def folders(config: RunConfig) -> dict[str, str]:
    """Folder of each table a batch writes (per-batch factor examples are candidates)."""
    return {
        name: store.CANDIDATES if name == "factor_examples" else name
        for name in config.options.tables()
    }


def fit_batches(checked: Checked) -> Iterator[Batch]:
    """The batches the factors are fitted on: every one, or those of the first nmf_sample rows."""
    limit = checked.config.nmf_sample
    for batch in read_batches(checked.source, checked.config.batch_size):
        if limit is not None and batch.start >= limit:
            return
        if limit is not None and batch.end > limit:
            keep = limit - batch.start
            yield Batch(
                batch.index,
                batch.start,
                batch.ids[:keep],
                batch.texts[:keep],
                batch.problems[:keep],
            )
            return
        yield batch


def save_factors(checked: Checked, components: np.ndarray, facts: dict[str, Any]) -> None:
    """Write ``factor_loadings`` and ``factor_tokens`` of freshly fitted factors."""
    out = checked.config.out
    if "promoted_ids" in facts:
        table = factor_fit.tokens_table(facts["promoted_ids"], facts["promoted_tokens"])
        store.write_table(factor_fit.tokens_path(out), table)
    table = factor_fit.loadings_table(components, int(facts["n_layers"]))
    store.write_table(factor_fit.loadings_path(out), table)  # last: marks the fit done


def fit_factors(lm: ec.LM, checked: Checked, progress: bool = False) -> Factors:
    """NMF factors of the FFN activations of every token of the corpus (one streamed pass).

    Written once to ``factor_loadings``; a resumed run reads them back instead of refitting.
    """
    config = checked.config
    saved = factor_fit.read_components(config.out)
    if saved is not None:
        return Factors(components=saved)
    total = checked.source.n_rows if config.nmf_sample is None else config.nmf_sample
    bar = tqdm(
        total=min(total, checked.source.n_rows),
        unit="prompt",
        desc="fitting neuron factors",
        disable=not progress,
        file=sys.stderr,
    )

    def matrices() -> Iterator[np.ndarray]:
        for batch in fit_batches(checked):
            yield activation_matrix(lm, batch.ids, batch.texts, config.options, batch.problems)
            bar.update(len(batch.ids))

    try:
        components, _ = factor_fit.fit_stream(matrices(), config.nmf)
    finally:
        bar.close()
    save_factors(checked, components, describe(lm, config.options, components))
    return Factors(components=components)


def _top_per_factor(candidates: pa.Table, top: int) -> pa.Table:
    """The ``top`` strongest rows of each factor, ranked 1.. (ties keep their order)."""
    ordered = candidates.sort_by([("factor", "ascending"), ("activation", "descending")])
    factor = ordered.column("factor").to_numpy()
    if not factor.size:
        return ordered
    starts = np.flatnonzero(np.r_[True, factor[1:] != factor[:-1]])
    rank = np.arange(factor.size) - np.repeat(starts, np.diff(np.r_[starts, factor.size]))
    keep = rank < top
    column = ordered.schema.get_field_index("rank")
    kept = ordered.filter(pa.array(keep))
    return kept.set_column(column, "rank", pa.array(rank[keep] + 1, pa.int64()))


def finish_factor_examples(config: RunConfig, id_type: pa.DataType) -> int:
    """Merge every batch's candidates into ``factor_examples`` (top N per factor); rows written.

    The parts are merged one at a time into the best rows so far, so memory holds at most
    one part plus N rows per factor. Sorting is stable and parts are read in input order, so
    among equal activations the earlier input row comes first.
    """
    folder = config.out / store.CANDIDATES
    target = examples_schema(id_type)
    best = target.empty_table()
    for part in sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []:
        merged = pa.concat_tables([best, pq.read_table(part).cast(target)])
        best = _top_per_factor(merged, config.options.top_examples)
    store.write_table(config.out / "factor_examples" / f"{store.ALL_PART}.parquet", best)
    return int(best.num_rows)


def manifest(
    checked: Checked,
    facts: dict[str, Any],
    started: str,
    status: str,
    rows: dict[str, int],
    elapsed: float,
) -> dict[str, Any]:
    """manifest.json of a run; ``facts`` come from :func:`.batch.describe`."""
    config = checked.config
    return {
        "format": store.FORMAT,
        "status": status,
        "run": config.key(),
        "n_rows": checked.source.n_rows,
        "model": facts["model"],
        "model_kind": facts["model_kind"],
        "n_layers": facts["n_layers"],
        "analyses": list(config.options.analyses),
        "tables": sorted(rows),
        "rows": rows,
        "engine": config.engine,
        "device": facts["device"],
        "versions": facts["versions"],
        "command": sys.argv,
        "started": started,
        "updated": _now(),
        "elapsed_s": round(elapsed, 3),
    }


def begin(checked: Checked, facts: dict[str, Any]) -> tuple[str, float]:
    """Check the watch tokens, write a "running" manifest, remove unfinished parts.

    Returns (start time of the first run, seconds spent by earlier runs).
    """
    if facts["watch_error"]:
        raise CorpusInputError(f"--watch: {facts['watch_error']}")
    out = checked.config.out
    out.mkdir(parents=True, exist_ok=True)
    previous = checked.manifest or {}
    started = str(previous.get("started") or _now())
    elapsed_before = float(previous.get("elapsed_s") or 0.0)
    store.write_json(
        out / store.MANIFEST, manifest(checked, facts, started, "running", {}, elapsed_before)
    )
    names = [*folders(checked.config).values(), "factor_examples", "factor_loadings"]
    store.remove_unfinished(out, [*names, "factor_tokens"])
    return started, elapsed_before


def finish(checked: Checked, facts: dict[str, Any], started: str, elapsed: float) -> dict[str, Any]:
    """Merge the factor examples, write the final manifest and the report; return the manifest."""
    config = checked.config
    rows: dict[str, int] = {}
    for counts in store.done_shards(config.out).values():
        for name, n in counts.items():
            if name != "factor_examples":
                rows[name] = rows.get(name, 0) + n
    if "neurons" in config.options.analyses:
        id_type = pa.string() if config.options.string_ids else pa.int64()
        rows["factor_examples"] = finish_factor_examples(config, id_type)
        for name in ("factor_loadings", "factor_tokens"):
            path = config.out / name / f"{store.FIT_PART}.parquet"
            if path.is_file():
                rows[name] = int(pq.ParquetFile(path).metadata.num_rows)
    result = manifest(checked, facts, started, "complete", rows, elapsed)
    store.write_json(config.out / store.MANIFEST, result)
    from .report import write_report

    write_report(config.out)
    return result


def run(checked: Checked, *, progress: bool = True, lm: ec.LM | None = None) -> dict[str, Any]:
    """Run (or resume) a checked corpus run with the local engine; return the final manifest.

    ``lm`` reuses an already loaded model (else ``config.model`` is loaded).
    """
    config = checked.config
    began = time.perf_counter()
    if lm is None:
        lm = load_model(config.model, config.device, config.dtype)
    facts = describe(lm, config.options)
    started, elapsed_before = begin(checked, facts)
    out = config.out
    factors = fit_factors(lm, checked, progress) if "neurons" in config.options.analyses else None
    function = BatchFunction(config.options, lm=lm, factors=factors)
    done = store.done_shards(out)
    already = sum(int(stem.split("-")[2]) - int(stem.split("-")[1]) for stem in done)
    bar = tqdm(
        total=checked.source.n_rows,
        initial=already,
        unit="prompt",
        desc="ecco-core corpus",
        disable=not progress,
        file=sys.stderr,
        smoothing=0.1,
    )
    where = folders(config)
    try:
        for batch in read_batches(checked.source, config.batch_size):
            stem = store.shard_stem(batch.start, batch.end)
            if stem in done:
                continue
            tables = function(
                {"prompt_id": batch.ids, "text": batch.texts, "problem": batch.problems}
            )
            store.save_shard(out, stem, tables, where)
            bar.update(len(batch.ids))
    finally:
        bar.close()
    return finish(checked, facts, started, elapsed_before + time.perf_counter() - began)
