"""ec.to_tables: every record kind as a long table; values read back equal the records'."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import ecco_core as ec
from ecco_core.records import Record
from ecco_core.tables import TABLE_NAMES, prediction_depth, schema
from ecco_core.testing import fixed_provenance


def _read_back(tables: dict[str, pa.Table], folder: Path) -> dict[str, pd.DataFrame]:
    """Write every table to Parquet and read it back as a user would (pyarrow, then pandas)."""
    out = {}
    for name, table in tables.items():
        path = folder / f"{name}.parquet"
        pq.write_table(table, path)
        back = pq.read_table(path)
        assert back.equals(table), name
        out[name] = back.to_pandas()
    return out


def _pivot(df: pd.DataFrame, rows: str, cols: str, values: str, shape: tuple[int, int]) -> Any:
    """Rebuild a [rows, cols] array from long rows (every cell must appear exactly once)."""
    out = np.full(shape, np.nan, dtype=np.float64)
    assert len(df) == shape[0] * shape[1]
    out[df[rows].to_numpy(), df[cols].to_numpy()] = df[values].to_numpy()
    assert not np.isnan(out).any()
    return out


@pytest.fixture(scope="module")
def t5_records(tiny_lm: Callable[[str], ec.LM]) -> list[Record]:
    t5 = tiny_lm("t5")
    gen = ec.generate(t5, "translate the tower is tall", max_new_tokens=3, min_new_tokens=3)
    assert isinstance(gen, ec.Generation)
    return [gen, ec.rankings(t5, gen), ec.attention(t5, gen, stack="cross", layers=[-1])]


@pytest.fixture(scope="module")
def attention_records(
    view_records: dict[str, Record], tiny_lm: Callable[[str], ec.LM]
) -> list[Record]:
    """Every layer and head of a generation; a choice of heads stored as float16."""
    gpt2 = tiny_lm("gpt2")
    gen = view_records["Generation"]
    assert isinstance(gen, ec.Generation)
    return [ec.attention(gpt2, gen), ec.attention(gpt2, "the tower", heads=[1, 3], dtype="float16")]


def test_every_kind_round_trips_through_parquet_and_pandas(
    view_records: dict[str, Record],
    t5_records: list[Record],
    attention_records: list[Record],
    tmp_path: Path,
) -> None:
    gen = view_records["Generation"]
    assert isinstance(gen, ec.Generation)
    records = [*view_records.values(), *t5_records, *attention_records, gen.provenance]
    tables = ec.to_tables(records)
    assert set(tables) == set(TABLE_NAMES) - {"errors"}
    frames = _read_back(tables, tmp_path)
    for index, rec in enumerate(records):
        _check_record(rec, index, frames)


def _rows(frames: dict[str, pd.DataFrame], name: str, index: int) -> pd.DataFrame:
    df = frames[name]
    return df[df["prompt_id"] == index].reset_index(drop=True)


def _check_record(rec: Record, index: int, frames: dict[str, pd.DataFrame]) -> None:
    model = getattr(getattr(rec, "provenance", None), "model", None)
    if isinstance(rec, ec.Generation):
        df = _rows(frames, "generations", index).sort_values("step")
        n_in = rec.n_input_tokens
        np.testing.assert_array_equal(df["step"], np.arange(rec.n_generated))
        np.testing.assert_array_equal(df["position"], np.arange(n_in, rec.n_tokens))
        np.testing.assert_array_equal(df["token_id"], rec.token_ids[n_in:])
        assert list(df["token"]) == list(rec.tokens[n_in:])
        assert [list(t) for t in df["top_tokens"]] == [list(t) for t in rec.top_tokens]
        top_probs = np.stack(df["top_probs"].to_numpy())
        assert top_probs.dtype == np.float32
        np.testing.assert_array_equal(top_probs, rec.top_probs)
        np.testing.assert_array_equal(np.stack(df["top_ids"].to_numpy()), rec.top_ids)
        for s, prob in enumerate(df["prob"]):
            # greedy decoding: the generated token is the top prediction
            assert rec.top_ids[s, 0] == rec.token_ids[n_in + s]
            assert prob == rec.top_probs[s, 0]
        assert set(df["prompt"]) == {rec.prompt} and set(df["model"]) == {model}
    elif isinstance(rec, ec.Rankings):
        df = _rows(frames, "rankings", index)
        ranks = _pivot(df, "layer", "step", "rank", rec.ranks.shape)
        np.testing.assert_array_equal(ranks, rec.ranks)
        np.testing.assert_array_equal(df.groupby("step")["position"].first(), rec.positions)
        np.testing.assert_array_equal(df.groupby("step")["token_id"].first(), rec.token_ids)
        assert list(df.groupby("step")["token"].first()) == list(rec.tokens)
        assert list(df.groupby("layer")["layer_label"].first()) == list(rec.layer_labels)
    elif isinstance(rec, ec.RankingsWatch):
        df = _rows(frames, "watch", index)
        j = df["token_id"].map({int(t): i for i, t in enumerate(rec.watch_ids)})
        ranks = _pivot(df.assign(j=j), "layer", "j", "rank", rec.ranks.shape)
        np.testing.assert_array_equal(ranks, rec.ranks)
        assert set(df["position"]) == {rec.position}
    elif isinstance(rec, ec.LayerPredictions):
        df = _rows(frames, "layer_predictions", index)
        shape = rec.token_ids.shape
        df = df.assign(k0=df["k"] - 1)
        np.testing.assert_array_equal(_pivot(df, "layer", "k0", "token_id", shape), rec.token_ids)
        probs = _pivot(df, "layer", "k0", "prob", shape).astype(np.float32)
        np.testing.assert_array_equal(probs, rec.probs)
        assert [list(r) for r in rec.tokens] == [
            list(g.sort_values("k")["token"]) for _, g in df.groupby("layer")
        ]
        assert set(df["target_token"]) == {rec.target_token}
    elif isinstance(rec, ec.Attributions):
        _check_attributions(rec, _rows(frames, "attributions", index))
    elif isinstance(rec, ec.Attention):
        _check_attention(rec, _rows(frames, "attention", index), model)
    elif isinstance(rec, ec.Activations):
        df = _rows(frames, "activations", index)
        layer_row = {int(layer): i for i, layer in enumerate(rec.layers)}
        values = np.full(rec.values.shape, np.nan, dtype=np.float32)
        values[df["layer"].map(layer_row), df["neuron"], df["position"]] = df["value"]
        np.testing.assert_array_equal(values, rec.values)
        assert list(df.groupby("position")["token"].first()) == list(rec.tokens)
    elif isinstance(rec, ec.Factorization):
        _check_factorization(rec, index, frames)
    elif isinstance(rec, ec.MaskedPredictions):
        df = _rows(frames, "masked_predictions", index)
        row_of = {int(p): i for i, p in enumerate(rec.positions)}
        df = df.assign(row=df["position"].map(row_of), k0=df["k"] - 1)
        shape = rec.top_ids.shape
        np.testing.assert_array_equal(_pivot(df, "row", "k0", "token_id", shape), rec.top_ids)
        probs = _pivot(df, "row", "k0", "prob", shape).astype(np.float32)
        np.testing.assert_array_equal(probs, rec.top_probs)
    elif isinstance(rec, ec.Classification):
        df = _rows(frames, "classifications", index)
        assert list(df["label"]) == list(rec.labels)
        np.testing.assert_array_equal(df["prob"].to_numpy(), rec.probs)
        assert list(df["predicted"]) == [i == int(np.argmax(rec.probs)) for i in range(len(df))]
    elif isinstance(rec, ec.Provenance):
        df = _rows(frames, "provenance", index)
        assert df.loc[0, "model"] == rec.model and df.loc[0, "function"] == rec.function
    else:
        raise AssertionError(f"no check for {type(rec).__name__}")


def _check_attributions(rec: ec.Attributions, df: pd.DataFrame) -> None:
    assert df["score"].dtype == np.float32
    scores = _pivot(df, "step", "source_index", "score", rec.scores.shape)
    np.testing.assert_array_equal(scores.astype(np.float32), rec.scores)
    by_step = df.groupby("step")
    np.testing.assert_array_equal(by_step["target_position"].first(), rec.target_positions)
    np.testing.assert_array_equal(by_step["target_value"].first(), rec.target_values)
    if rec.convergence_delta.size:
        np.testing.assert_array_equal(by_step["convergence_delta"].first(), rec.convergence_delta)
    else:
        assert df["convergence_delta"].isna().all()
    assert list(df.groupby("source_index")["source_token"].first()) == list(rec.tokens)
    is_input = df["source_index"] < rec.n_input_tokens
    assert (df["is_input"] == is_input).all()


def _check_factorization(
    rec: ec.Factorization, index: int, frames: dict[str, pd.DataFrame]
) -> None:
    loads = frames["factor_loadings"]
    loads = loads[loads["factorization"] == index]
    neuron_col = {
        (int(layer), int(n)): j
        for j, (layer, n) in enumerate(zip(rec.neuron_layers, rec.neuron_indices, strict=True))
    }
    cols = [neuron_col[(a, b)] for a, b in zip(loads["layer"], loads["neuron"], strict=True)]
    h = np.full(rec.neuron_factors.shape, np.nan, dtype=np.float32)
    h[loads["factor"].to_numpy(), cols] = loads["loading"]
    np.testing.assert_array_equal(h, rec.neuron_factors)
    examples = frames["factor_examples"]
    examples = examples[examples["factorization"] == index]
    # every position of every factor is listed, ranked by activation (1 = strongest)
    assert len(examples) == rec.token_factors.size
    starts = {t: int(np.flatnonzero(rec.text_index == t)[0]) for t in set(rec.text_index)}
    for row in examples.itertuples():
        g = starts[row.prompt_id] + row.position
        assert row.activation == rec.token_factors[row.factor, g]
        assert row.token == rec.tokens[g] and f"[{row.token}]" in row.context
    for f, group in examples.groupby("factor"):
        ordered = group.sort_values("rank")["activation"].to_numpy()
        assert (np.diff(ordered) <= 0).all()
        assert ordered[0] == rec.token_factors[f].max()


def _check_attention(rec: ec.Attention, df: pd.DataFrame, model: str | None) -> None:
    assert df["weight"].dtype == np.float32 and len(df) == rec.weights.size
    layer_row = {int(layer): i for i, layer in enumerate(rec.layers)}
    head_col = {int(head): i for i, head in enumerate(rec.heads)}
    weights = np.full(rec.weights.shape, np.nan, dtype=np.float32)
    query = df["query_index"].to_numpy() - rec.query_start
    key = df["key_index"].to_numpy() - rec.key_start
    weights[df["layer"].map(layer_row), df["head"].map(head_col), query, key] = df["weight"]
    np.testing.assert_array_equal(weights, rec.weights.astype(np.float32))
    assert [rec.tokens[i] for i in df["query_index"]] == list(df["query_token"])
    assert [rec.tokens[i] for i in df["key_index"]] == list(df["key_token"])
    assert list(df.groupby("layer")["layer_label"].first()) == list(rec.layer_labels)
    assert set(df["stack"]) == {rec.stack} and set(df["model"]) == {model}


def _depth_by_loop(ranks: np.ndarray) -> list[int | None]:
    out: list[int | None] = []
    n_layers = ranks.shape[0]
    for s in range(ranks.shape[1]):
        found = None
        for layer in range(n_layers):
            if all(ranks[later, s] == 1 for later in range(layer, n_layers)):
                found = layer
                break
        out.append(found)
    return out


def test_prediction_depth_is_first_layer_of_the_final_run_of_rank_one() -> None:
    ranks = np.array(
        [
            [1, 5, 1, 2],
            [3, 1, 1, 1],
            [1, 1, 2, 1],
            [1, 1, 1, 3],
        ]
    )
    assert prediction_depth(ranks) == [2, 1, 3, None]
    rng = np.random.default_rng(0)
    for _ in range(50):
        random_ranks = rng.integers(1, 3, size=(6, 5))
        assert prediction_depth(random_ranks) == _depth_by_loop(random_ranks)


def test_depth_comes_from_the_matching_final_norm_rankings(
    tiny_lm: Callable[[str], ec.LM],
) -> None:
    lm = tiny_lm("llama")
    gens = ec.generate(lm, ["one two three", "the city of"], max_new_tokens=4, min_new_tokens=4)
    assert isinstance(gens, tuple)
    ranks = [ec.rankings(lm, g) for g in gens]
    # records in any order: each generation finds its own rankings by content
    tables = ec.to_tables([ranks[1], gens[0], gens[1], ranks[0]])
    gen_rows = tables["generations"].to_pandas()
    for pid, gen_index in ((1, 0), (2, 1)):
        depth = gen_rows[gen_rows["prompt_id"] == pid].sort_values("step")["depth"]
        expected = _depth_by_loop(ranks[gen_index].ranks)
        assert [None if pd.isna(d) else int(d) for d in depth] == expected
    # no rankings, or rankings with norm="none": depth is null
    alone = ec.to_tables([gens[0], ec.rankings(lm, gens[0], norm="none")])
    assert alone["generations"].column("depth").null_count == gens[0].n_generated


def test_prompt_ids_and_bad_arguments(view_records: dict[str, Record]) -> None:
    gen, ranks = view_records["Generation"], view_records["Rankings"]
    tables = ec.to_tables([gen, ranks], prompt_ids=["q-7", "q-7"])
    assert tables["rankings"].schema.field("prompt_id").type == pa.string()
    assert set(tables["generations"].column("prompt_id").to_pylist()) == {"q-7"}
    assert set(ec.to_tables(gen)) == {"generations"}
    assert ec.to_tables([]) == {}
    with pytest.raises(ec.InvalidArgumentError, match="one per record"):
        ec.to_tables([gen, ranks], prompt_ids=[1])
    with pytest.raises(ec.InvalidTypeError, match="not an ecco-core record"):
        ec.to_tables([gen, "text"])  # type: ignore[list-item]
    with pytest.raises(ec.InvalidArgumentError, match="unknown table"):
        schema("nope")


def test_factor_examples_keep_top_rows_per_factor(view_records: dict[str, Record]) -> None:
    rec = view_records["Factorization"]
    assert isinstance(rec, ec.Factorization)
    examples = ec.to_tables(rec, top_examples=2)["factor_examples"].to_pandas()
    assert len(examples) == 2 * rec.n_components
    for f, group in examples.groupby("factor"):
        expected = np.sort(rec.token_factors[f])[::-1][:2]
        np.testing.assert_array_equal(group.sort_values("rank")["activation"], expected)


def test_attribution_rows_for_a_hand_made_record() -> None:
    scores = np.array([[0.25, 0.75, 0.0], [0.5, 0.125, 0.375]], dtype=np.float32)
    rec = ec.Attributions(
        scores=scores,
        values=np.zeros((0, 0, 0)),
        token_ids=np.array([4, 5, 6]),
        tokens=["a", "b", "c"],
        n_input_tokens=2,
        n_encoder_tokens=0,
        target_positions=np.array([2, 3 - 1]),
        target_ids=np.array([6, 6]),
        foil_id=-1,
        target_values=np.array([0.5, 0.25]),
        convergence_delta=np.zeros(0),
        method="saliency",
        target="probability",
        aggregation="l2",
        baseline="zeros",
        precision="fp32",
        precision_deviation=0.0,
        provenance=fixed_provenance("m", "attribute"),
    )
    rows = ec.to_tables(rec, prompt_ids=[9])["attributions"].to_pylist()
    assert len(rows) == 6
    assert rows[4] == {
        "prompt_id": 9,
        "method": "saliency",
        "step": 1,
        "target_position": 2,
        "target_id": 6,
        "target_token": "c",
        "source_index": 1,
        "source_id": 5,
        "source_token": "b",
        "is_input": True,
        "score": 0.125,
        "target_value": 0.25,
        "convergence_delta": None,
        "target": "probability",
        "aggregation": "l2",
        "model": "m",
    }


def test_pandas_is_not_a_core_dependency() -> None:
    """pandas is only needed by users who call .to_pandas(); the core never imports it."""
    import ast
    import importlib.metadata

    requires = importlib.metadata.requires("ecco-core") or []
    core = [r for r in requires if "extra ==" not in r]
    assert any(r.startswith("pyarrow") for r in core)
    assert not any(r.startswith("pandas") for r in core)
    for path in Path(ec.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            assert "pandas" not in {n.split(".")[0] for n in names}, path.name
