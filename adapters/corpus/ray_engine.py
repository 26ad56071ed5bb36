"""The Ray Data engine: the same batches and tables as the local engine, on Ray actors.

::

    read task (one per file)          PromptRows: readers.numbered_rows(FILE) -> _row, prompt_id,
                                      text, problem; map_batches(batch_rows): _start, _end,
                                      rows of finished batches dropped
    repartition(batch_size, strict)   blocks of exactly one batch each, in input order
    actors (--workers, model loaded once)     map_batches(RayBatch): BatchFunction(batch)
    driver  iter_batches <- one row per (batch, table): Arrow IPC bytes
            store.save_shard(...) (atomic parts, then the batch's marker)

Ray Data reads the input itself (:mod:`.ray_reader`): a read task on a node of the cluster opens
the file through Ray's filesystems (so the path must be visible there, e.g. on shared storage)
and runs the local engine's reader, which numbers the rows as it reads them; one file is read
by one task from its first row to its last, so row numbers, ids and errors rows are the local
engine's. A stateless function gives each row its batch, ``[k * batch_size, (k + 1) *
batch_size)``, and drops the rows of batches already done (``--resume``) or beyond
``--nmf-sample`` (fit pass); what remains is whole batches, in order. A streaming repartition
(``target_num_rows_per_block=batch_size, strict=True``, with ``preserve_order``) cuts it into
blocks of exactly one batch, so every actor gets work, and each actor call checks it got whole
batches (:func:`batches_of`). Nothing of the input passes through the driver, which only counts
the rows when it checks the file. ``preserve_order`` holds for the whole dataset, so batches
also come back in input order: a batch whose actor died holds back the later ones until Ray
has redone it.

The tables come back to the driver and are written there with the local engine's store, so
the output folder only has to exist on the driver, part names are the same, and a batch
delivered twice (a retried task) rewrites identical files.

With ``neurons``, a first execution streams every batch's activation matrix back, in input
order, into ``MiniBatchNMF.partial_fit`` on the driver; the second computes the tables with the
fitted factors. A small Ray task loads the model once more to describe it (manifest, the
``--watch`` check, the tokens each factor promotes), so the driver never loads the model.

Ray is imported only here and in :mod:`.ray_reader`, only when ``--engine ray`` runs;
``ecco_core`` never imports it.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import os
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from . import factors as factor_fit
from . import runner, store
from .batch import BatchFunction, Factors
from .checks import Checked, check_address
from .errors import CorpusInputError

CPU_WORKERS = 2  # default --workers on CPUs
# Bounded connection attempts when joining --address (Ray's defaults retry for minutes).
# They are read by Ray's C++ config when ray is imported, and by ray.init: set before both.
# A closed port is caught earlier by a socket check (checks.check_address), so these only bound
# a port that accepts connections but does not answer as Ray; they leave room for a slow head
# (tighter values, 1/5/2/2 s, failed a join once on a machine at load average 10).
CONNECT_ENV = {
    "RAY_gcs_server_port_wait_time_s": "2",
    "RAY_py_gcs_connect_timeout_s": "15",
    "RAY_gcs_rpc_server_connect_timeout_s": "5",
    "RAY_CLIENT_INITIAL_CONNECTION_TIMEOUT_S": "10",
}
QUIET_ENV = {"RAY_DATA_DISABLE_PROGRESS_BARS": "1", "RAY_DEDUP_LOGS": "0"}


# --- what travels between driver and actors ---------------------------------------------------


def batches_of(block: pa.Table) -> Iterator[tuple[int, int, pa.Table]]:
    """(start, end, rows) of each batch in a block of :func:`.ray_reader.batch_rows` rows.

    Raises RuntimeError unless every batch in the block is whole, its rows in order: shards
    and their markers are per batch, so a batch cut in two must never be written.
    """
    starts = block.column("_start").to_numpy()
    rows = block.column("_row").to_numpy()
    bounds = [0, *(np.flatnonzero(np.diff(starts)) + 1).tolist(), len(starts)]
    for first, stop in itertools.pairwise(bounds):
        if first == stop:
            continue
        start, end = int(starts[first]), int(block.column("_end")[first].as_py())
        if not np.array_equal(rows[first:stop], np.arange(start, end)):
            raise RuntimeError(
                f"a Ray actor got rows {rows[first]}..{rows[stop - 1]} of the batch of rows "
                f"{start}..{end - 1}, not the whole batch in order"
            )
        yield start, end, block.slice(first, stop - first)


def batch_starts(
    n_rows: int, batch_size: int, done: Iterable[str] = (), limit: int | None = None
) -> list[int]:
    """First rows of the batches of a run (those of the first ``limit`` rows) not ``done``
    (shard stems, see :func:`.store.done_shards`)."""
    finished = set(done)
    stop = n_rows if limit is None else min(n_rows, limit)
    return [
        start
        for start in range(0, stop, batch_size)
        if store.shard_stem(start, min(start + batch_size, n_rows)) not in finished
    ]


def text_of(data: bytes | None) -> str | None:
    """The text sent as bytes by :func:`.ray_reader.text_bytes` (lone surrogates kept)."""
    return None if data is None else data.decode("utf-8", "surrogatepass")


def _ipc(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def pack(start: int, end: int, tables: dict[str, pa.Table]) -> pa.Table:
    """One row per table of one batch: ``_start``, ``_end``, ``table``, ``payload`` (IPC).

    Arrow IPC bytes let tables of any schema (empty ones included) travel through one Ray
    Data column without schema unification.
    """
    names = list(tables)
    return pa.table(
        {
            "_start": pa.array([start] * len(names), pa.int64()),
            "_end": pa.array([end] * len(names), pa.int64()),
            "table": pa.array(names, pa.string()),
            "payload": pa.array([_ipc(tables[n]) for n in names], pa.large_binary()),
        }
    )


def unpack(block: pa.Table) -> dict[tuple[int, int], dict[str, pa.Table]]:
    """``{(start, end): {table: pyarrow.Table}}`` of the batches in a block of packed rows."""
    found: dict[tuple[int, int], dict[str, pa.Table]] = {}
    columns = block.select(["_start", "_end", "table", "payload"]).to_pydict()
    for start, end, name, payload in zip(*columns.values(), strict=True):
        found.setdefault((start, end), {})[name] = pa.ipc.open_stream(payload).read_all()
    return found


def whole_batches(
    blocks: Iterable[pa.Table], expected: set[str]
) -> Iterator[tuple[int, int, dict[str, pa.Table]]]:
    """(start, end, tables) of each batch once all ``expected`` tables of it have arrived.

    Ray Data cuts a large output block by rows, so one batch's packed tables may come in
    several blocks; a retried task may deliver a batch twice (given once). Raises
    RuntimeError if the blocks end with a batch still incomplete.
    """
    pending: dict[tuple[int, int], dict[str, pa.Table]] = {}
    given: set[tuple[int, int]] = set()
    for block in blocks:
        for key, tables in unpack(block).items():
            if key in given:
                continue
            pending.setdefault(key, {}).update(tables)
            if set(pending[key]) >= expected:
                given.add(key)
                yield key[0], key[1], pending.pop(key)
    if pending:
        missing = {f"{a}-{b}": sorted(expected - set(t)) for (a, b), t in pending.items()}
        raise RuntimeError(f"the Ray run returned batches without all their tables: {missing}")


def _matrix_table(x: np.ndarray) -> pa.Table:
    return pa.table(
        {
            "rows": pa.array([x.shape[0]], pa.int64()),
            "cols": pa.array([x.shape[1] if x.ndim == 2 else 0], pa.int64()),
            "values": pa.array([np.ascontiguousarray(x, np.float32).tobytes()], pa.large_binary()),
        }
    )


def matrix_of(table: pa.Table) -> np.ndarray:
    """The float32 activation matrix packed by :func:`_matrix_table`."""
    rows, cols = table.column("rows")[0].as_py(), table.column("cols")[0].as_py()
    buffer = table.column("values")[0].as_py()
    return np.frombuffer(buffer, dtype=np.float32).reshape(rows, cols)


class RayBatch:
    """The actor: loads the model once, then maps blocks of input rows to packed tables.

    ``mode="tables"`` returns every table of the batch (:class:`~.batch.BatchFunction`);
    ``mode="fit"`` returns the batch's activation matrix (table ``activations``).
    """

    def __init__(
        self,
        options: Any,
        model: str | None,
        device: str | None,
        dtype: str | None,
        threads: int,
        mode: str = "tables",
        components: np.ndarray | None = None,
    ) -> None:
        import torch

        torch.set_num_threads(threads)
        factors = Factors(components=components) if components is not None else None
        self.mode = mode
        self.function = BatchFunction(
            options, model=model, device=device, dtype=dtype, factors=factors
        )

    def __call__(self, block: pa.Table) -> pa.Table:
        from .batch import activation_matrix

        packed = [pack(0, 0, {})]  # an empty block has no batch
        for start, end, rows in batches_of(block):
            columns = {n: rows.column(n).to_pylist() for n in ("prompt_id", "problem")}
            columns["text"] = [text_of(t) for t in rows.column("text").to_pylist()]
            if self.mode == "fit":
                fn = self.function
                x = activation_matrix(
                    fn.lm, columns["prompt_id"], columns["text"], fn.options, columns["problem"]
                )
                tables = {"activations": _matrix_table(x)}
            else:
                tables = self.function(columns)
            packed.append(pack(start, end, tables))
        return pa.concat_tables(packed)


def describe_task(
    options: Any,
    model: str | None,
    device: str | None,
    dtype: str | None,
    components: np.ndarray | None,
) -> dict[str, Any]:
    """Run on a worker: load the model and describe it (see :func:`.batch.describe`)."""
    from .batch import describe, load_model

    return describe(load_model(model, device, dtype), options, components)


# --- starting, joining and leaving Ray ----------------------------------------------------


class _Environment:
    """Set environment variables for the run; put the old values back afterwards."""

    def __init__(self) -> None:
        self.saved: dict[str, str | None] = {}

    def set(self, **values: str) -> None:
        for key, value in values.items():
            self.saved.setdefault(key, os.environ.get(key))
            os.environ[key] = value

    def restore(self) -> None:
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self.saved.clear()


def _refresh_ray_config() -> None:
    """Make an already imported Ray re-read the RAY_* variables (auth mode, timeouts) and the
    auth token: Ray caches the token it first loaded, so without this a second local instance
    in one process (a second run, with its own token) fails to start its GCS."""
    if "ray" in sys.modules:
        with contextlib.suppress(Exception):
            from ray._raylet import (  # type: ignore[attr-defined]
                AuthenticationTokenLoader,
                Config,
            )

            Config.initialize("")  # first: see ray._private.authentication_test_utils
            AuthenticationTokenLoader.instance().reset_cache()


def _auth_for_address(env: _Environment) -> None:
    """Use token auth to join a cluster when a token is there (what ``ray start`` does)."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    token = Path.home() / ".ray" / "auth_token"
    if token.exists() or os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        env.set(RAY_AUTH_MODE="token")


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt, so Ray is shut down and temp files removed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(*_: Any) -> None:
        raise KeyboardInterrupt("terminated")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def ray_session(address: str | None, quiet: bool = True) -> Iterator[Any]:
    """Join ``address``, use the Ray this process already started, or start a local one.

    A local instance gets a private temporary folder and a private auth token (so
    ``~/.ray/auth_token`` is never written); it is shut down and its folder removed on exit,
    also on SIGTERM. Joining an unreachable address fails within seconds.
    """
    env = _Environment()
    env.set(**{k: v for k, v in QUIET_ENV.items() if k not in os.environ})
    temp: str | None = None
    started = False
    main_thread = threading.current_thread() is threading.main_thread()
    sigterm = signal.getsignal(signal.SIGTERM) if main_thread else None
    try:
        if address is not None:
            check_address(address)  # checks.check did it too; the cluster may have gone since
            env.set(**{k: v for k, v in CONNECT_ENV.items() if k not in os.environ})
            _auth_for_address(env)
        _refresh_ray_config()
        import ray

        if address is None and ray.is_initialized():
            yield ray
            return
        if address is None:
            temp = tempfile.mkdtemp(prefix="ecco_ray_", dir="/tmp")  # short: Unix sockets
            if "RAY_AUTH_MODE" not in os.environ:
                token = Path(temp, "auth_token")
                token.write_text(secrets.token_hex(16), encoding="utf-8")
                token.chmod(0o600)
                env.set(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
                _refresh_ray_config()
            init: dict[str, Any] = {"include_dashboard": False, "_temp_dir": temp}
        else:
            init = {"address": address}
        try:
            ray.init(**init, log_to_driver=not quiet, logging_level=logging.WARNING)
        except Exception as exc:
            where = f"--address {address}" if address else "a local Ray instance"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CorpusInputError(
                f"could not join {where}: {first} (auth: RAY_AUTH_MODE / RAY_AUTH_TOKEN_PATH "
                "must match the cluster's)"
            ) from exc
        started = True
        import ray.data

        logging.getLogger("ray.data").setLevel(logging.WARNING)
        # It would warn that the progress bars it was told to disable are disabled.
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        with _sigterm_as_interrupt():
            yield ray
    finally:
        if started:
            import ray

            with contextlib.suppress(Exception):
                ray.shutdown()
            if main_thread and sigterm is not None:  # ray.init installed its own handler
                signal.signal(signal.SIGTERM, sigterm)
        env.restore()
        _refresh_ray_config()
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)


