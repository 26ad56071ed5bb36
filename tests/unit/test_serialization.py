"""Round-trips, schemas and rejections of the record envelope."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ecco_core as ec
from ecco_core.records import Provenance
from ecco_core.testing import fixed_provenance

text = st.text(max_size=12)
json_scalar = (
    st.none()
    | st.booleans()
    | st.integers(-(10**9), 10**9)
    | text
    | st.floats(allow_nan=False, allow_infinity=False, width=32)
)


@st.composite
def provenances(draw: st.DrawFn) -> Provenance:
    return Provenance(
        model=draw(text),
        revision=draw(text),
        library_version="0.1.0",
        transformers_version="5.0",
        torch_version="2.13",
        function=draw(text),
        params=draw(
            st.dictionaries(
                st.text(max_size=5), json_scalar | st.lists(json_scalar, max_size=3), max_size=4
            )
        ),
    )


def _probs(draw: st.DrawFn, rows: int, k: int) -> np.ndarray:
    values = draw(st.lists(st.floats(0, 1, width=32), min_size=rows * k, max_size=rows * k))
    return np.array(values, dtype=np.float32).reshape(rows, k)


@st.composite
def generations(draw: st.DrawFn) -> ec.Generation:
    n_in = draw(st.integers(1, 6))
    n_gen = draw(st.integers(0, 4))
    k = draw(st.integers(1, 3))
    n = n_in + n_gen
    return ec.Generation(
        token_ids=np.array(draw(st.lists(st.integers(0, 50000), min_size=n, max_size=n))),
        tokens=draw(st.lists(text, min_size=n, max_size=n)),
        raw_tokens=draw(st.lists(text, min_size=n, max_size=n)),
        n_input_tokens=n_in,
        n_encoder_tokens=0,
        top_ids=np.array(
            draw(st.lists(st.integers(0, 50000), min_size=n_gen * k, max_size=n_gen * k)),
            dtype=np.int64,
        ).reshape(n_gen, k),
        top_probs=_probs(draw, n_gen, k),
        top_tokens=[draw(st.lists(text, min_size=k, max_size=k)) for _ in range(n_gen)],
        prompt=draw(text),
        text=draw(text),
        model_kind="causal",
        provenance=draw(provenances()),
    )


@st.composite
def rankings(draw: st.DrawFn) -> ec.Rankings:
    layers, n = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    return ec.Rankings(
        ranks=np.array(
            draw(st.lists(st.integers(1, 10**6), min_size=layers * n, max_size=layers * n))
        ).reshape(layers, n),
        positions=np.arange(n) + 3,
        token_ids=np.arange(n),
        tokens=draw(st.lists(text, min_size=n, max_size=n)),
        sequence_tokens=["a"] * (n + 3),
        layer_labels=[f"layer {i}" for i in range(layers)],
        norm=draw(st.sampled_from(["final", "none"])),
        provenance=draw(provenances()),
    )


@st.composite
def layer_predictions(draw: st.DrawFn) -> ec.LayerPredictions:
    layers, k = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    return ec.LayerPredictions(
        position=draw(st.integers(1, 9)),
        token_ids=np.arange(layers * k).reshape(layers, k),
        probs=_probs(draw, layers, k),
        tokens=[draw(st.lists(text, min_size=k, max_size=k)) for _ in range(layers)],
        target_id=draw(st.integers(0, 9)),
        target_token=draw(text),
        sequence_tokens=["x", "y"],
        layer_labels=[f"layer {i}" for i in range(layers)],
        norm="final",
        provenance=draw(provenances()),
    )


@st.composite
def watches(draw: st.DrawFn) -> ec.RankingsWatch:
    layers, n = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    return ec.RankingsWatch(
        position=2,
        ranks=np.array(
            draw(st.lists(st.integers(1, 99), min_size=layers * n, max_size=layers * n))
        ).reshape(layers, n),
        watch_ids=np.arange(n),
        watch_tokens=draw(st.lists(text, min_size=n, max_size=n)),
        sequence_tokens=["a", "b", "c"],
        layer_labels=[str(i) for i in range(layers)],
        norm="none",
        provenance=draw(provenances()),
    )


@st.composite
def masked(draw: st.DrawFn) -> ec.MaskedPredictions:
    n, k = draw(st.integers(1, 5)), draw(st.integers(1, 3))
    m = draw(st.integers(0, n))
    return ec.MaskedPredictions(
        token_ids=np.arange(n),
        tokens=["t"] * n,
        raw_tokens=["t"] * n,
        positions=np.arange(m),
        top_ids=np.zeros((m, k), dtype=np.int64),
        top_probs=_probs(draw, m, k),
        top_tokens=[["z"] * k for _ in range(m)],
        text=draw(text),
        provenance=draw(provenances()),
    )


any_record = generations() | rankings() | layer_predictions() | watches() | masked() | provenances()


@settings(max_examples=60, deadline=None)
@given(any_record)
def test_round_trip_and_schema(record: ec.Provenance) -> None:
    payload = record.to_json()
    again = ec.load_record(payload)
    assert type(again) is type(record)
    assert again == record
    assert again.to_json() == payload
    jsonschema.validate(json.loads(payload), ec.json_schema(record.KIND))


def test_arrays_are_read_only() -> None:
    rec = ec.load_record(
        ec.RankingsWatch(
            position=1,
            ranks=np.array([[1]]),
            watch_ids=np.array([3]),
            watch_tokens=["a"],
            sequence_tokens=["a", "b"],
            layer_labels=["l0"],
            norm="final",
            provenance=fixed_provenance("m", "f"),
        ).to_json()
    )
    with pytest.raises(ValueError):
        rec.ranks[0, 0] = 5  # type: ignore[attr-defined]


def _envelope() -> dict:
    gen = ec.Generation(
        token_ids=np.array([1, 2, 3]),
        tokens=["a", "b", "c"],
        raw_tokens=["a", "b", "c"],
        n_input_tokens=2,
        n_encoder_tokens=0,
        top_ids=np.array([[3, 4]]),
        top_probs=np.array([[0.5, 0.25]]),
        top_tokens=[["c", "d"]],
        prompt="ab",
        text="c",
        model_kind="causal",
        provenance=fixed_provenance("m", "generate"),
    )
    return json.loads(gen.to_json())


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda e: e.update(kind="Pickle"), "unknown record kind"),
        (lambda e: e.update(kind="os.system"), "unknown record kind"),
        (lambda e: e.update(version=99), "newer"),
        (lambda e: e["data"]["top_probs"].update(shape=[2, 2]), "does not hold"),
        (lambda e: e["data"]["top_probs"].update(shape=[2]), "shape"),
        (lambda e: e["data"]["top_probs"].update(data=["nan", 0.1]), "NaN or infinite"),
        (lambda e: e["data"]["top_probs"].update(dtype="object"), "dtype"),
        (lambda e: e["data"].pop("prompt"), "missing fields"),
        (lambda e: e["data"].update(__reduce__="os.system"), "unexpected fields"),
        (lambda e: e["data"].update(n_input_tokens=9), "n_input_tokens"),
        (lambda e: e["data"].update(tokens=["a"]), "tokens"),
    ],
)
def test_bad_envelopes_are_rejected(mutate, message: str) -> None:
    envelope = _envelope()
    mutate(envelope)
    with pytest.raises(ec.RecordFormatError, match=message):
        ec.load_record(json.dumps(envelope))


def test_nan_literal_and_garbage_rejected(tmp_path) -> None:
    text = json.dumps(_envelope()).replace("0.5", "NaN")
    with pytest.raises(ec.RecordFormatError, match="NaN"):
        ec.load_record(text)
    with pytest.raises(ec.RecordFormatError, match="invalid JSON"):
        ec.load_record("{not json")
    with pytest.raises(ec.RecordFormatError, match="neither JSON text nor a file"):
        ec.load_record(str(tmp_path / "missing.json"))


def test_save_is_atomic_and_loads_from_path(tmp_path) -> None:
    rec = ec.load_record(json.dumps(_envelope()))
    path = tmp_path / "gen.json"
    rec.save(str(path))
    assert ec.load_record(str(path)) == rec
    assert [p.name for p in tmp_path.iterdir()] == ["gen.json"]


def test_non_finite_values_written_as_strings() -> None:
    from ecco_core.serialization import _encode_array

    encoded = _encode_array(np.array([1.0, np.nan, np.inf, -np.inf], dtype=np.float32))
    assert encoded["data"] == [1.0, "nan", "inf", "-inf"]
    json.dumps(encoded, allow_nan=False)


def test_every_kind_has_a_schema() -> None:
    for kind in ec.list_record_kinds():
        jsonschema.Draft202012Validator.check_schema(ec.json_schema(kind))
