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
    # The interactive view replaced every static copy.
    assert p.page.locator("[data-ecco-static]").count() == 0
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


def _widget_page(record: Any, mode: str = "minimal") -> str:
    """A page running the anywidget entry point with a stand-in for the notebook's model.

    Every listener added to a DOM node and every ``model.on`` is counted while live, so a test
    can check that the cleanup removes all of them.
    """
    import json

    from ecco_adapters.notebook import widget

    w = widget(record, mode=mode)
    state = json.dumps({"record_json": w.record_json, "mode": mode, "selected": -1})
    js = (
        javascript()
        .replace("export function", "function")
        .replace("export default", "const widgetModule =")
    )
    return f"""<!DOCTYPE html><html><body><div id="w"></div>
<script>
window.live = 0;
window.liveList = () => [...tracked].map((k) => k[0].constructor.name + ":" + k[1]);
const add = EventTarget.prototype.addEventListener;
const remove = EventTarget.prototype.removeEventListener;
const tracked = new Set();
EventTarget.prototype.addEventListener = function (type, fn, options) {{
  // Playwright's own hover checks listen on the window: only the views' nodes count.
  if (this === window) return add.call(this, type, fn, options);
  const key = [this, type, fn];
  tracked.add(key);
  window.live += 1;
  const signal = options && options.signal;
  if (signal) add.call(signal, "abort", () => {{ if (tracked.delete(key)) window.live -= 1; }});
  return add.call(this, type, fn, options);
}};
EventTarget.prototype.removeEventListener = function (type, fn, options) {{
  for (const key of tracked) {{
    if (key[0] === this && key[1] === type && key[2] === fn) {{
      tracked.delete(key);
      window.live -= 1;
    }}
  }}
  return remove.call(this, type, fn, options);
}};
</script>
<script type="module">
{js}
const state = {state};
const handlers = new Map();
const model = {{
  get: (k) => state[k],
  set: (k, v) => {{ state[k] = v; }},
  save_changes: () => {{ window.saved = (window.saved || 0) + 1; }},
  on: (name, fn) => {{ handlers.set(name, [...(handlers.get(name) || []), fn]); }},
  off: (name, fn) => {{ handlers.set(name, (handlers.get(name) || []).filter((f) => f !== fn)); }},
}};
window.fire = (name) => (handlers.get(name) || []).forEach((fn) => fn());
window.modelHandlers = () => [...handlers.values()].reduce((n, list) => n + list.length, 0);
window.cleanup = widgetModule.render({{ model, el: document.getElementById("w") }});
window.widgetState = state;
window.saved = 0;
</script></body></html>"""


@pytest.mark.parametrize("kind", ["Generation", "Attributions", "Factorization"])
def test_widget_selected_stays_minus_one_until_the_user_acts(
    view_records, open_html, kind: str
) -> None:
    rec = view_records[kind]
    p = open_html(_widget_page(rec), f"widget_{kind}")
    page = p.page
    assert page.evaluate("window.widgetState.selected") == -1
    assert page.evaluate("window.saved") == 0  # nothing was sent to Python on render
    if kind == "Factorization":
        page.locator(".ecco-factor-row").nth(1).hover()
        assert page.evaluate("window.widgetState.selected") == 1
    else:
        page.locator(".ecco-output").last.hover()
        expected = rec.n_tokens - 1 if kind == "Generation" else int(rec.target_positions[-1])
        assert page.evaluate("window.widgetState.selected") == expected
    _check_clean(p, f"widget_{kind}")


def test_widget_removes_every_listener_it_adds(view_records, open_html) -> None:
    p = open_html(_widget_page(view_records["Attributions"]), "widget_teardown")
    page = p.page
    first = page.evaluate("window.live")
    assert first > 0 and page.evaluate("window.modelHandlers()") == 2
    page.evaluate("window.fire('change:mode')")  # a re-render tears the old view down
    assert page.evaluate("window.live") == first
    page.locator(".ecco-output").last.hover()
    page.evaluate("window.cleanup()")  # the widget is removed
    assert page.evaluate("window.live") == 0, page.evaluate("window.liveList()")
    assert page.evaluate("window.modelHandlers()") == 0
    _check_clean(p, "widget_teardown")


def test_unconverged_steps_are_marked_in_the_view(view_records, open_html) -> None:
    import attrs
    import numpy as np

    from ecco_core.convergence import unconverged_steps

    rec = view_records["Attributions"]
    values = rec.target_values.astype(np.float64)
    delta = np.where(np.arange(len(values)) % 2 == 0, 0.2 * values, 0.01 * values)
    rec = attrs.evolve(rec, convergence_delta=delta.astype(np.float32))
    flags = unconverged_steps(rec)
    assert 0 < flags.sum() < len(flags)
    p = open_html(eh.render(rec), "unconverged")
    page = p.page
    marked = page.locator(".ecco-unconverged").evaluate_all(
        "els => els.map(e => Number(e.dataset.index))"
    )
    assert marked == [int(pos) for pos, f in zip(rec.target_positions, flags, strict=True) if f]
    warning = page.locator(".ecco-warning").inner_text()
    assert f"Not converged for {int(flags.sum())} of {len(flags)} explained tokens" in warning
    page.locator(".ecco-output").first.hover()
    assert "not converged" in page.locator(".ecco-note").first.inner_text()
    clean = eh.render(view_records["Attributions"])
    if not unconverged_steps(view_records["Attributions"]).any():
        q = open_html(clean, "converged")
        assert q.page.locator(".ecco-unconverged, .ecco-warning").count() == 0
    _check_clean(p, "unconverged")


def test_factor_view_shows_where_each_text_begins(tiny_lm, open_html) -> None:
    import ecco_core as ec

    lm = tiny_lm("gpt2")
    acts = ec.activations(lm, ["the tower is tall", "paris is in france", "hello"])
    fac = ec.factorize(acts, n_components=2, lm=lm)
    p = open_html(eh.render(fac), "factor_texts")
    page = p.page
    breaks = page.locator(".ecco-text-break").all_text_contents()
    assert breaks == ["text 0", "text 1", "text 2"]
    # Each label sits right before the first token of its text.
    firsts = page.locator(".ecco-text-break + .ecco-token").evaluate_all(
        "els => els.map(e => Number(e.dataset.index))"
    )
    sizes = [len(a.tokens) for a in acts]
    assert firsts == [0, sizes[0], sizes[0] + sizes[1]]
    assert page.locator("svg line.ecco-text-boundary").count() == 2 * fac.n_components
    assert "3 texts" in page.locator("h3").inner_text()
    _check_clean(p, "factor_texts")
