"""Every view in a real browser: elements and values, hover, no errors, no network, no XSS."""

from __future__ import annotations

from typing import Any

import pytest

from ecco_adapters import html as eh
from ecco_adapters.html import javascript

pytestmark = pytest.mark.browser


def _shown(token: str) -> str:
    """What the view module displays for a token (newlines as ⏎, controls escaped)."""
    return "".join(
        "\u23ce" if c == "\n" else f"\\x{ord(c):02x}" if ord(c) < 32 or ord(c) == 127 else c
        for c in token
    )


def _percent(p: float) -> str:
    return "100%" if p >= 0.995 else "<0.1%" if p < 0.0005 else f"{p * 100:.1f}%"


def _check_clean(p: Any, name: str) -> None:
    assert p.errors == [], p.errors
    assert all(url.startswith("file://") for url in p.requests), p.requests
    assert len(p.requests) == 1  # the file itself and nothing else
    p.shot(name)


def _styles(page: Any, selector: str) -> list[str]:
    return page.eval_on_selector_all(selector, "els => els.map(e => e.getAttribute('style') || '')")


def test_generation_view(view_records, open_html) -> None:
    gen = view_records["Generation"]
    p = open_html(eh.render(gen), "generation")
    page = p.page
    assert page.locator(".ecco-token").count() == gen.n_tokens
    assert page.locator(".ecco-output").count() == gen.n_generated
    labels = page.locator(".ecco-panel .ecco-bar-label").all_text_contents()
    assert labels[0] == _shown(gen.top_tokens[0][0])
    assert len(labels) == gen.top_ids.shape[1]
    last = page.locator(".ecco-output").last
    last.hover()
    assert "ecco-selected" in (last.get_attribute("class") or "")
    values = page.locator(".ecco-panel .ecco-bar-value").all_text_contents()
    assert values == [_percent(float(v)) for v in gen.top_probs[-1]]
    labels = page.locator(".ecco-panel .ecco-bar-label").all_text_contents()
    assert labels == [_shown(t) for t in gen.top_tokens[-1]]
    _check_clean(p, "generation")


def test_rankings_and_watch_views(view_records, open_html) -> None:
    ranks = view_records["Rankings"]
    p = open_html(eh.render(ranks), "rankings")
    cells = p.page.locator("td").all_text_contents()
    assert [int(c) for c in cells] == ranks.ranks.reshape(-1).tolist()
    assert p.page.locator(".ecco-legend").count() == 1
    _check_clean(p, "rankings")
    watch = view_records["RankingsWatch"]
    p = open_html(eh.render(watch), "watch")
    cells = p.page.locator("td").all_text_contents()
    assert [int(c) for c in cells] == watch.ranks.reshape(-1).tolist()
    _check_clean(p, "rankings_watch")


def test_layer_predictions_view(view_records, open_html) -> None:
    rec = view_records["LayerPredictions"]
    p = open_html(eh.render(rec), "layer_predictions")
    assert p.page.locator("tr").count() == rec.probs.shape[0] + 1
    assert p.page.locator("td").count() == rec.probs.size
    expected_targets = int((rec.token_ids == rec.target_id).sum())
    assert p.page.locator("td.ecco-target").count() == expected_targets
    _check_clean(p, "layer_predictions")


@pytest.mark.parametrize("kind", ["Attributions", "SignedAttributions"])
def test_attribution_views_hover_and_detail(view_records, open_html, kind: str) -> None:
    rec = view_records[kind]
    p = open_html(eh.render(rec), kind)
    page = p.page
    outputs = page.locator(".ecco-output")
    assert outputs.count() == len(rec.target_positions)
    before = _styles(page, ".ecco-token")
    outputs.last.hover()
    after = _styles(page, ".ecco-token")
    assert before != after  # hovering another output token recolours its inputs
    last = int(rec.target_positions[-1])
    coloured = [i for i, s in enumerate(after) if "rgba" in s and not s.endswith("0.000);")]
    assert coloured and max(coloured) < last
    page.locator("button[data-mode=detailed]").click()
    bars = page.locator(".ecco-panel .ecco-bar-value").all_text_contents()
    assert len(bars) == last
    if kind == "SignedAttributions":
        assert (rec.scores[-1, :last] < 0).any() == (page.locator(".ecco-negative").count() > 0)
    _check_clean(p, kind)
    p.shot(f"{kind}_detailed")


