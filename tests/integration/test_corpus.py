"""Corpus runs: readers, the local engine end to end, errors rows, resume after a real kill,
and the command line's input checks (exit 2, one line, before torch or a model is loaded)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

import ecco_core as ec
from ecco_adapters import names
from ecco_adapters.corpus import BatchOptions, CorpusInputError, RunConfig, run_corpus, store
from ecco_adapters.corpus import batch as batch_module
from ecco_adapters.corpus import options as corpus_options
from ecco_adapters.corpus.readers import open_prompts, read_batches
from ecco_adapters.corpus.report import quantile, summarize

from .corpus_command import corpus_command

PROMPTS = [f"The tower number {i} is in the city of" for i in range(9)] + [
    "Heathrow airport is located in",
    "She said that he would come back",
]


def _write_jsonl(path: Path, rows: list[dict[str, Any]], extra_lines: tuple[str, ...] = ()) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
        for line in extra_lines:
            handle.write(line + "\n")
    return path


def _table(out: Path, name: str) -> pd.DataFrame:
    return ds.dataset(out / name, format="parquet").to_table().to_pandas()


# --- readers ---------------------------------------------------------------------------------


def test_every_format_reads_the_same_rows(tmp_path: Path) -> None:
    texts = ["first, with a comma", 'second "quoted"\nover two lines', "", "fourth"]
    ids = ["a", "b", "c", "d"]
    pd.DataFrame({"id": ids, "text": texts}).to_csv(tmp_path / "p.csv", index=False)
    pq.write_table(pa.table({"id": ids, "text": texts}), tmp_path / "p.parquet")
    _write_jsonl(
        tmp_path / "p.jsonl", [{"id": i, "text": t} for i, t in zip(ids, texts, strict=True)]
    )
    for suffix in (".csv", ".parquet", ".jsonl"):
        source = open_prompts(tmp_path / f"p{suffix}", "text", "id")
        assert source.n_rows == 4
        batches = list(read_batches(source, 3))
        assert [b.start for b in batches] == [0, 3]
        assert [i for b in batches for i in b.ids] == ids, suffix
        assert [t for b in batches for t in b.texts] == texts, suffix
    (tmp_path / "p.txt").write_text("one\n\nthree\n", encoding="utf-8")
    source = open_prompts(tmp_path / "p.txt")
    (only,) = read_batches(source, 10)
    assert (only.ids, only.texts) == ([0, 1, 2], ["one", "", "three"])


def test_lines_end_at_line_feeds_and_carriage_returns_only(tmp_path: Path) -> None:
    """Universal newlines, as Python reads text: a form feed, U+0085 or U+2028 inside a
    prompt does not cut it (``str.splitlines``, and so Ray's ``read_text``, would)."""
    data = tmp_path / "p.txt"
    data.write_bytes("one\r\ntwo\fform\rthree\u2028sep\x85nel\n\nlast".encode())
    source = open_prompts(data)
    (only,) = read_batches(source, 10)
    assert only.texts == ["one", "two\fform", "three\u2028sep\x85nel", "", "last"]
    assert source.n_rows == 5
    rows = ['{"text": "a\u2028b"}', "", "  ", "not json", '{"text": "c"}']
    (tmp_path / "p.jsonl").write_text("\r\n".join(rows), encoding="utf-8")
    (only,) = read_batches(open_prompts(tmp_path / "p.jsonl"), 10)
    assert only.texts == ["a\u2028b", None, "c"]
    assert only.problems[1].startswith("line is not JSON")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("p.docx", "x", "unknown extension '.docx'"),
        ("p.jsonl", '{"prompt": "x"}\n', "no column 'text' (--column); its columns: prompt"),
        ("p.csv", "prompt\nx\n", "no column 'text'"),
        ("p.txt", "", "no prompts (empty data set)"),
        ("p.jsonl", "\n\n", "no prompts (empty data set)"),
        ("p.jsonl", "[1, 2]\n", "first line is not a JSON object"),
    ],
)
def test_bad_files_are_refused(tmp_path: Path, name: str, content: str, message: str) -> None:
    (tmp_path / name).write_text(content, encoding="utf-8")
    with pytest.raises(CorpusInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        open_prompts(tmp_path / name)


def test_blank_or_missing_ids_are_errors_rows_in_every_format(tmp_path: Path) -> None:
    rows: list[dict[str, Any]] = [
        {"id": "a", "text": "one"},
        {"id": "", "text": "two"},
        {"id": None, "text": "3"},
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "p.csv", index=False)
    pd.DataFrame(rows).to_parquet(tmp_path / "p.parquet")
    _write_jsonl(tmp_path / "p.jsonl", rows)
    for name in ("p.csv", "p.parquet", "p.jsonl"):
        (batch,) = read_batches(open_prompts(tmp_path / name, id_column="id"), 8)
        assert batch.ids == ["a", "<row 1>", "<row 2>"], name
        assert batch.texts == ["one", None, None], name
        assert batch.problems[1:] == ["no value in id column 'id'"] * 2, name


def test_resume_cleanup_removes_unmarked_parts_and_every_temporary_file(tmp_path: Path) -> None:
    finished, unfinished = store.shard_stem(0, 2), store.shard_stem(2, 4)
    store.save_shard(tmp_path, finished, {"rankings": pa.table({"x": [1]})}, {})
    leftovers = [
        tmp_path / "rankings" / f"{unfinished}.parquet",  # a part whose batch has no marker
        tmp_path / "rankings" / f".{unfinished}.parquet.tmp-7",
        tmp_path / store.DONE / f".{unfinished}.json.tmp-7",
        tmp_path / ".manifest.json.tmp-7",
        tmp_path / ".report.html.tmp-7",
    ]
    for path in leftovers:
        path.write_bytes(b"half")
    assert store.remove_unfinished(tmp_path, ["rankings"]) == len(leftovers)
    assert not any(path.exists() for path in leftovers)
    assert (tmp_path / "rankings" / f"{finished}.parquet").is_file()
    assert store.done_shards(tmp_path) == {finished: {"rankings": 1}}


def test_method_and_dtype_names_agree_with_the_core() -> None:
    from ecco_core import attribution
    from ecco_core.dtypes import DTYPE_SPELLINGS

    assert list(names.METHODS) == ec.list_methods()
    assert names.METHOD_ALIASES == attribution.ALIASES
    for name in [*ec.list_methods(), *attribution.ALIASES]:
        assert corpus_options.resolve_method(name) == attribution.resolve_method(name)
    core_spellings = tuple(DTYPE_SPELLINGS)
    assert core_spellings == names.DTYPE_NAMES
    with pytest.raises(CorpusInputError, match="use one of 'bf16', 'bfloat16'"):
        names.check_dtype("int8", "--dtype", CorpusInputError)


# --- the local engine end to end --------------------------------------------------------------


@pytest.fixture(scope="module")
def gpt2_run(tiny_path: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("corpus")
    rows: list[dict[str, str | None]] = [{"id": f"q{i}", "text": t} for i, t in enumerate(PROMPTS)]
    rows.insert(2, {"id": "empty", "text": "   "})
    rows.insert(5, {"id": "long", "text": "word " * 300})  # the tiny model's context is 128
    rows.insert(7, {"id": "surrogate", "text": "a \ud800 b"})  # the tokenizer rejects it
    rows.insert(8, {"id": "null", "text": None})
    data = _write_jsonl(folder / "prompts.jsonl", rows, ("not json", '{"text": "no id"}'))
    config = RunConfig(
        data=data,
        out=folder / "out",
        model=str(tiny_path("gpt2")),
        id_column="id",
        batch_size=4,
        options=BatchOptions(
            analyses=("generate", "rankings", "layer_predictions", "attribution", "neurons"),
            methods=("grad_x_input",),
            max_new_tokens=3,
            top_k=3,
            top_examples=4,
        ),
        nmf=3,
        nmf_sample=5,
    )
    out = run_corpus(config)
    return config, rows, out


def test_tables_hold_every_prompt_once_with_values_of_single_calls(
    gpt2_run: Any, tiny_lm: Callable[[str], ec.LM]
) -> None:
    _, rows, out = gpt2_run
    lm = tiny_lm("gpt2")
    gens = _table(out, "generations")
    ranks = _table(out, "rankings")
    attributions = _table(out, "attributions")
    good = [r for r in rows if r["id"].startswith("q")]
    assert sorted(set(gens["prompt_id"])) == sorted(r["id"] for r in good)
    assert not gens.duplicated(["prompt_id", "step"]).any()
    assert not ranks.duplicated(["prompt_id", "step", "layer"]).any()
    for row in good:
        single = ec.generate(lm, row["text"], max_new_tokens=3)
        assert isinstance(single, ec.Generation)
        mine = gens[gens["prompt_id"] == row["id"]].sort_values("step")
        np.testing.assert_array_equal(mine["token_id"], single.generated_ids)
        np.testing.assert_allclose(np.stack(mine["top_probs"]), single.top_probs, atol=1e-5)
        assert set(mine["prompt"]) == {row["text"]}
        expected = ec.rankings(lm, single)
        r = ranks[ranks["prompt_id"] == row["id"]]
        got = np.zeros(expected.ranks.shape, dtype=np.int64)
        got[r["layer"], r["step"]] = r["rank"]
        np.testing.assert_array_equal(got, expected.ranks)
        depth = [None if pd.isna(d) else int(d) for d in mine["depth"]]
        assert depth == ec.tables.prediction_depth(expected.ranks)
        a = attributions[attributions["prompt_id"] == row["id"]]
        scores = ec.attribute(lm, single, "grad_x_input", progress=False).scores
        got_scores = np.zeros(scores.shape, dtype=np.float32)
        got_scores[a["step"], a["source_index"]] = a["score"]
        np.testing.assert_allclose(got_scores, scores, atol=1e-5)
    preds = _table(out, "layer_predictions")
    assert set(preds["k"]) == {1, 2, 3}
    assert len(preds) == len(gens) * lm.spec.n_layers * 3


def test_failing_prompts_become_errors_rows_and_the_run_goes_on(gpt2_run: Any) -> None:
    _, _, out = gpt2_run
    errors = _table(out, "errors").set_index("prompt_id")
    assert set(errors.index) == {"empty", "long", "surrogate", "null", "<row 15>", "<row 16>"}
    assert errors.loc["empty", "stage"] == "input"
    assert errors.loc["long", "stage"] == "tokenize"
    assert "exceeds the model's context of 128" in errors.loc["long", "message"]
    assert errors.loc["surrogate", "stage"] == "tokenize"
    assert "tokenizer failed" in errors.loc["surrogate", "message"]
    assert errors.loc["<row 15>", "stage"] == "read"  # "not json"
    assert "not JSON" in errors.loc["<row 15>", "message"]
    assert "no value in id column" in errors.loc["<row 16>", "message"]
    assert len(errors.loc["long", "text"]) == batch_module.TEXT_IN_ERRORS


def test_manifest_layout_and_neuron_tables(gpt2_run: Any, tiny_lm: Callable[[str], ec.LM]) -> None:
    config, rows, out = gpt2_run
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["n_rows"] == len(rows) + 2
    assert manifest["run"]["batch_size"] == 4 and manifest["model"] == config.model
    for name, n in manifest["rows"].items():
        assert ds.dataset(out / name, format="parquet").count_rows() == n, name
    assert not list(out.rglob(".*tmp-*"))
    parts = sorted(p.name for p in (out / "generations").iterdir())
    assert parts == [f"part-{s:010d}-{min(s + 4, 17):010d}.parquet" for s in range(0, 17, 4)]
    loads = _table(out, "factor_loadings")
    lm = tiny_lm("gpt2")
    gen = ec.generate(lm, PROMPTS[0], max_new_tokens=1)
    acts = ec.activations(lm, gen)
    assert isinstance(acts, ec.Activations)
    n_layers, n_neurons, _ = acts.values.shape
    assert len(loads) == 3 * n_layers * n_neurons
    assert sorted(set(loads["factor"])) == [0, 1, 2] and (loads["loading"] >= 0).all()
    assert sorted(set(loads["layer"])) == acts.layers.tolist()
    examples = _table(out, "factor_examples")
    assert examples.groupby("factor")["rank"].apply(list).map(len).max() <= 4
    for _, group in examples.groupby("factor"):
        ordered = group.sort_values("rank")
        assert list(ordered["rank"]) == list(range(1, len(group) + 1))
        assert (np.diff(ordered["activation"].to_numpy()) <= 0).all()
    gens = _table(out, "generations")
    assert set(examples["prompt_id"]) <= set(gens["prompt_id"])
    # the merged examples are the 4 strongest of each factor among every batch's candidates
    candidates = _table(out, "_factor_candidates")
    for f, group in examples.groupby("factor"):
        strongest = candidates[candidates["factor"] == f]["activation"].nlargest(4)
        np.testing.assert_array_equal(group.sort_values("rank")["activation"], strongest)


def test_factor_activations_are_the_nmf_code_of_the_activations(
    gpt2_run: Any, tiny_lm: Callable[[str], ec.LM]
) -> None:
    from sklearn.decomposition import NMF

    _, rows, out = gpt2_run
    lm = tiny_lm("gpt2")
    loads = _table(out, "factor_loadings").sort_values(["factor", "layer", "neuron"])
    h = loads["loading"].to_numpy(np.float32).reshape(3, -1)
    example = _table(out, "factor_examples").iloc[0]
    text = next(r["text"] for r in rows if r["id"] == example["prompt_id"])
    gen = ec.generate(lm, text, max_new_tokens=3)
    acts = ec.activations(lm, gen)
    assert isinstance(acts, ec.Activations)
    n_layers, n_neurons, n_positions = acts.values.shape
    x = np.maximum(acts.values.reshape(n_layers * n_neurons, n_positions).T, 0)
    model = NMF(3, init="random", max_iter=500)
    model.components_, model.n_components_ = h, 3
    w = model.transform(x)
    assert w[example["position"], example["factor"]] == pytest.approx(
        example["activation"], rel=1e-3, abs=1e-5
    )


def test_summary_figures_match_pandas(gpt2_run: Any) -> None:
    _, _, out = gpt2_run
    summary = summarize(out)
    gens = _table(out, "generations")
    first = gens[gens["step"] == 0]
    counts = first["depth"].value_counts(dropna=False)
    assert {None if pd.isna(k) else int(k): int(v) for k, v in counts.items()} == summary.depth
    ranks = _table(out, "rankings")
    ranks = ranks[ranks["step"] == 0]
    for layer, q25, median, q75 in summary.rank_quartiles:
        values = ranks[ranks["layer"] == layer]["rank"].to_numpy()
        expected = np.percentile(values, [25, 50, 75], method="inverted_cdf")
        assert [q25, median, q75] == [int(v) for v in expected]
    attributions = _table(out, "attributions")
    inputs = attributions[attributions["is_input"]]
    means = inputs.groupby("source_token")["score"].agg(["mean", "count"])
    means = means[means["count"] >= 3].sort_values("mean", ascending=False)
    (top,) = summary.attributions.values()
    assert [t for t, _, _ in top] == list(means.index[: len(top)])
    np.testing.assert_allclose([m for _, m, _ in top], means["mean"][: len(top)], rtol=1e-6)
    least = first.sort_values("prob").head(len(summary.least_sure))
    assert [p for _, p, *_ in summary.least_sure] == list(least["prompt_id"])


def test_quantile_is_the_inverted_cdf() -> None:
    rng = np.random.default_rng(1)
    for _ in range(30):
        values = rng.integers(1, 9, size=int(rng.integers(1, 40)))
        counts = {int(v): int((values == v).sum()) for v in set(values.tolist())}
        for q in (0.25, 0.5, 0.75):
            assert quantile(counts, q) == int(np.percentile(values, q * 100, method="inverted_cdf"))


# --- resume, refusal, kill --------------------------------------------------------------------


def _command(data: Path, out: Path, model: Path, *extra: str) -> list[str]:
    analyses = "generate,rankings,attribution"
    return corpus_command(data, out, model, analyses, "--method", "grad_x_input", *extra)


def _rows_by_table(out: Path) -> dict[str, pd.DataFrame]:
    names = ("generations", "rankings", "attributions", "errors")
    return {
        n: _table(out, n).sort_values(list(_table(out, n).columns[:3])).reset_index(drop=True)
        for n in names
    }


@pytest.fixture(scope="module")
def kill_setup(
    tiny_path: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path, dict[str, pd.DataFrame]]:
    folder = tmp_path_factory.mktemp("resume")
    texts = [f"{p} number {i}" for i in range(3) for p in PROMPTS] + ["", "   "]
    data = folder / "prompts.txt"
    data.write_text("\n".join(texts) + "\n", encoding="utf-8")
    model = tiny_path("gpt2")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(
        _command(data, folder / "clean", model), capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    return data, model, _rows_by_table(folder / "clean")


@pytest.mark.slow
@pytest.mark.parametrize("finished_batches", [0, 3, 9])
def test_resume_after_a_real_kill_gives_the_same_tables(
    kill_setup: Any, tmp_path: Path, finished_batches: int
) -> None:
    data, model, clean = kill_setup
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    process = subprocess.Popen(
        _command(data, out, model), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    markers = out / "_shards"
    while time.monotonic() < deadline and process.poll() is None:
        n_done = len(list(markers.glob("*.json"))) if markers.is_dir() else 0
        if (finished_batches == 0 and (out / "manifest.json").exists()) or (
            finished_batches and n_done >= finished_batches
        ):
            break
        time.sleep(0.01)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (out / "manifest.json").exists()
    done_before = {p.name for p in markers.glob("*.json")} if markers.is_dir() else set()
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "generations").glob("part-*")}

    refused = subprocess.run(_command(data, out, model), capture_output=True, text=True, env=env)
    assert refused.returncode == 2 and "add --resume" in refused.stderr

    resumed = subprocess.run(
        [*_command(data, out, model), "--resume"], capture_output=True, text=True, env=env
    )
    assert resumed.returncode == 0, resumed.stderr
    again = _rows_by_table(out)
    for name, table in clean.items():
        pd.testing.assert_frame_equal(again[name], table, check_exact=False, atol=1e-6)
    # finished batches were not redone: their parts are untouched
    for name in done_before:
        part = name.replace(".json", ".parquet")
        if part in stamps:
            assert (out / "generations" / part).stat().st_mtime_ns == stamps[part]
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"


def test_resume_removes_parts_of_unfinished_batches(
    tiny_path: Callable[[str], Path], tmp_path: Path
) -> None:
    data = tmp_path / "p.txt"
    data.write_text("\n".join(PROMPTS[:6]) + "\n", encoding="utf-8")
    config = RunConfig(
        data=data,
        out=tmp_path / "out",
        model=str(tiny_path("gpt2")),
        batch_size=2,
        options=BatchOptions(max_new_tokens=2),
    )
    out = run_corpus(config)
    clean = _rows_by_table_subset(out)
    # a kill after a batch's parts but before its marker, and in the middle of a write
    (out / "_shards" / "part-0000000002-0000000004.json").unlink()
    extra = pq.read_table(out / "generations" / "part-0000000000-0000000002.parquet")
    pq.write_table(extra, out / "rankings" / "part-0000000002-0000000004.parquet")
    (out / "generations" / ".part-0000000004-0000000006.parquet.tmp-999").write_bytes(b"PAR1")
    with pytest.raises(CorpusInputError, match="not empty"):
        run_corpus(config)
    run_corpus(RunConfig(**{**_fields(config), "resume": True}))
    assert _rows_by_table_subset(out) == clean
    assert not list(out.rglob(".*tmp-*"))


def _fields(config: RunConfig) -> dict[str, Any]:
    import attrs

    return attrs.asdict(config, recurse=False)


def _rows_by_table_subset(out: Path) -> dict[str, list[Any]]:
    return {
        n: sorted(map(str, _table(out, n).to_dict("records"))) for n in ("generations", "rankings")
    }


def test_resume_with_other_options_is_refused(
    tiny_path: Callable[[str], Path], tmp_path: Path
) -> None:
    data = tmp_path / "p.txt"
    data.write_text("\n".join(PROMPTS[:2]) + "\n", encoding="utf-8")
    base = {"data": data, "out": tmp_path / "out", "model": str(tiny_path("gpt2"))}
    run_corpus(RunConfig(**base, batch_size=2, options=BatchOptions(max_new_tokens=2)))
    with pytest.raises(CorpusInputError, match="batch_size was 2, now 1"):
        run_corpus(
            RunConfig(**base, batch_size=1, options=BatchOptions(max_new_tokens=2), resume=True)
        )
    data.write_text("\n".join(PROMPTS[:3]) + "\n", encoding="utf-8")
    with pytest.raises(CorpusInputError, match="the data had 2 rows, now 3"):
        run_corpus(
            RunConfig(**base, batch_size=2, options=BatchOptions(max_new_tokens=2), resume=True)
        )


# --- command line input checks ----------------------------------------------------------------


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(batch_module, "load_model", refuse)
    monkeypatch.setattr(ec, "load", refuse)


def _bad_inputs(tmp_path: Path) -> list[tuple[list[str], str]]:
    good = tmp_path / "good.jsonl"
    _write_jsonl(good, [{"text": "The Eiffel Tower is in"}])
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    (tmp_path / "p.xlsx").write_text("x", encoding="utf-8")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "something").write_text("x", encoding="utf-8")
    (tmp_path / "a-file").write_text("x", encoding="utf-8")
    (tmp_path / "lines.txt").write_text("The Eiffel Tower is in\n", encoding="utf-8")
    out = str(tmp_path / "new")
    return [
        (["--data", str(tmp_path / "missing.txt"), "--out", out], "does not exist"),
        (["--data", str(tmp_path / "p.xlsx"), "--out", out], "unknown extension"),
        (["--data", str(good), "--out", out, "--column", "prompt"], "no column 'prompt'"),
        (["--data", str(good), "--out", out, "--id-column", "key"], "no column 'key'"),
        (
            ["--data", str(tmp_path / "lines.txt"), "--out", out, "--id-column", "id"],
            "--id-column does not apply to lines.txt",
        ),
        (["--data", str(tmp_path / "empty.txt"), "--out", out], "empty data set"),
        (["--data", str(good), "--out", str(tmp_path / "full")], "is not empty"),
        (["--data", str(good), "--out", str(tmp_path / "a-file")], "is a file"),
        (["--data", str(good), "--out", str(tmp_path / "a-file" / "x")], "cannot be written"),
        (["--data", str(good), "--out", out, "--analyses", "rankings,magic"], "unknown analysis"),
        (
            ["--data", str(good), "--out", out, "--analyses", "attribution", "--method", "lrp2"],
            "unknown attribution method 'lrp2'",
        ),
        (
            ["--data", str(good), "--out", out, "--engine", "ray", "--address", "nohost"],
            "--address 'nohost' is not valid",
        ),
        (["--data", str(good), "--out", out, "--workers", "2"], "only to --engine ray"),
        (["--data", str(good), "--out", out, "--batch-size", "0"], "--batch-size must be"),
        (["--data", str(good), "--out", out, "--dtype", "int8"], "not a floating-point type"),
        (["--data", str(good), "--out", out, "--analyses", "watch"], "needs tokens"),
        (["--data", str(good)], "required: --out"),
    ]


def test_bad_input_exits_2_with_one_line_before_any_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_model: None
) -> None:
    from ecco_adapters.cli import main as cli_main
    from ecco_adapters.entry import main

    for args, message in _bad_inputs(tmp_path):
        for entry in (main, cli_main):
            assert entry(["corpus", *args]) == 2, args
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and err.startswith("ecco-core: error: "), err
            assert message in err, (args, err)
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == ["something"]


