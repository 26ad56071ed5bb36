"""Corpus neuron factors streamed into MiniBatchNMF, ``ec.top_examples``, and the pieces of
the Ray engine that need no Ray (packing tables, planning workers, checking an address)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from sklearn.decomposition import MiniBatchNMF

import ecco_core as ec
from ecco_adapters.corpus import BatchOptions, CorpusInputError, RunConfig, run_corpus
from ecco_adapters.corpus import factors as factor_fit
from ecco_adapters.corpus.checks import check_address
from ecco_adapters.corpus.ray_engine import _matrix_table as matrix_table
from ecco_adapters.corpus.ray_engine import (
    batch_starts,
    batches_of,
    largest_node,
    matrix_of,
    pack,
    plan_workers,
    text_of,
    unpack,
    whole_batches,
)
from ecco_core.testing import fixed_provenance

TEXTS = [
    "The Eiffel Tower is in the city of",
    "Heathrow airport is located in",
    "She said that he would come back",
    "The capital of Italy is",
    "Water boils at a temperature of",
    "The first man on the moon was",
    "My favourite colour is",
]


def _table(out: Path, name: str) -> pd.DataFrame:
    return ds.dataset(out / name, format="parquet").to_table().to_pandas()


def _stacked(
    lm: ec.LM, texts: list[str], new_tokens: int
) -> tuple[np.ndarray, list[ec.Activations]]:
    """Clipped activations [every position of every text, n_layers * n_neurons], one by one."""
    acts = []
    for text in texts:
        gen = ec.generate(lm, text, max_new_tokens=new_tokens)
        assert isinstance(gen, ec.Generation)
        acts.append(ec.activations(lm, gen))
    mats = [np.maximum(a.values.reshape(-1, a.values.shape[2]).T, 0) for a in acts]
    return np.concatenate(mats).astype(np.float32), acts


def test_blocks_recut_any_stream_into_the_same_rows() -> None:
    rng = np.random.default_rng(0)
    parts = [rng.random((n, 3), dtype=np.float32) for n in (5, 0, 1100, 7, 2000, 3)]
    got = list(factor_fit.blocks(parts))
    assert [b.shape[0] for b in got] == [1024, 1024, 1024, 5 + 1100 + 7 + 2000 + 3 - 3072]
    np.testing.assert_array_equal(np.concatenate(got), np.concatenate(parts))


def test_a_stream_without_positions_is_refused_as_input() -> None:
    empty = [np.zeros((0, 6), np.float32)]
    with pytest.raises(CorpusInputError, match="no prompt of the data set could be generated"):
        factor_fit.fit_stream(iter(empty), 2)


@pytest.mark.slow
def test_streamed_factors_equal_minibatch_nmf_on_the_stacked_matrix(
    tiny_path: Callable[[str], Path], tiny_lm: Callable[[str], ec.LM], tmp_path: Path
) -> None:
    lm = tiny_lm("gpt2")
    texts = TEXTS * 20  # 140 prompts, about 1,300 positions: two partial_fit blocks
    data = tmp_path / "p.txt"
    data.write_text("\n".join(texts) + "\n", encoding="utf-8")
    config = RunConfig(
        data=data,
        out=tmp_path / "out",
        model=str(tiny_path("gpt2")),
        batch_size=6,
        nmf=4,
        nmf_sample=len(texts),
        options=BatchOptions(analyses=("generate", "neurons"), max_new_tokens=1, top_examples=3),
    )
    out = run_corpus(config, lm=lm)
    x, acts = _stacked(lm, TEXTS, 1)
    x = np.concatenate([x] * 20)
    direct = MiniBatchNMF(4, init="random", batch_size=1024, random_state=0)
    for start in range(0, x.shape[0], 1024):
        direct.partial_fit(x[start : start + 1024])
    loads = _table(out, "factor_loadings").sort_values(["factor", "layer", "neuron"])
    got = loads["loading"].to_numpy(np.float32).reshape(4, -1)
    np.testing.assert_allclose(got, direct.components_, rtol=1e-3, atol=1e-5)
    n_layers, n_neurons, _ = acts[0].values.shape
    assert set(loads["layer"]) == set(range(n_layers)) and loads["neuron"].max() == n_neurons - 1

    # top examples: brute force over every position of every prompt with the fitted factors
    codes = [ec.factor_codes(a, got) for a in acts] * 20
    examples = _table(out, "factor_examples")
    for f in range(4):
        values = np.concatenate([c[f] for c in codes])
        strongest = np.sort(values)[::-1][:3]
        mine = examples[examples["factor"] == f].sort_values("rank")["activation"].to_numpy()
        np.testing.assert_allclose(mine, strongest, rtol=1e-4, atol=1e-6)
    tokens = _table(out, "factor_tokens")
    ids, _ = ec.promoted_tokens(lm, got, range(n_layers), top_k=10)
    np.testing.assert_array_equal(tokens.sort_values(["factor", "rank"])["token_id"], ids.ravel())
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rows"]["factor_tokens"] == 40


def test_promoted_tokens_are_the_direct_logit_attribution_of_each_factor(
    tiny_lm: Callable[[str], ec.LM],
) -> None:
    import torch

    lm = tiny_lm("gpt2")
    spec = lm.spec
    rng = np.random.default_rng(1)
    width = ec.activations(lm, "a b").values.shape[1]
    loads = rng.random((2, spec.n_layers * width)).astype(np.float32)
    ids, tokens = ec.promoted_tokens(lm, loads, range(spec.n_layers), top_k=5)
    direction = np.zeros((2, spec.hidden_size), dtype=np.float64)
    model: Any = lm.model
    with torch.no_grad():
        for layer in range(spec.n_layers):
            proj = model.get_submodule(spec.ffn_out[layer])
            part = torch.tensor(loads[:, layer * width : (layer + 1) * width])
            direction += (proj(part) - proj(torch.zeros_like(part))).double().numpy()
        gain = model.get_submodule(str(spec.final_norm)).weight.double().numpy()
        scores = (direction * gain) @ model.get_output_embeddings().weight.double().numpy().T
    np.testing.assert_array_equal(ids, np.argsort(-scores, axis=1)[:, :5])
    assert tokens[0][0] == lm.tokenizer.decode([int(ids[0, 0])])


def test_top_examples_of_a_neuron_and_a_factor_match_brute_force(
    tiny_lm: Callable[[str], ec.LM],
) -> None:
    lm = tiny_lm("gpt2")
    acts = [ec.activations(lm, t) for t in TEXTS]
    table = ec.top_examples(iter(acts), neuron=(1, 7), top=5)
    pool = [
        (float(a.values[1, 7, p]), i, p)
        for i, a in enumerate(acts)
        for p in range(a.values.shape[2])
    ]
    pool.sort(key=lambda c: (-c[0], c[1], c[2]))
    assert table.column("prompt_id").to_pylist() == [c[1] for c in pool[:5]]
    assert table.column("position").to_pylist() == [c[2] for c in pool[:5]]
    np.testing.assert_allclose(table.column("activation").to_numpy(), [c[0] for c in pool[:5]])
    assert table.column("rank").to_pylist() == [1, 2, 3, 4, 5]
    first = acts[pool[0][1]]
    assert table.column("token").to_pylist()[0] == first.tokens[pool[0][2]]
    assert f"[{first.tokens[pool[0][2]]}]" in table.column("context").to_pylist()[0]
    # texts give the same as their records
    assert ec.top_examples(TEXTS, neuron=(1, 7), top=5, lm=lm).equals(table)

    fact = ec.factorize(acts, n_components=3)
    by_factor = ec.top_examples(acts, factor=2, factors=fact, top=4)
    codes = np.concatenate([ec.factor_codes(a, fact.neuron_factors)[2] for a in acts])
    np.testing.assert_allclose(
        by_factor.column("activation").to_numpy(), np.sort(codes)[::-1][:4], rtol=1e-5
    )
    with pytest.raises(ec.InvalidArgumentError, match="exactly one"):
        ec.top_examples(acts, top=3)
    with pytest.raises(ec.InvalidArgumentError, match="factor=5"):
        ec.top_examples(acts, factor=5, factors=fact)
    with pytest.raises(ec.InvalidArgumentError, match="lm="):
        ec.top_examples(TEXTS, neuron=(0, 0))


def test_factor_codes_are_nmf_transform() -> None:
    from sklearn.decomposition import NMF

    rng = np.random.default_rng(3)
    values = rng.normal(size=(2, 6, 9)).astype(np.float32)
    record_h = rng.random((3, 12)).astype(np.float32)
    acts = ec.Activations(
        values=values,
        layers=np.array([0, 1]),
        layer_labels=["0", "1"],
        token_ids=np.arange(9),
        tokens=[f"t{i}" for i in range(9)],
        stack="decoder",
        n_input_tokens=9,
        provenance=fixed_provenance(function="activations"),
    )
    model = NMF(3, init="random", max_iter=500)
    model.components_, model.n_components_ = record_h, 3
    expected = model.transform(np.maximum(values.reshape(12, 9).T, 0)).T
    np.testing.assert_allclose(ec.factor_codes(acts, record_h), expected, rtol=1e-4, atol=1e-6)


# --- Ray engine pieces that need no Ray --------------------------------------------------------


def test_packed_tables_round_trip_with_empty_and_string_id_tables() -> None:
    tables = {
        "generations": pa.table(
            {"prompt_id": ["a", "b"], "prob": pa.array([0.5, 0.25], pa.float32())}
        ),
        "errors": pa.table(
            {"prompt_id": pa.array([], pa.string()), "stage": pa.array([], pa.string())}
        ),
    }
    block = pa.concat_tables([pack(0, 2, tables), pack(2, 4, {"errors": tables["errors"]})])
    found = unpack(block)
    assert set(found) == {(0, 2), (2, 4)}
    assert found[(0, 2)]["generations"].equals(tables["generations"])
    assert found[(2, 4)]["errors"].schema == tables["errors"].schema
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(matrix_of(matrix_table(x)), x)


def test_batches_are_given_whole_once_even_when_ray_splits_their_tables() -> None:
    table = pa.table({"prompt_id": [1], "x": [0.5]})
    first = pack(0, 2, {"generations": table, "rankings": table, "errors": table})
    second = pack(2, 4, {"generations": table, "rankings": table, "errors": table})
    # Ray Data cuts an output block by rows: batch 0-2 arrives in two pieces, then twice.
    blocks = [first.slice(0, 2), pa.concat_tables([first.slice(2), second]), first]
    expected = {"generations", "rankings", "errors"}
    given = [(start, end, sorted(t)) for start, end, t in whole_batches(blocks, expected)]
    assert given == [(0, 2, sorted(expected)), (2, 4, sorted(expected))]
    with pytest.raises(RuntimeError, match=r"0-2.*\['errors'\]"):
        list(whole_batches([first.slice(0, 2)], expected))


def test_input_blocks_carry_texts_that_are_not_utf8() -> None:
    pytest.importorskip("ray")  # ray_reader subclasses a Ray datasource
    from ecco_adapters.corpus.ray_reader import rows_block

    rows = [(0, 0, "a \ud800 b", ""), (1, 1, None, "empty"), (2, 2, "é", "")]
    block = rows_block(rows, string_ids=False)
    assert [text_of(t) for t in block.column("text").to_pylist()] == [r[2] for r in rows]
    assert block.column("prompt_id").type == pa.int64()


def test_rows_are_cut_into_the_local_engines_batches_and_finished_ones_dropped() -> None:
    pytest.importorskip("ray")
    from ecco_adapters.corpus.ray_reader import batch_rows, rows_block

    block = rows_block([(i, f"q{i}", "x", "") for i in range(4, 11)], string_ids=True)
    cut = batch_rows(block, batch_size=3, n_rows=11, todo=[0, 3, 9])  # rows 4..10 of a read
    assert cut.column("_row").to_pylist() == [4, 5, 9, 10]
    assert cut.column("_start").to_pylist() == [3, 3, 9, 9]
    assert cut.column("_end").to_pylist() == [6, 6, 11, 11]
    sample = batch_rows(block, batch_size=3, n_rows=11, todo=[0, 3, 6], limit=8)  # --nmf-sample 8
    assert sample.column("_row").to_pylist() == [4, 5, 6, 7]
    assert sample.column("_end").to_pylist() == [6, 6, 8, 8]
    assert batch_starts(11, 3) == [0, 3, 6, 9]
    assert batch_starts(11, 3, {"part-0000000009-0000000011", "part-0000000000-0000000003"}) == [
        3,
        6,
    ]
    assert batch_starts(11, 3, limit=8) == [0, 3, 6]


def test_an_actor_takes_whole_batches_only() -> None:
    pytest.importorskip("ray")
    from ecco_adapters.corpus.ray_reader import batch_rows, rows_block

    block = batch_rows(
        rows_block([(i, i, "x", "") for i in range(7)], string_ids=False),
        batch_size=3,
        n_rows=7,
        todo=[0, 3, 6],
    )
    found = [(start, end, rows.num_rows) for start, end, rows in batches_of(block)]
    assert found == [(0, 3, 3), (3, 6, 3), (6, 7, 1)]
    with pytest.raises(RuntimeError, match=r"rows 3\.\.4 of the batch of rows 3\.\.5"):
        list(batches_of(block.slice(0, 5)))
    with pytest.raises(RuntimeError, match="not the whole batch in order"):
        list(batches_of(pa.concat_tables([block.slice(4, 2), block.slice(3, 1)])))


def test_worker_plans_fit_the_cluster_or_fail_at_once() -> None:
    assert plan_workers({"CPU": 2.0}, None, 0) == (2, {"num_cpus": 0.5}, 1)
    assert plan_workers({"CPU": 64.0}, 4, 0) == (4, {"num_cpus": 15.75}, 15)
    assert plan_workers({"CPU": 8.0, "GPU": 4.0}, None, 1) == (4, {"num_gpus": 1}, 1)
    assert plan_workers({"CPU": 8.0, "GPU": 1.0}, None, 0.5)[0] == 2
    with pytest.raises(CorpusInputError, match="need 2 GPUs; the Ray cluster has 0"):
        plan_workers({"CPU": 2.0}, 2, 1)
    with pytest.raises(CorpusInputError, match="do not fit on a Ray cluster of 2 CPUs"):
        plan_workers({"CPU": 2.0}, 8, 0)
    with pytest.raises(CorpusInputError, match=r"at least 2 CPUs .*; this one has 1"):
        plan_workers({"CPU": 1.0}, 1, 0)
    # Four nodes of 4 CPUs: 7.5 CPUs per actor would fit on none; one node's 4 at the most.
    nodes = [{"Alive": True, "Resources": {"CPU": 4.0, "GPU": 1.0}} for _ in range(4)]
    nodes.append({"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}})
    assert largest_node(nodes) == {"CPU": 4.0, "GPU": 1.0}
    cluster = {"CPU": 16.0, "GPU": 4.0}
    assert plan_workers(cluster, None, 0, largest_node(nodes)) == (2, {"num_cpus": 4.0}, 4)
    with pytest.raises(CorpusInputError, match="no node of the Ray cluster has that many GPUs"):
        plan_workers(cluster, 2, 2, largest_node(nodes))


def test_address_checks_are_one_line_and_immediate() -> None:
    with pytest.raises(CorpusInputError, match="not valid; use auto, host:port"):
        check_address("localhost")
    with pytest.raises(CorpusInputError, match=r"no Ray cluster at --address 127\.0\.0\.1:1"):
        check_address("127.0.0.1:1")
    check_address("auto")  # left to Ray
    with pytest.raises(CorpusInputError, match="applies only to --engine ray"):
        RunConfig(data="x.txt", out="o", workers=2)