def test_factor_view_isolates_a_factor(view_records, open_html) -> None:
    rec = view_records["Factorization"]
    p = open_html(eh.render(rec), "factors")
    page = p.page
    assert page.locator(".ecco-factor-row").count() == rec.n_components
    assert page.locator(".ecco-factor-row svg polyline").count() == rec.n_components
    dominant = _styles(page, ".ecco-token")
    page.locator(".ecco-factor-row").nth(1).hover()
    isolated = _styles(page, ".ecco-token")
    assert dominant != isolated
    assert len(set(s.split(";")[0][:19] for s in isolated)) == 1  # one factor's colour everywhere
    page.locator(".ecco-factor-row").nth(1).click()
    page.mouse.move(0, 0)
    assert "ecco-active" in (page.locator(".ecco-factor-row").nth(1).get_attribute("class") or "")
    _check_clean(p, "factorization")


@pytest.mark.parametrize("kind", ["MaskedPredictions", "Classification", "Activations"])
def test_other_views(view_records, open_html, kind: str) -> None:
    rec = view_records[kind]
    p = open_html(eh.render(rec), kind)
    if kind == "Activations":
        n_layers, _, n_positions = rec.values.shape
        header = p.page.locator("tr").first.locator("th").all_text_contents()
        assert header[1:] == [_shown(t) for t in rec.tokens]
        assert p.page.locator("tr").count() == n_layers + 1
        assert p.page.locator("td").count() == n_layers * n_positions
    else:
        assert p.page.locator(".ecco-token").count() == len(rec.tokens)
    if kind == "Classification":
        values = p.page.locator(".ecco-bar-value").all_text_contents()
        assert values == [
            f"{v * 100:.1f}%" if 0.0005 <= v < 0.995 else values[i] for i, v in enumerate(rec.probs)
        ]
    _check_clean(p, kind)


def test_tokens_are_text_never_html(xss_generation, open_html) -> None:
    p = open_html(eh.render(xss_generation, title="<script>window.__xss=3</script>"), "xss")
    page = p.page
    page.locator(".ecco-output").nth(1).hover()
    assert page.evaluate("window.__xss") is None
    assert p.dialogs == []
    texts = page.locator(".ecco-token").all_text_contents()
    assert texts[1] == "</script><script>window.__xss = 1</script>"
    assert page.locator(".ecco img").count() == 0 and page.locator(".ecco b").count() == 0
    page.locator(".ecco-output").nth(2).hover()
    assert page.locator(".ecco-panel .ecco-bar-label").all_text_contents()[1] == "<b>bold</b>"
    _check_clean(p, "xss")


def test_several_views_in_one_page_do_not_interfere(view_records, open_html) -> None:
    records = list(view_records.values())
    fragments = "".join(eh.fragment(r) for r in records[:3])
    p = open_html(f"<!DOCTYPE html><html><body>{fragments}</body></html>", "fragments")
    assert p.page.locator(".ecco").count() == 3
    gen = view_records["Generation"]
    p.page.locator(".ecco-Generation .ecco-output").last.hover()
    assert p.page.locator(".ecco-Generation .ecco-selected").count() == 1
    assert p.page.locator(".ecco-MaskedPredictions .ecco-selected").count() == 1
    assert gen.n_generated > 1
    _check_clean(p, "fragments")


def test_widget_module_reports_selection(view_records, open_html) -> None:
    """The anywidget entry point, with a stand-in for the notebook's model object."""
    import json

    from ecco_adapters.notebook import widget

    w = widget(view_records["Attributions"])
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
  save_changes: () => {{ window.saved = (window.saved || 0) + 1; }},
  on: () => {{}}, off: () => {{}},
}};
widgetModule.render({{ model, el: document.getElementById("w") }});
window.widgetState = state;
</script></body></html>"""
    p = open_html(page_html, "widget")
    outputs = p.page.locator(".ecco-output")
    outputs.first.hover()
    first = p.page.evaluate("window.widgetState.selected")
    outputs.last.hover()
    last = p.page.evaluate("window.widgetState.selected")
    rec = view_records["Attributions"]
    assert (first, last) == (int(rec.target_positions[0]), int(rec.target_positions[-1]))
    assert p.page.evaluate("window.saved") >= 2
    _check_clean(p, "widget")


def test_dark_theme_keeps_text_readable(view_records, open_html) -> None:
    p = open_html(eh.render([view_records["Generation"], view_records["Rankings"]]), "dark")
    p.page.emulate_media(color_scheme="dark")
    colors = p.page.eval_on_selector(
        ".ecco", "e => [getComputedStyle(e).color, getComputedStyle(e).backgroundColor]"
    )
    assert colors == ["rgb(230, 237, 243)", "rgb(13, 17, 23)"]
    p.page.emulate_media(color_scheme="light")
    light = p.page.eval_on_selector(".ecco", "e => getComputedStyle(e).backgroundColor")
    assert light == "rgb(255, 255, 255)"
    p.page.emulate_media(color_scheme="dark")
    _check_clean(p, "dark_theme")
