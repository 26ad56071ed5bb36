"""Attention records through the HTML adapter, the notebook widget and Vega-Lite (no browser)."""

from __future__ import annotations

import json

import altair as alt
import jsonschema

import ecco_core as ec
from ecco_adapters import html as eh
from ecco_adapters import notebook, vega


def _record(tiny_lm) -> ec.Attention:
    lm = tiny_lm("bart")
    gen = ec.generate(lm, "Heathrow airport is located in", max_new_tokens=3, min_new_tokens=3)
    att = ec.attention(lm, gen, stack="cross", heads=[1, 2])
    assert isinstance(att, ec.Attention)
    return att


def test_vega_spec_holds_the_weights_and_exports(tiny_lm, tmp_path) -> None:
    att = _record(tiny_lm)
    spec = vega.spec(att)
    # The schema itself is not re-checked: format checkers that jupyterlab pulls in reject
    # its "#/definitions/A<B>" references, which altair and Vega read fine.
    jsonschema.Draft7Validator(alt.vegalite.v6.schema.core.load_schema()).validate(spec)
    assert json.dumps(spec, sort_keys=True) == json.dumps(vega.spec(att), sort_keys=True)
    rows = spec["data"]["values"]
    assert len(rows) == int((att.weights > 0).sum())
    by_cell = {(r["layer"], r["head"], r["query"], r["key"]): r["weight"] for r in rows}
    q = f"{att.query_start + 2}: '{att.query_tokens[2]}'"[:40]
    k = f"{att.key_start + 4}: '{att.key_tokens[4]}'"[:40]
    assert abs(by_cell[("decoder 1", "head 2", q, k)] - float(att.weights[1, 1, 2, 4])) < 1e-6
    assert spec["params"][0]["bind"]["options"] == list(att.layer_labels)
    assert vega.chart(att).to_dict()["params"][0]["name"] == "layer"
    assert vega.save(att, tmp_path / "a.svg").read_text().lstrip().startswith("<svg")


def test_html_and_widget_carry_the_record(tiny_lm) -> None:
    att = _record(tiny_lm)
    assert eh.view_envelope(att) == att.to_dict()
    page = eh.render(att)
    assert page.count('type="application/json"') == 1 and '"kind": "Attention"' in page
    w = notebook.widget(att)
    assert json.loads(w.record_json) == att.to_dict() and w.selected == -1
    assert "Attention" in att._repr_mimebundle_()["text/html"]
