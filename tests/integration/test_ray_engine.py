"""``--engine ray`` with a real Ray: same tables as the local engine (Ray Data reading every
input format), --resume redoing only unfinished batches, a separate head joined with
--address, a worker killed mid-run, an unreachable address, and --resume after the driver is
killed. Skipped when ray is not installed (``pip install 'ecco-core[ray]'``).

Every Ray process started here is stopped by its own pid (never ``ray stop``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from ecco_adapters.corpus import BatchOptions, RunConfig, run_corpus, store

from .corpus_command import corpus_command

pytest.importorskip("ray")

pytestmark = [pytest.mark.ray, pytest.mark.slow]

PROMPTS = [f"The tower number {i} is in the city of" for i in range(7)] + [
    "Heathrow airport is located in",
    "She said that he would come back",
]
TABLES = ("generations", "rankings", "attributions", "errors")


def _table(out: Path, name: str) -> pd.DataFrame:
    frame = ds.dataset(out / name, format="parquet").to_table().to_pandas()
    keys = [c for c in ("prompt_id", "factor", "step", "layer", "neuron", "rank") if c in frame]
    keys += [c for c in ("source_index", "method", "k", "position") if c in frame]
    return frame.sort_values(keys).reset_index(drop=True)


def _assert_same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.columns) == list(b.columns)
    assert len(a) == len(b)
    for column in a.columns:
        x, y = a[column], b[column]
        if x.dtype.kind == "f":
            np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5, err_msg=column)
        elif len(x) and isinstance(x.iloc[0], np.ndarray) and x.iloc[0].dtype.kind == "f":
            np.testing.assert_allclose(np.stack(x), np.stack(y), rtol=1e-4, atol=1e-5)
        elif len(x) and isinstance(x.iloc[0], np.ndarray):
            assert [v.tolist() for v in x] == [v.tolist() for v in y], column
        else:
            assert x.tolist() == y.tolist(), column


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    return {**env, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "RAY_AUTH_MODE": "disabled"}


# --- (a) an in-process local Ray: the same tables as the local engine --------------------------


def test_ray_tables_equal_local_tables_with_errors_and_factors(
    tiny_path: Callable[[str], Path], tmp_path: Path
) -> None:
    rows = [{"id": f"q{i}", "text": t} for i, t in enumerate(PROMPTS)]
    rows.insert(3, {"id": "empty", "text": "  "})
    rows.insert(6, {"id": "long", "text": "word " * 300})  # beyond the tiny model's 128
    rows.insert(8, {"id": "surrogate", "text": "a \ud800 b"})  # not UTF-8: Arrow refuses it
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    base = {
        "data": data,
        "model": str(tiny_path("gpt2")),
        "id_column": "id",
        "batch_size": 3,
        "nmf": 3,
        "nmf_sample": 7,  # the fit pass stops inside the third batch
        "options": BatchOptions(
            analyses=("generate", "rankings", "attribution", "neurons"),
            methods=("grad_x_input",),
            max_new_tokens=2,
            top_examples=4,
        ),
    }
    local = run_corpus(RunConfig(**base, out=tmp_path / "local"))
    remote = run_corpus(RunConfig(**base, out=tmp_path / "ray", engine="ray", workers=2))
    import ray

    assert not ray.is_initialized()  # the local instance it started is shut down
    assert not list(Path("/tmp").glob(f"ecco_ray_*/session_*/logs/*{os.getpid()}*"))
    for name in (*TABLES, "factor_loadings", "factor_tokens"):
        _assert_same(_table(remote, name), _table(local, name))
    # "The tower number 0/1/..." share their first tokens, so examples there tie across
    # prompts; float noise (1 thread per actor, 2 here) may pick another of the tied prompts.
    same = ["factor", "rank", "position", "token", "activation"]
    examples = [
        _table(out, "factor_examples").sort_values(["factor", "rank"]) for out in (remote, local)
    ]
    _assert_same(*(e[same].reset_index(drop=True) for e in examples))
    errors = _table(remote, "errors").set_index("prompt_id")
    assert errors.loc["empty", "stage"] == "input" and errors.loc["long", "stage"] == "tokenize"
    assert errors.loc["surrogate", "stage"] == "tokenize"
    parts = sorted(p.name for p in (remote / "generations").iterdir())
    assert parts == sorted(p.name for p in (local / "generations").iterdir())
    manifest = pd.read_json(remote / "manifest.json", typ="series")
    assert manifest["engine"] == "ray" and manifest["status"] == "complete"


# --- Ray Data reads every input format: the same rows, ids, batches and errors -----------------


def _format_files(folder: Path) -> dict[str, tuple[Path, str | None]]:
    """One prompt file per format (each of 7 to 9 rows), with the cases a reader can get
    wrong: blank lines, CRLF, separators inside a line, bad JSON lines, blank and missing ids,
    null texts, several Parquet row groups."""
    txt = folder / "prompts.txt"
    txt.write_bytes(
        "\r\n".join(
            [
                "The tower number 0 is in the city of",
                "Heathrow airport is located in",
                "",  # an empty prompt: an errors row
                "She said that he\fwould come back",  # a form feed is no line end
                "The capital of Italy\u2028is",  # nor is U+2028 (Ray's read_text splits both)
                "   ",
                "Water boils at a temperature of",
                "My favourite colour is",  # no final line end
            ]
        ).encode("utf-8")
    )
    jsonl = folder / "prompts.jsonl"
    lines = [
        json.dumps({"id": "a", "text": PROMPTS[0]}),
        "",
        json.dumps({"id": "b", "text": "Heathrow\u2028airport is in"}, ensure_ascii=False),
        "this line is not JSON",
        "   ",
        "[1, 2]",
        json.dumps({"id": "c", "text": 42}),
        json.dumps({"text": "no id here"}),
        json.dumps({"id": "d", "text": None}),
        json.dumps({"id": 7, "text": PROMPTS[1]}),
        json.dumps({"id": "e", "text": "a \ud800 b"}),  # a lone surrogate
    ]
    jsonl.write_text("\n".join(lines) + "\n", encoding="utf-8")
    csv = folder / "prompts.csv"
    pd.DataFrame(
        {
            "other": ["x"] * 7,
            "id": ["a", "", "007", "b", "c", "d", "e"],
            "text": ["The tower, number 0, is in", PROMPTS[7], "42", "", *PROMPTS[1:4]],
        }
    ).to_csv(csv, index=False)
    parquet = folder / "prompts.parquet"
    table = pa.table(
        {
            "id": ["p0", "p1", None, "p3", "p4", "p5", "p6"],
            "text": [PROMPTS[0], None, PROMPTS[7], "", *PROMPTS[1:4]],
        }
    )
    pq.write_table(table, parquet, row_group_size=2)
    return {
        "txt": (txt, None),
        "jsonl": (jsonl, "id"),
        "csv": (csv, "id"),
        "parquet": (parquet, "id"),
    }


def _parts(out: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of every part and marker of a run."""
    return {
        str(path.relative_to(out)): (path.stat().st_ino, path.stat().st_mtime_ns)
        for path in out.glob("*/part-0*")
    }