# --- the run ----------------------------------------------------------------------------------


def plan_workers(
    resources: dict[str, float],
    workers: int | None,
    gpus: float,
    largest: dict[str, float] | None = None,
) -> tuple[int, dict[str, float], int]:
    """(actors, Ray resources per actor, torch threads per actor) for the cluster.

    ``resources`` are the cluster's totals, ``largest`` the most CPUs and GPUs one node has
    (default: the totals, one node): an actor must fit on one node. CPU actors share the
    cluster's CPUs but one (left to the driver, Ray Data and Ray itself): a whole CPU each on
    a 2-CPU machine would leave nothing and hang. GPU actors take ``gpus`` GPUs each. Raises
    CorpusInputError when the cluster cannot hold them (Ray Data would wait forever).
    """
    cpus, have_gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
    largest = resources if largest is None else largest
    if gpus > 0:
        n = workers if workers is not None else int(have_gpus // gpus)
        if n < 1 or n * gpus > have_gpus + 1e-9:
            raise CorpusInputError(
                f"{max(n, 1)} workers with --gpus-per-worker {gpus:g} need "
                f"{max(n, 1) * gpus:g} GPUs; the Ray cluster has {have_gpus:g}"
            )
        if gpus > float(largest.get("GPU", 0)) + 1e-9:
            raise CorpusInputError(
                f"--gpus-per-worker {gpus:g}: no node of the Ray cluster has that many GPUs "
                f"(the most on one node: {float(largest.get('GPU', 0)):g})"
            )
        return n, {"num_gpus": gpus}, 1
    if cpus < 2:
        raise CorpusInputError(
            f"the Ray engine needs a cluster of at least 2 CPUs (one stays free for the driver "
            f"and Ray); this one has {cpus:g}: use --engine local"
        )
    n = workers if workers is not None else CPU_WORKERS
    share = min((cpus - 1) / n, float(largest.get("CPU", 0)))
    if share < 0.25:
        raise CorpusInputError(
            f"{n} CPU workers do not fit on a Ray cluster of {cpus:g} CPUs (one stays free "
            f"for the driver and Ray); use --workers {max(1, int((cpus - 1) * 4))} or fewer"
        )
    share = min(share, float(int(share * 4)) / 4)
    return n, {"num_cpus": share}, max(1, int(share))


def largest_node(nodes: list[dict[str, Any]]) -> dict[str, float]:
    """The most CPUs and GPUs one live node has, from ``ray.nodes()``."""
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive", True)]
    return {key: max((float(r.get(key, 0)) for r in alive), default=0.0) for key in ("CPU", "GPU")}


def _dataset(
    ray: Any,
    checked: Checked,
    actor: dict[str, Any],
    plan: Any,
    starts: list[int],
    limit: int | None = None,
) -> Any:
    """Ray Data reads the file, keeps the batches starting at ``starts`` (whole, in order) and
    maps each one on an actor to its packed tables."""
    from .ray_reader import PromptRows, batch_rows

    config = checked.config
    workers, resources, _ = plan
    workers = max(1, min(workers, len(starts)))  # more actors than batches would idle
    context = ray.data.DataContext.get_current()
    kept, context.execution_options.preserve_order = context.execution_options.preserve_order, True
    try:  # a dataset copies the context when it is built
        rows = ray.data.read_datasource(PromptRows(checked.source)).map_batches(
            batch_rows,
            fn_kwargs={
                "batch_size": config.batch_size,
                "n_rows": checked.source.n_rows,
                "todo": starts,
                "limit": limit,
            },
            batch_size=None,
            batch_format="pyarrow",
        )
        # Blocks of exactly batch_size rows (the last may be shorter), cut from the rows in
        # order: the stream holds whole batches only, so each block is one batch.
        batches = rows.repartition(target_num_rows_per_block=config.batch_size, strict=True)
        return batches.map_batches(
            RayBatch,
            fn_constructor_kwargs=actor,
            batch_size=None,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=workers),
            udf_modifying_row_count=True,
            **resources,
        )
    finally:
        context.execution_options.preserve_order = kept