def test_bad_input_is_reported_without_importing_torch(tmp_path: Path) -> None:
    cases = _bad_inputs(tmp_path)
    code = (
        "import sys, json\n"
        "from ecco_adapters.entry import main\n"
        f"codes = [main(['corpus', *a]) for a in {[a for a, _ in cases]!r}]\n"
        "print(json.dumps([codes, 'torch' in sys.modules, 'ecco_core' in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    codes, torch_loaded, core_loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert codes == [2] * len(cases)
    assert not torch_loaded and not core_loaded
    assert len(done.stderr.strip().splitlines()) == len(cases)


def _single_tokens(lm: ec.LM, n: int) -> list[str]:
    found = []
    for token_id in range(10, lm.spec.vocab_size):
        text = lm.tokenizer.decode([token_id])
        if text.strip() and lm.tokenizer(text, add_special_tokens=False)["input_ids"] == [token_id]:
            found.append(text)
        if len(found) == n:
            return found
    raise AssertionError("no single-token strings")


def test_cli_run_with_ids_and_watch(
    tiny_path: Callable[[str], Path],
    tiny_lm: Callable[[str], ec.LM],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from ecco_adapters.entry import main

    lm = tiny_lm("llama")
    data = tmp_path / "p.csv"
    pd.DataFrame({"text": PROMPTS[:3], "key": [10, 11, 12]}).to_csv(data, index=False)
    watched = _single_tokens(lm, 2)
    args = ["corpus", "--data", str(data), "--quiet", "--model", str(tiny_path("llama"))]
    args += ["--id-column", "key", "--max-new-tokens", "2", "--analyses", "generate,watch"]
    assert main([*args, "--out", str(tmp_path / "bad"), "--watch", "two words here"]) == 2
    assert "--watch: watch token 'two words here' is" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "out"), "--watch", *watched]) == 0
    stdout = capsys.readouterr().out
    assert "tables: errors 0, generations 6, watch 12" in stdout
    assert f"report: {(tmp_path / 'out' / 'report.html').resolve()}" in stdout
    watch = _table(tmp_path / "out", "watch")
    assert sorted(set(watch["prompt_id"])) == ["10", "11", "12"]
    gens = _table(tmp_path / "out", "generations")
    for key, text in zip(("10", "11", "12"), PROMPTS[:3], strict=True):
        gen = ec.generate(lm, text, max_new_tokens=2)
        assert isinstance(gen, ec.Generation)
        expected = ec.rankings_watch(lm, gen, watched, gen.n_input_tokens)
        mine = watch[watch["prompt_id"] == key]
        assert set(mine["position"]) == {gen.n_input_tokens}
        for j, token_id in enumerate(expected.watch_ids):
            ranks = mine[mine["token_id"] == token_id].sort_values("layer")["rank"]
            np.testing.assert_array_equal(ranks, expected.ranks[:, j])
        assert set(gens[gens["prompt_id"] == key]["prompt"]) == {text}


def test_batch_function_takes_numpy_columns_as_a_distributed_engine_passes_them(
    tiny_lm: Callable[[str], ec.LM],
) -> None:
    lm = tiny_lm("llama")
    options = BatchOptions(analyses=("generate", "rankings"), max_new_tokens=2)
    fn = batch_module.BatchFunction(options, lm=lm)
    texts = [PROMPTS[0], "", PROMPTS[1]]
    from_numpy = fn({"prompt_id": np.array([7, 8, 9]), "text": np.array(texts, dtype=object)})
    from_lists = batch_module.process_batch(lm, [7, 8, 9], texts, options)
    assert set(from_numpy) == {"generations", "rankings", "errors"} == set(options.tables())
    for name, table in from_lists.items():
        assert from_numpy[name].equals(table), name
    assert from_numpy["errors"].to_pylist() == [
        {"prompt_id": 8, "stage": "input", "message": "the prompt is empty", "text": ""}
    ]
    assert from_numpy["generations"].schema.field("prompt_id").type == pa.int64()