def test_ray_reads_every_format_as_the_local_engine_and_resumes_only_unfinished_batches(
    tiny_path: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ray Data reads each file (blocks of 2 rows, batches of 3: the batches are cut across
    blocks); every table, part and marker equals the local engine's. Then one batch's marker
    and parts are removed: --resume recomputes that batch only. One Ray instance for all (the
    second local Ray of this process after the test above: ray_session resets Ray's cached
    auth token between them)."""
    from ecco_adapters.corpus import ray_reader
    from ecco_adapters.corpus.ray_engine import ray_session

    monkeypatch.setattr(ray_reader, "ROWS_PER_BLOCK", 2)
    base = {
        "model": str(tiny_path("gpt2")),
        "batch_size": 3,
        "options": BatchOptions(analyses=("generate", "rankings"), max_new_tokens=2),
    }
    names = ("generations", "rankings", "errors")
    with ray_session(None):
        for kind, (data, id_column) in _format_files(tmp_path).items():
            config = {**base, "data": data, "id_column": id_column}
            local = run_corpus(RunConfig(**config, out=tmp_path / kind / "local"))
            remote = run_corpus(
                RunConfig(**config, out=tmp_path / kind / "ray", engine="ray", workers=1)
            )
            for name in names:
                _assert_same(_table(remote, name), _table(local, name))
            assert sorted(_parts(remote)) == sorted(_parts(local)), kind
            assert store.done_shards(remote) == store.done_shards(local), kind
        expected = {
            "txt": 8,  # CRLF, a form feed and U+2028 end no line; blank lines are rows
            "jsonl": 9,  # blank lines skipped; the bad lines are errors rows
            "csv": 7,
            "parquet": 7,
        }
        for kind, n in expected.items():
            manifest = json.loads((tmp_path / kind / "ray" / "manifest.json").read_text())
            assert manifest["n_rows"] == n and manifest["engine"] == "ray", kind
        errors = _table(tmp_path / "jsonl" / "ray", "errors").set_index("prompt_id")
        assert set(errors.index) == {"<row 2>", "<row 3>", "<row 5>", "d", "e"}

        # Resume: remove the middle batch (rows 3..5) of the .jsonl run.
        out = tmp_path / "jsonl" / "ray"
        stem = store.shard_stem(3, 6)
        before = _parts(out)
        removed = [path for path in out.glob(f"*/{stem}.*")]
        assert len(removed) == 1 + len(names)  # the marker and one part per table
        for path in removed:
            path.unlink()
        data, id_column = tmp_path / "prompts.jsonl", "id"
        config = {**base, "data": data, "id_column": id_column, "resume": True}
        run_corpus(RunConfig(**config, out=out, engine="ray", workers=1))
        after = _parts(out)
        assert sorted(after) == sorted(before)
        rewritten = {name for name in after if after[name] != before[name]}
        assert rewritten == {str(path.relative_to(out)) for path in removed}
        for name in names:
            _assert_same(_table(out, name), _table(tmp_path / "jsonl" / "local", name))


# --- a separate head process, joined with --address --------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # its own session, started below
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def head() -> Iterator[tuple[str, subprocess.Popen[Any]]]:
    """``ray start --head --block`` on a free port; stopped by its pid afterwards."""
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="ecco_rt_", dir="/tmp")  # short: Unix socket paths
    ray_bin = str(Path(sys.executable).with_name("ray"))
    env = {**_env(), "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
    command = [ray_bin, "start", "--head", "--port", str(port), "--num-cpus", "2"]
    command += ["--include-dashboard=false", "--temp-dir", temp, "--block"]
    command += ["--disable-usage-stats"]
    log = open(Path(temp, "head.log"), "w")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(
        command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert process.poll() is None, Path(temp, "head.log").read_text()[-2000:]
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            time.sleep(0.2)
        yield f"127.0.0.1:{port}", process
    finally:
        _stop(process)
        log.close()
        import shutil

        shutil.rmtree(temp, ignore_errors=True)


def _command(data: Path, out: Path, model: Path, *extra: str) -> list[str]:
    return corpus_command(data, out, model, "generate,rankings", *extra)


@pytest.fixture(scope="module")
def clean(
    tiny_path: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path, dict[str, pd.DataFrame]]:
    """A prompt file of 218 rows (2 empty) and its tables from the local engine."""
    folder = tmp_path_factory.mktemp("ray-faults")
    texts = [*(f"{p} number {i}" for i in range(24) for p in PROMPTS), "", "   "]
    data = folder / "prompts.txt"
    data.write_text("\n".join(texts) + "\n", encoding="utf-8")
    model = tiny_path("gpt2")
    config = RunConfig(
        data=data,
        out=folder / "clean",
        model=str(model),
        batch_size=2,
        options=BatchOptions(analyses=("generate", "rankings"), max_new_tokens=2),
    )
    out = run_corpus(config)
    return data, model, {n: _table(out, n) for n in ("generations", "rankings", "errors")}


def _session_pids(head_pid: int, name: str) -> list[int]:
    """Pids of the head's own processes (its session) whose title contains ``name``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) != head_pid:
                continue
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ProcessLookupError):
            continue
        if name in title:
            found.append(int(entry.name))
    return found