def _actor_kwargs(checked: Checked, plan: Any, mode: str, components: Any) -> dict[str, Any]:
    config = checked.config
    device = config.device or ("cuda" if config.gpus_per_worker > 0 else "cpu")
    return {
        "options": config.options,
        "model": config.model,
        "device": device,
        "dtype": config.dtype,
        "threads": plan[2],
        "mode": mode,
        "components": components,
    }


def _describe(ray: Any, checked: Checked, plan: Any, components: Any) -> dict[str, Any]:
    kwargs = _actor_kwargs(checked, plan, "tables", components)
    task = ray.remote(describe_task).options(**plan[1], max_retries=1)
    try:
        return dict(
            ray.get(
                task.remote(
                    kwargs["options"],
                    kwargs["model"],
                    kwargs["device"],
                    kwargs["dtype"],
                    components,
                )
            )
        )
    except ray.exceptions.RayTaskError as exc:
        cause = exc.cause if getattr(exc, "cause", None) is not None else exc
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise CorpusInputError(f"a Ray worker could not load the model: {first}") from exc


def _fit(ray: Any, checked: Checked, plan: Any, progress: bool) -> np.ndarray:
    """Stream activation matrices from the actors, in input order, into partial_fit."""
    config = checked.config
    limit = config.nmf_sample
    starts = batch_starts(checked.source.n_rows, config.batch_size, limit=limit)
    kwargs = _actor_kwargs(checked, plan, "fit", None)
    dataset = _dataset(ray, checked, kwargs, plan, starts, limit)
    n_rows = checked.source.n_rows
    bar = tqdm(
        total=n_rows if limit is None else min(n_rows, limit),
        unit="prompt",
        desc="fitting neuron factors",
        disable=not progress,
        file=sys.stderr,
    )

    def in_order() -> Iterator[np.ndarray]:
        waiting: dict[int, np.ndarray] = {}  # batches that came before their predecessors
        nxt = 0
        blocks = dataset.iter_batches(batch_size=None, batch_format="pyarrow")
        for start, end, tables in whole_batches(blocks, {"activations"}):
            waiting[start] = matrix_of(tables["activations"])
            bar.update(end - start)
            while nxt < len(starts) and starts[nxt] in waiting:
                yield waiting.pop(starts[nxt])
                nxt += 1

    try:
        components, _ = factor_fit.fit_stream(in_order(), config.nmf)
    finally:
        bar.close()
    return components


