"""HTML adapter, notebook display and Vega-Lite specs (no browser needed)."""

from __future__ import annotations

import json
import subprocess
import sys
from html.parser import HTMLParser

import altair as alt
import jsonschema
import pytest

import ecco_core as ec
from ecco_adapters import html as eh
from ecco_adapters import notebook, vega
from ecco_core.summaries import summary


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))


def test_html_is_self_contained_deterministic_and_escaped(
    view_records, xss_generation, tmp_path
) -> None:
    records = [*view_records.values(), xss_generation]
    page = eh.render(records, title="<t>")
    assert page == eh.render(records, title="<t>")
    assert "<t>" not in page and "&lt;t&gt;" in page
    parser = _Tags()
    parser.feed(page)
    assert not {"link", "img", "iframe", "object", "embed"} & {t for t, _ in parser.tags}
    assert not [a for _, attrs in parser.tags for a in attrs if a[0] in ("src", "href")]
    scripts = [dict(attrs).get("type") for t, attrs in parser.tags if t == "script"]
    # The only scripts are ours: one JSON block per record plus the module.
    assert scripts == ["application/json"] * len(records) + ["module"]
    assert "window.__xss" in page  # present, but only as escaped JSON text
    assert "\\u003c/script\\u003e" in page
    path = eh.save(records, tmp_path / "views.html", title="<t>")
    assert path.read_text() == page and [p.name for p in tmp_path.iterdir()] == ["views.html"]


def test_views_leave_out_only_unread_large_fields(view_records) -> None:
    envelope = eh.view_envelope(view_records["Factorization"])
    assert "neuron_factors" not in envelope["data"] and "token_factors" in envelope["data"]
    assert eh.view_envelope(view_records["Rankings"]) == view_records["Rankings"].to_dict()


def test_notebook_display_comes_through_entry_point(view_records) -> None:
    rec = view_records["Rankings"]
    bundle = rec._repr_mimebundle_()
    assert bundle["text/plain"] == summary(rec)
    assert (
        'data-ecco-record="ecco-' in bundle["text/html"]
        and "mountAll(document)" in bundle["text/html"]
    )
    assert bundle == notebook.mimebundle(rec)
    assert "ecco-view" not in repr(rec)  # __repr__ never displays
    code = "import sys, ecco_core as ec; print(any(m.startswith('IPython') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_widget_traits(view_records) -> None:
    w = notebook.widget(view_records["Attributions"], mode="detailed")
    assert w.selected == -1 and w.mode == "detailed"
    assert json.loads(w.record_json)["kind"] == "Attributions"
    assert "export default" in w._esm and ".ecco" in w._css
    assert set(w.keys) >= {"record_json", "mode", "selected"}


def test_widget_class_is_defined_once_and_reads_as_text(view_records) -> None:
    first = notebook.widget(view_records["Attributions"])
    second = notebook.widget(view_records["Rankings"])
    # anywidget derives a class per instance; both derive from the one module-level class.
    assert isinstance(first, notebook.EccoWidget) and isinstance(second, notebook.EccoWidget)
    text = repr(first)
    assert text.splitlines()[0] == "EccoWidget (mode='minimal', selected=-1)"
    assert summary(view_records["Attributions"]) in text
    assert "record_json" not in text and len(text) < 2000


@pytest.mark.parametrize(
    "kind",
    [
        "Generation",
        "MaskedPredictions",
        "Classification",
        "Rankings",
        "RankingsWatch",
        "LayerPredictions",
        "Attributions",
        "SignedAttributions",
        "Factorization",
        "Activations",
    ],
)
def test_vega_specs_valid_deterministic_and_exportable(view_records, kind: str, tmp_path) -> None:
    rec = view_records[kind]
    spec = vega.spec(rec)
    assert spec["$schema"] == alt.SCHEMA_URL
    # The schema itself is not re-checked: format checkers that jupyterlab pulls in reject
    # its "#/definitions/A<B>" references, which altair and Vega read fine.
    jsonschema.Draft7Validator(alt.vegalite.v6.schema.core.load_schema()).validate(spec)
    assert json.dumps(spec, sort_keys=True) == json.dumps(vega.spec(rec), sort_keys=True)
    rows = spec["data"]["values"]
    assert rows and all(isinstance(r, dict) for r in rows)
    as_chart = vega.chart(rec).to_dict()  # altair validates it and moves data to datasets
    assert list(as_chart["datasets"].values()) == [rows]
    svg = vega.save(rec, tmp_path / "c.svg").read_text()
    assert svg.lstrip().startswith("<svg")


def test_vega_values_and_offline_exports(view_records, tmp_path) -> None:
    ranks = view_records["Rankings"]
    rows = vega.spec(ranks)["layer"][0] and vega.spec(ranks)["data"]["values"]
    assert [r["rank"] for r in rows] == ranks.ranks.reshape(-1).tolist()
    att = view_records["Attributions"]
    first = [
        r
        for r in vega.spec(att)["data"]["values"]
        if r["output"].startswith(f"{att.target_positions[0]}:")
    ]
    assert sum(r["score"] for r in first) == pytest.approx(1.0, abs=1e-4)
    png = vega.save(ranks, tmp_path / "r.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    page = vega.save(ranks, tmp_path / "r.html").read_text()
    assert "<script src=" not in page.lower() and "vega" in page.lower()
    assert json.loads(vega.save(ranks, tmp_path / "r.json").read_text()) == vega.spec(ranks)
    with pytest.raises(ValueError, match="suffix"):
        vega.save(ranks, tmp_path / "r.pdf")
    with pytest.raises(TypeError, match="no Vega-Lite spec"):
        vega.spec(ranks.provenance)
    assert isinstance(ec.load_record(ranks.to_json()), ec.Rankings)


def test_text_form_says_what_each_record_is(view_records) -> None:
    """The plain-text form names the kind and model and carries the headline numbers."""
    for name, rec in view_records.items():
        text = summary(rec)
        model = rec.provenance.model
        assert text.splitlines()[0] == f"{type(rec).KIND} of {model}", name
        assert "array(" not in text and len(text.splitlines()) <= 10, name
    gen = view_records["Generation"]
    text = summary(gen)
    assert (
        f"{gen.n_tokens} tokens ({gen.n_input_tokens} input + {gen.n_generated} generated)" in text
    )
    assert f"generated: {gen.text!r}" in text
    top = f"{gen.top_tokens[0][0]!r} {float(gen.top_probs[0, 0]):.2f}"
    assert top in text
    ranks = view_records["Rankings"]
    n_layers, n_gen = ranks.ranks.shape
    assert f"ranks [{n_layers} layers x {n_gen} generated tokens], norm=final" in summary(ranks)
    attr = view_records["Attributions"]
    row = attr.scores[0]
    best = int(abs(row).argmax())
    assert f"{attr.tokens[best]!r} {float(row[best]):.2f}" in summary(attr)
    clf = view_records["Classification"]
    best = int(clf.probs.argmax())
    assert f"{clf.labels[best]!r} {float(clf.probs[best]):.2f}" in summary(clf)