def _wait_for_markers(out: Path, process: subprocess.Popen[Any], n: int) -> None:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        markers = out / "_shards"
        if markers.is_dir() and len(list(markers.glob("*.json"))) >= n:
            return
        time.sleep(0.05)
    said = process.stderr.read().decode(errors="replace")[-2000:] if process.stderr else ""
    raise AssertionError(f"no {n} finished batches: exit {process.poll()}: {said}")


def _n_markers(out: Path) -> int:
    return len(list((out / "_shards").glob("*.json"))) if (out / "_shards").is_dir() else 0


def test_joined_head_survives_a_killed_worker_and_resumes_after_a_killed_driver(
    head: tuple[str, subprocess.Popen[Any]], clean: Any, tmp_path: Path
) -> None:
    """One run joined to a separate head: an actor is SIGKILLed mid-run (Ray starts a new one
    and the run goes on), then the driver is SIGKILLed; --resume completes the tables, which
    equal the local engine's, with every batch once. (One flow: each Ray run costs tens of
    seconds of start-up on this machine.)"""
    address, head_process = head
    data, model, expected = clean
    n_batches = (len(data.read_text(encoding="utf-8").splitlines()) + 1) // 2
    out = tmp_path / "out"
    command = _command(data, out, model, "--engine", "ray", "--address", address, "--workers", "2")
    run = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _wait_for_markers(out, run, 1)
    workers = _session_pids(head_process.pid, "MapWorker")
    assert workers, "no Ray Data actor found in the head's session"
    os.kill(workers[0], signal.SIGKILL)
    at_kill = _n_markers(out)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and run.poll() is None:
        replaced = set(_session_pids(head_process.pid, "MapWorker")) - set(workers)
        if replaced:
            break
        time.sleep(0.1)
    assert replaced, "Ray did not replace the killed actor"
    # Batches come back in input order, so later batches wait for the killed actor's batch
    # to be redone: give the run time to write one more before the driver is killed.
    while time.monotonic() < deadline and run.poll() is None and _n_markers(out) <= at_kill:
        time.sleep(0.05)
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert at_kill < _n_markers(out) < n_batches, "the run did not go on, or ended too soon"

    resumed = subprocess.run(
        [*command, "--resume"], env=_env(), capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "tables: " in resumed.stdout
    for name, table in expected.items():
        _assert_same(_table(out, name), table)
    assert not _table(out, "generations").duplicated(["prompt_id", "step"]).any()
    assert _n_markers(out) == n_batches


def test_unreachable_address_is_a_one_line_error_within_30_s(clean: Any, tmp_path: Path) -> None:
    """Closed ports, and a port that accepts connections but never answers (Ray's own timeouts
    alone took 21 to 58 s there, with several lines of warnings)."""
    data, model, _ = clean
    silent = socket.create_server(("127.0.0.1", 0))
    silent_port = silent.getsockname()[1]
    addresses = [f"127.0.0.1:{_free_port()}", f"ray://127.0.0.1:{_free_port()}"]
    addresses += [f"127.0.0.1:{silent_port}", f"ray://127.0.0.1:{silent_port}"]
    with silent:
        _assert_refused_quickly(data, model, tmp_path, addresses)


def _assert_refused_quickly(data: Path, model: Path, tmp_path: Path, addresses: list[str]) -> None:
    for address in addresses:
        start = time.monotonic()
        done = subprocess.run(
            _command(data, tmp_path / "out", model, "--engine", "ray", "--address", address),
            env=_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert time.monotonic() - start < 30
        assert done.returncode == 2
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and address in lines[0], done.stderr
