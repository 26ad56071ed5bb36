"""Golden files: the JSON format of records and the Vega-Lite specs stay what they were.

Records are built from fixed synthetic values (no model), serialized with sorted keys and
floats rounded to 6 digits. A deliberate format change bumps the record's VERSION and
regenerates the files with ``ECCO_UPDATE_GOLDEN=1 pytest tests/golden``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ecco_core as ec
from ecco_adapters import vega
from ecco_core.records import Record
from ecco_core.testing import fixed_provenance

DATA = Path(__file__).with_name("data")
PROV = fixed_provenance("golden", "golden", norm="final")
TOKENS = ["The", " tower", " is", " in", " Paris", "."]


def _records() -> dict[str, Record]:
    grid = np.array([[900, 40, 7], [12, 2, 1]])
    return {
        "generation": ec.Generation(
            token_ids=np.array([1, 2, 3, 4, 5, 6]),
            tokens=TOKENS,
            raw_tokens=TOKENS,
            n_input_tokens=4,
            n_encoder_tokens=0,
            top_ids=np.array([[5, 9], [6, 2]]),
            top_probs=np.array([[0.66, 0.04], [0.5, 0.25]]),
            top_tokens=[[" Paris", " Rome"], [".", ","]],
            prompt="The tower is in",
            text=" Paris.",
            model_kind="causal",
            provenance=PROV,
        ),
        "rankings": ec.Rankings(
            ranks=grid,
            positions=np.array([3, 4, 5]),
            token_ids=np.array([4, 5, 6]),
            tokens=TOKENS[3:],
            sequence_tokens=TOKENS,
            layer_labels=["layer 0", "layer 1"],
            norm="final",
            provenance=PROV,
        ),
        "attributions": ec.Attributions(
            scores=np.array([[0.5, 0.25, 0.125, 0.125, 0, 0], [0.4, 0.2, 0.1, 0.1, 0.2, 0]]),
            values=np.zeros((0, 0, 0)),
            token_ids=np.array([1, 2, 3, 4, 5, 6]),
            tokens=TOKENS,
            n_input_tokens=4,
            n_encoder_tokens=0,
            target_positions=np.array([4, 5]),
            target_ids=np.array([5, 6]),
            foil_id=-1,
            target_values=np.array([0.66, 0.5]),
            convergence_delta=np.array([0.01, -0.02]),
            method="integrated_gradients",
            target="probability",
            aggregation="l2",
            baseline="zeros",
            precision="fp32",
            precision_deviation=0.0,
            provenance=PROV,
        ),
    }


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def _check(name: str, payload: Any) -> None:
    text = json.dumps(_rounded(payload), sort_keys=True, indent=1) + "\n"
    path = DATA / f"{name}.json"
    if os.environ.get("ECCO_UPDATE_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert path.read_text(encoding="utf-8") == text, f"{name} changed: see the module docstring"


@pytest.mark.parametrize("name", ["generation", "rankings", "attributions"])
def test_record_json_is_stable(name: str) -> None:
    record = _records()[name]
    envelope = record.to_dict()
    envelope["data"]["provenance"]["library_version"] = "<any>"
    _check(f"record_{name}", envelope)
    assert (
        ec.load_record((DATA / f"record_{name}.json").read_text().replace("<any>", "0")) == record
    )


@pytest.mark.parametrize("name", ["generation", "rankings", "attributions"])
def test_vega_spec_is_stable(name: str) -> None:
    spec = vega.spec(_records()[name])
    spec["$schema"] = "<pinned to the installed altair>"
    _check(f"vega_{name}", spec)
