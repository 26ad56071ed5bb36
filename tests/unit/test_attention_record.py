"""The Attention record (round trip, schema, validation) and rollout on synthetic arrays."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ecco_core as ec
from ecco_core.attribution.attention_methods import encoder_decoder_rollout, rollout
from ecco_core.testing import fixed_provenance

TOKENS = ["<s>", "The", " tower", " is", " in", " Paris"]


def _softmax_rows(raw: np.ndarray) -> np.ndarray:
    e = np.exp(raw - raw.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _fields(**change: Any) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    weights = _softmax_rows(rng.normal(size=(2, 3, 4, 6))).astype(np.float32)
    fields: dict[str, Any] = {
        "weights": weights,
        "layers": [0, 2],
        "heads": [0, 1, 3],
        "n_model_heads": 4,
        "layer_labels": ["decoder 0", "decoder 2"],
        "stack": "cross",
        "token_ids": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
        "tokens": [*TOKENS, "<pad>", " Paris", ".", "</s>"],
        "n_input_tokens": 7,
        "query_start": 6,
        "key_start": 0,
        "query_tokens": ["<pad>", " Paris", ".", "</s>"],
        "key_tokens": TOKENS,
        "provenance": fixed_provenance("m", "attention", stack="cross"),
    }
    fields.update(change)
    return fields


@st.composite
def attention_records(draw: st.DrawFn) -> ec.Attention:
    layers, heads = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    n = draw(st.integers(1, 5))
    raw = np.array(
        draw(
            st.lists(
                st.floats(-5, 5, width=32),
                min_size=layers * heads * n * n,
                max_size=layers * heads * n * n,
            )
        )
    ).reshape(layers, heads, n, n)
    dtype = draw(st.sampled_from(["float32", "float16"]))
    tokens = draw(st.lists(st.text(max_size=6), min_size=n, max_size=n))
    return ec.Attention(
        weights=_softmax_rows(raw).astype(dtype),
        layers=np.arange(layers),
        heads=np.arange(heads),
        n_model_heads=heads,
        layer_labels=[f"layer {i}" for i in range(layers)],
        stack=draw(st.sampled_from(["encoder", "decoder"])),
        token_ids=np.arange(n),
        tokens=tokens,
        n_input_tokens=n,
        query_start=0,
        key_start=0,
        query_tokens=tokens,
        key_tokens=tokens,
        provenance=fixed_provenance("m", "attention"),
    )


@settings(max_examples=40, deadline=None)
@given(attention_records())
def test_round_trip_and_schema(record: ec.Attention) -> None:
    payload = record.to_json()
    again = ec.load_record(payload)
    assert again == record and again.weights.dtype == record.weights.dtype
    assert again.to_json() == payload
    jsonschema.validate(json.loads(payload), ec.json_schema("Attention"))


def test_cross_attention_record_and_read_only() -> None:
    rec = ec.Attention(**_fields())
    again = ec.load_record(rec.to_json())
    assert again == rec and "Attention" in ec.list_record_kinds()
    with pytest.raises(ValueError):
        again.weights[0, 0, 0, 0] = 1.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"stack": "sideways"}, "stack must be one of"),
        ({"layers": [2, 0]}, "layers must be increasing"),
        ({"heads": [0, 1, 4]}, "heads must lie in"),
        ({"heads": [0, 1]}, "heads must have 3 entries"),
        ({"query_start": 5}, "query_tokens must be tokens"),
        ({"key_tokens": TOKENS[::-1]}, "key_tokens must be tokens"),
        ({"layer_labels": ["a"]}, "layer_labels must have 2 entries"),
        ({"weights": np.full((2, 3, 4, 6), 0.5, dtype=np.float32)}, "sum to 1"),
        ({"weights": -_softmax_rows(np.zeros((2, 3, 4, 6)))}, "non-negative"),
        ({"weights": np.ones((2, 3, 4))}, "4 dimensions"),
    ],
)
def test_invalid_records_are_rejected(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ec.RecordFormatError, match=message):
        ec.Attention(**_fields(**change))


def test_rollout_on_synthetic_arrays() -> None:
    n = 5
    identity = np.broadcast_to(np.eye(n), (3, 2, n, n))
    np.testing.assert_allclose(rollout(identity), np.eye(n))
    # every head attends to token 0 only: half the flow moves to token 0 at every layer
    first = np.zeros((1, 2, n, n))
    first[..., 0] = 1.0
    one = rollout(first)
    expected = 0.5 * np.eye(n)
    expected[:, 0] += 0.5
    np.testing.assert_allclose(one, expected)
    two = rollout(np.concatenate([first, first]))
    np.testing.assert_allclose(two, expected @ expected)
    np.testing.assert_allclose(two[1], [0.75, 0.25, 0, 0, 0])
    rng = np.random.default_rng(1)
    causal = np.tril(rng.random((4, 3, n, n)))
    causal /= causal.sum(-1, keepdims=True)
    joint = rollout(causal)
    np.testing.assert_allclose(joint.sum(-1), 1.0)
    assert not np.triu(joint, k=1).any()


def test_encoder_decoder_rollout_rows_sum_to_one() -> None:
    rng = np.random.default_rng(2)
    enc = _softmax_rows(rng.normal(size=(2, 3, 4, 4)))
    dec = np.tril(rng.random((2, 3, 3, 3)))
    dec /= dec.sum(-1, keepdims=True)
    cross = _softmax_rows(rng.normal(size=(2, 3, 3, 4)))
    to_enc, to_dec = encoder_decoder_rollout(enc, dec, cross)
    assert to_enc.shape == (3, 4) and to_dec.shape == (3, 3)
    np.testing.assert_allclose(to_enc.sum(-1) + to_dec.sum(-1), 1.0)
    # two decoder layers, each halving the decoder's own share: at most 1/4 is left there
    assert (to_dec.sum(-1) <= 0.25 + 1e-12).all() and not np.triu(to_dec, k=1).any()
