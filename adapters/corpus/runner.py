"""The local engine: stream a prompt file through :class:`~.batch.BatchFunction` in this process.

:func:`run` takes a run checked by :func:`.checks.check` (no model loaded yet), loads the
model, fits the neuron factors when asked, and loops over the batches not yet done, writing
each one's tables as Parquet parts (see :mod:`.store`). Memory holds one batch of input and
its results at a time, whatever the size of the corpus.
"""

from __future__ import annotations

import platform
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm.auto import tqdm

import ecco_core as ec
from ecco_core.tables import schema, to_tables

from . import analyses, store
from .batch import BatchFunction, Factors, check_prompt, load_model
from .checks import Checked
from .errors import CorpusInputError
from .options import RunConfig
from .readers import read_batches


def _versions() -> dict[str, str]:
    import torch
    import transformers

    return {
        "ecco_core": ec.__version__,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "pyarrow": pa.__version__,
        "python": platform.python_version(),
    }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _folders(config: RunConfig) -> dict[str, str]:
    """Folder of each table a batch writes (per-batch factor examples are candidates)."""
    return {
        name: store.CANDIDATES if name == "factor_examples" else name
        for name in config.options.tables()
    }


def _valid_prompts(lm: ec.LM, checked: Checked) -> Iterator[tuple[Any, Any]]:
    options = checked.config.options
    for batch in read_batches(checked.source, checked.config.batch_size):
        for pid, text, problem in zip(batch.ids, batch.texts, batch.problems, strict=True):
            usable = not problem and text is not None
            if usable and check_prompt(lm, text, options.max_new_tokens) is None:
                yield pid, text


def fit_factors(lm: ec.LM, checked: Checked, progress: bool = False) -> Factors:
    """NMF factors of neuron activations over the first ``nmf_sample`` usable prompts.

    Written once to ``factor_loadings``; a resumed run reads them back instead of refitting.
    """
    config = checked.config
    path = config.out / "factor_loadings" / f"{store.FIT_PART}.parquet"
    if path.is_file():
        loads = pq.read_table(path).sort_by(
            [("factor", "ascending"), ("layer", "ascending"), ("neuron", "ascending")]
        )
        k = len(pc.unique(loads.column("factor")))
        components = loads.column("loading").to_numpy().reshape(k, -1)
        return Factors(components=components.astype(np.float32))
    if progress:
        print(
            f"fitting {config.nmf} neuron factors on the first {config.nmf_sample} prompts",
            file=sys.stderr,
        )
    acts: list[ec.Activations] = []
    texts: list[str] = []
    for _, text in _valid_prompts(lm, checked):
        texts.append(text)
        if len(texts) == config.nmf_sample:
            break
    for start in range(0, len(texts), config.batch_size):
        chunk = texts[start : start + config.batch_size]
        gens = analyses.generate(lm, chunk, max_new_tokens=config.options.max_new_tokens)
        good = [g for g in gens if isinstance(g, ec.Generation)]
        acts += [a for a in analyses.activations(lm, good) if isinstance(a, ec.Activations)]
    if not acts:
        raise CorpusInputError("no prompt of the data set could be generated from: nothing to fit")
    n_positions = sum(a.values.shape[2] for a in acts)
    fact = ec.factorize(acts, n_components=min(config.nmf, n_positions), lm=lm)
    store.write_table(path, to_tables(fact)["factor_loadings"])
    return Factors(components=np.asarray(fact.neuron_factors, dtype=np.float32))


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
    target = schema("factor_examples", id_type)
    best = target.empty_table()
    for part in sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []:
        merged = pa.concat_tables([best, pq.read_table(part).cast(target)])
        best = _top_per_factor(merged, config.options.top_examples)
    store.write_table(config.out / "factor_examples" / f"{store.ALL_PART}.parquet", best)
    return int(best.num_rows)


def _manifest(
    checked: Checked, lm: ec.LM, started: str, status: str, rows: dict[str, int], elapsed: float
) -> dict[str, Any]:
    config = checked.config
    return {
        "format": store.FORMAT,
        "status": status,
        "run": config.key(),
        "n_rows": checked.source.n_rows,
        "model": lm.name,
        "model_kind": lm.spec.kind,
        "n_layers": lm.spec.n_layers,
        "analyses": list(config.options.analyses),
        "tables": sorted(rows),
        "rows": rows,
        "engine": "local",
        "device": str(lm.device),
        "versions": _versions(),
        "command": sys.argv,
        "started": started,
        "updated": _now(),
        "elapsed_s": round(elapsed, 3),
    }


def run(checked: Checked, *, progress: bool = True, lm: ec.LM | None = None) -> dict[str, Any]:
    """Run (or resume) a checked corpus run with the local engine; return the final manifest.

    ``lm`` reuses an already loaded model (else ``config.model`` is loaded).
    """
    config = checked.config
    began = time.perf_counter()
    if lm is None:
        lm = load_model(config.model, config.device, config.dtype)
    if "watch" in config.options.analyses:
        from ecco_core.lens import watch_ids

        try:
            watch_ids(lm, list(config.options.watch))
        except ec.InvalidArgumentError as exc:
            raise CorpusInputError(f"--watch: {exc}") from exc
    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    previous = checked.manifest or {}
    started = str(previous.get("started") or _now())
    elapsed_before = float(previous.get("elapsed_s") or 0.0)
    folders = _folders(config)
    store.write_json(
        out / store.MANIFEST, _manifest(checked, lm, started, "running", {}, elapsed_before)
    )
    store.remove_unfinished(out, [*folders.values(), "factor_examples", "factor_loadings"])

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
    try:
        for batch in read_batches(checked.source, config.batch_size):
            stem = store.shard_stem(batch.start, batch.end)
            if stem in done:
                continue
            tables = function(
                {"prompt_id": batch.ids, "text": batch.texts, "problem": batch.problems}
            )
            store.save_shard(out, stem, tables, folders)
            bar.update(len(batch.ids))
    finally:
        bar.close()

    rows: dict[str, int] = {}
    for counts in store.done_shards(out).values():
        for name, n in counts.items():
            if name != "factor_examples":
                rows[name] = rows.get(name, 0) + n
    if factors is not None:
        id_type = pa.string() if config.options.string_ids else pa.int64()
        rows["factor_examples"] = finish_factor_examples(config, id_type)
        rows["factor_loadings"] = int(factors.components.size)
    elapsed = elapsed_before + time.perf_counter() - began
    manifest = _manifest(checked, lm, started, "complete", rows, elapsed)
    store.write_json(out / store.MANIFEST, manifest)
    from .report import write_report

    write_report(out)
    return manifest
