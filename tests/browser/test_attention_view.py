"""The attention views in a real browser: lines and cells carry the record's weights, hover
isolates a token's lines, layer and head selectors, hostile tokens stay text, no network."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

import ecco_core as ec
from ecco_adapters import html as eh
from ecco_adapters.html import javascript
from ecco_core.testing import fixed_provenance

pytestmark = pytest.mark.browser

HOSTILE = "</script><script>alert(1)</script>"


@pytest.fixture(scope="module")
def att(tiny_lm) -> ec.Attention:
    lm = tiny_lm("gpt2")
    gen = ec.generate(lm, "The Eiffel Tower is in the city of", max_new_tokens=3, min_new_tokens=3)
    record = ec.attention(lm, gen)
    assert isinstance(record, ec.Attention)
    return record


def _check_clean(p: Any, name: str) -> None:
    assert p.errors == [], p.errors
    assert p.dialogs == []
    assert len(p.requests) == 1 and p.requests[0].startswith("file://"), p.requests
    p.shot(name)


def _visible_lines(page: Any) -> list[dict[str, str]]:
    return page.eval_on_selector_all(
        "svg.ecco-att-lines line",
        "els => els.filter(e => e.style.display !== 'none').map(e => ({...e.dataset,"
        " opacity: e.getAttribute('stroke-opacity')}))",
    )


def _hover(page: Any, locator: Any) -> None:
    """Move the mouse to the centre of an element's box (SVG text is hit on its whole box)."""
    box = locator.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)


def _positive(weights: np.ndarray) -> list[tuple[int, int, int]]:
    """(head, query, key) of every positive weight of one layer [heads, q, k]."""
    return [tuple(int(x) for x in idx) for idx in np.argwhere(weights > 0)]  # type: ignore[misc]


def test_head_view_lines_hover_layer_and_heads(att, open_html) -> None:
    p = open_html(eh.render(att), "attention_head_view")
    page = p.page
    last = att.weights[-1]
    lines = _visible_lines(page)
    assert sorted((int(x["head"]), int(x["q"]), int(x["k"])) for x in lines) == _positive(last)
    for x in lines:
        weight = last[int(x["head"]), int(x["q"]), int(x["k"])]
        assert float(x["weight"]) == pytest.approx(float(weight), rel=1e-6)
        assert x["opacity"] == f"{weight:.4f}"
    assert page.locator("select.ecco-layer option").all_text_contents() == list(att.layer_labels)
    # hover a query token: only its lines remain, and the note lists its largest weights
    query = 5
    _hover(page, page.locator("text.ecco-att-token[data-side=q]").nth(query))
    shown = _visible_lines(page)
    assert {int(x["q"]) for x in shown} == {query}
    assert len(shown) == int((last[:, query] > 0).sum())
    mean = last[:, query].mean(axis=0)
    top = int(np.argmax(mean))
    note = page.locator(".ecco-attention-note").text_content() or ""
    assert json.dumps(att.key_tokens[top]) in note and f"{mean[top] * 100:.1f}%" in note
    # hover a key token: only the lines into it
    _hover(page, page.locator("text.ecco-att-token[data-side=k]").nth(2))
    assert {int(x["k"]) for x in _visible_lines(page)} == {2}
    page.mouse.move(1, 1)
    assert len(_visible_lines(page)) == len(lines)
    # another layer, then one head switched off
    page.select_option("select.ecco-layer", "0")
    first = _visible_lines(page)
    for x in first[:50]:
        w = att.weights[0, int(x["head"]), int(x["q"]), int(x["k"])]
        assert float(x["weight"]) == pytest.approx(float(w), rel=1e-6)
    page.locator(".ecco-heads button[data-head='1']").click()
    assert {int(x["head"]) for x in _visible_lines(page)} == {0, 2, 3}
    page.locator(".ecco-heads button[data-head='2']").dblclick()
    assert {int(x["head"]) for x in _visible_lines(page)} == {2}
    _check_clean(p, "attention_head_view_after")


def test_grid_of_heads(att, open_html) -> None:
    p = open_html(eh.render(att, mode="grid"), "attention_grid")
    page = p.page
    tiles = page.locator(".ecco-att-tile")
    assert tiles.count() == att.weights.shape[1]
    last = att.weights[-1]
    for h in range(last.shape[0]):
        cells = tiles.nth(h).locator("rect[data-weight]")
        assert cells.count() == int((last[h] > 0).sum())
    cell = tiles.nth(2).locator("rect[data-q='4'][data-k='1']")
    cell.hover()
    note = page.locator(".ecco-attention-note").text_content() or ""
    assert note.startswith("head 2:") and note.endswith(f"{last[2, 4, 1]:.3f}")
    tiles.nth(3).click()  # open head 3 in the head view
    assert {int(x["head"]) for x in _visible_lines(page)} == {3}
    _check_clean(p, "attention_grid_after")


def _hostile_record() -> ec.Attention:
    tokens = ["Hello", HOSTILE, ' <img src=x onerror="alert(2)">', " bye"]
    w = np.tril(np.ones((4, 4)))
    w = w / w.sum(-1, keepdims=True)
    return ec.Attention(
        weights=np.stack([np.stack([w, w])]),
        layers=np.array([0]),
        heads=np.array([0, 1]),
        n_model_heads=2,
        layer_labels=["<b>layer</b> 0"],
        stack="decoder",
        token_ids=np.array([1, 2, 3, 4]),
        tokens=tokens,
        n_input_tokens=3,
        query_start=0,
        key_start=0,
        query_tokens=tokens,
        key_tokens=tokens,
        provenance=fixed_provenance("<script>m</script>", "attention"),
    )


def test_hostile_tokens_are_inert_text(open_html) -> None:
    rec = _hostile_record()
    p = open_html(eh.render(rec), "attention_xss")
    page = p.page
    texts = page.locator("text.ecco-att-token").all_text_contents()
    assert texts[1] == HOSTILE and texts[5] == HOSTILE
    _hover(page, page.locator("text.ecco-att-token[data-side=q]").nth(1))
    assert {int(x["q"]) for x in _visible_lines(page)} == {1}
    page.locator("button[data-mode=grid]").click()
    page.locator(".ecco-att-tile rect[data-weight]").first.hover()
    assert page.locator(".ecco img, .ecco b").count() == 0
    assert page.locator("select.ecco-layer option").all_text_contents() == ["<b>layer</b> 0"]
    _check_clean(p, "attention_xss")


def test_widget_reports_hovered_query(att, open_html) -> None:
    from ecco_adapters.notebook import widget

    w = widget(att)
    state = json.dumps({"record_json": w.record_json, "mode": "minimal", "selected": -1})
    js = (
        javascript()
        .replace("export function", "function")
        .replace("export default", "const widgetModule =")
    )
    page_html = f"""<!DOCTYPE html><html><body><div id="w"></div>
<script type="module">
{js}
const state = {state};
const model = {{
  get: (k) => state[k],
  set: (k, v) => {{ state[k] = v; }},
  save_changes: () => {{}},
  on: () => {{}}, off: () => {{}},
}};
widgetModule.render({{ model, el: document.getElementById("w") }});
window.widgetState = state;
</script></body></html>"""
    p = open_html(page_html, "attention_widget")
    _hover(p.page, p.page.locator("text.ecco-att-token[data-side=q]").nth(7))
    assert p.page.evaluate("window.widgetState.selected") == att.query_start + 7
    _check_clean(p, "attention_widget")