def run(checked: Checked, *, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) a checked corpus run on Ray Data; return the final manifest."""
    config = checked.config
    began = time.perf_counter()
    with ray_session(config.address, quiet=True) as ray:
        plan = plan_workers(
            ray.cluster_resources(),
            config.workers,
            config.gpus_per_worker,
            largest_node(ray.nodes()),
        )
        neurons = "neurons" in config.options.analyses
        components = factor_fit.read_components(config.out) if neurons else None
        try:
            # The model and --watch are checked on a worker before any long pass.
            facts = _describe(ray, checked, plan, None)
            started, elapsed_before = runner.begin(checked, facts)
            if neurons and components is None:
                components = _fit(ray, checked, plan, progress)
                promoted = _describe(ray, checked, plan, components)  # the factors' tokens
                runner.save_factors(checked, components, {**facts, **promoted})
            _tables(ray, checked, plan, components, progress)
        except ray.exceptions.RayError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RuntimeError(f"the Ray run failed: {first}") from exc
    return runner.finish(checked, facts, started, elapsed_before + time.perf_counter() - began)


def _tables(ray: Any, checked: Checked, plan: Any, components: Any, progress: bool) -> None:
    """The tables pass: every batch not done yet, written on the driver as it comes back."""
    config = checked.config
    n_rows = checked.source.n_rows
    starts = batch_starts(n_rows, config.batch_size, store.done_shards(config.out))
    already = n_rows - sum(min(s + config.batch_size, n_rows) - s for s in starts)
    bar = tqdm(
        total=checked.source.n_rows,
        initial=already,
        unit="prompt",
        desc="ecco-core corpus (ray)",
        disable=not progress,
        file=sys.stderr,
        smoothing=0.1,
    )
    folders = runner.folders(config)
    try:
        if starts:
            kwargs = _actor_kwargs(checked, plan, "tables", components)
            dataset = _dataset(ray, checked, kwargs, plan, starts)
            blocks = dataset.iter_batches(
                batch_size=None, batch_format="pyarrow", prefetch_batches=2
            )
            for start, end, tables in whole_batches(blocks, set(config.options.tables())):
                store.save_shard(config.out, store.shard_stem(start, end), tables, folders)
                bar.update(end - start)
    finally:
        bar.close()
