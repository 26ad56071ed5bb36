"""Static first: with JavaScript off, every view still shows its tokens and values.

The page is opened in a real Chromium with scripts disabled; the expected texts are computed
here from the record's arrays (the format the views document: probabilities as percentages
with one decimal, scores with 3 decimals below 1).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pytest

import ecco_core as ec
from ecco_adapters import html as eh
from ecco_adapters import notebook

from .conftest import ARTIFACTS

pytestmark = pytest.mark.browser


def _shown(token: str) -> str:
    return "".join(
        "\u23ce"
        if c == "\n"
        else f"\\x{ord(c):02x}"
        if (ord(c) < 32 and c != "\t") or ord(c) == 127
        else c
        for c in token
    )


def _percent(p: float) -> str:
    return "100%" if p >= 0.995 else "<0.1%" if p < 0.0005 else f"{p * 100:.1f}%"


def _score(v: float) -> str:
    a = abs(v)
    if a == 0:
        return "0"
    if a < 0.001:
        m, e = f"{v:.1e}".split("e")
        return f"{m}e{int(e):+d}"
    return f"{v:.0f}" if a >= 100 else f"{v:.2f}" if a >= 1 else f"{v:.3f}"


@pytest.fixture
def open_static(browser: Any, tmp_path: Path) -> Iterator[Any]:
    """Open HTML with JavaScript disabled; returns the page."""
    contexts: list[Any] = []

    def open_(page_html: str, name: str) -> Any:
        path = tmp_path / f"{name}.html"
        path.write_text(page_html, encoding="utf-8")
        context = browser.new_context(
            viewport={"width": 1100, "height": 800}, java_script_enabled=False
        )
        contexts.append(context)
        page = context.new_page()
        page.goto(path.as_uri())
        return page

    yield open_
    for context in contexts:
        context.close()


def _cells(page: Any, row_selector: str = "tr") -> list[list[str]]:
    """Text of every table row's cells (td and th) under the static view."""
    return page.eval_on_selector_all(
        f"[data-ecco-static] {row_selector}",
        "rows => rows.map(r => [...r.children].map(c => c.textContent))",
    )


def _expected(kind: str, rec: Any) -> list[list[Any]]:
    """The table the static view of ``rec`` must show, computed from its arrays."""
    if kind in ("Generation", "MaskedPredictions"):
        positions = (
            range(rec.n_input_tokens, rec.n_tokens) if kind == "Generation" else rec.positions
        )
        rows = [["position", "token", *[f"#{j + 1}" for j in range(rec.top_ids.shape[1])]]]
        for step, pos in enumerate(positions):
            tops = [
                f"{_shown(t)} {_percent(float(p))}"
                for t, p in zip(rec.top_tokens[step], rec.top_probs[step], strict=True)
            ]
            rows.append([str(int(pos)), _shown(rec.tokens[pos]), *tops])
        return rows
    if kind == "Classification":
        return [["label", "probability"]] + [
            [label, _percent(float(p))] for label, p in zip(rec.labels, rec.probs, strict=True)
        ]
    if kind in ("Rankings", "RankingsWatch"):
        columns = rec.tokens if kind == "Rankings" else rec.watch_tokens
        return [["", *map(_shown, columns)]] + [
            [label, *[str(int(r)) for r in rec.ranks[i]]]
            for i, label in enumerate(rec.layer_labels)
        ]
    if kind == "LayerPredictions":
        return [["", *[f"#{j + 1}" for j in range(rec.probs.shape[1])]]] + [
            [
                label,
                *[
                    f"{_shown(t)} {_percent(float(p))}"
                    for t, p in zip(rec.tokens[i], rec.probs[i], strict=True)
                ],
            ]
            for i, label in enumerate(rec.layer_labels)
        ]
    if kind in ("Attributions", "SignedAttributions", "Unconverged"):
        last = int(rec.target_positions.max())
        head = ["", rec.target]
        head += ["completeness delta"] if rec.convergence_delta.size else []
        rows = [[*head, *map(_shown, rec.tokens[:last])]]
        tolerance = 0.05 * np.maximum(np.abs(rec.target_values), 1e-9)
        for step, pos in enumerate(rec.target_positions):
            row = [_shown(rec.tokens[pos]), _score(float(rec.target_values[step]))]
            if rec.convergence_delta.size:
                delta = float(rec.convergence_delta[step])
                flag = " ⚠ not converged" if abs(delta) > tolerance[step] else ""
                row.append(_score(delta) + flag)
            row += [
                _score(float(v)) if j < pos else "" for j, v in enumerate(rec.scores[step][:last])
            ]
            rows.append(row)
        return rows
    if kind == "Factorization":
        return [["", *map(_shown, rec.tokens)]] + [
            [None, *[_score(float(v)) for v in rec.token_factors[c]]]  # label checked apart
            for c in range(rec.n_components)
        ]
    if kind == "Activations":
        norms = np.linalg.norm(rec.values.astype(np.float64), axis=1)
        return [["", *map(_shown, rec.tokens)]] + [
            [label, *[_score(float(v)) for v in norms[i]]]
            for i, label in enumerate(rec.layer_labels)
        ]
    raise AssertionError(kind)


def _unconverged(rec: ec.Attributions) -> ec.Attributions:
    """``rec`` with a completeness gap of 10% of the value on every other step."""
    values = rec.target_values.astype(np.float64)
    delta = np.where(np.arange(len(values)) % 2 == 0, 0.1 * values, 0.001 * values)
    return attrs.evolve(rec, convergence_delta=delta.astype(np.float32))


KINDS = [
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
]


@pytest.mark.parametrize("kind", [*KINDS, "Unconverged"])
def test_every_view_shows_tokens_and_values_without_javascript(
    view_records, open_static, kind: str
) -> None:
    rec = view_records["Attributions"] if kind == "Unconverged" else view_records[kind]
    if kind == "Unconverged":
        rec = _unconverged(rec)
    page = open_static(eh.render(rec), kind)
    assert page.locator("[data-ecco-static]").count() == 1
    assert page.locator(".ecco").count() == 0  # nothing interactive was built
    rows: list[list[Any]] = _cells(page)
    expected = _expected(kind, rec)
    if kind == "Factorization":
        rows = [[None, *r[1:]] if i else r for i, r in enumerate(rows)]
    assert rows == expected
    text = page.locator("[data-ecco-static]").inner_text()
    tokens = getattr(rec, "tokens", None)
    if tokens is not None and kind != "LayerPredictions":
        for token in tokens:
            assert _shown(token).strip() in text
    if kind == "Unconverged":
        n_flagged = sum("not converged" in r[2] for r in rows[1:])
        assert n_flagged == (len(rec.target_values) + 1) // 2
        assert f"{n_flagged} of {len(rec.target_values)} rows" in text
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"static_{kind}.png"), full_page=True)


def test_static_view_is_readable_without_any_styles(view_records, open_static) -> None:
    """Stripped of every style (as some sanitizers do), the numbers are still in the text."""
    rec = view_records["Rankings"]
    unstyled = (
        "<style>[data-ecco-static] * { all: unset !important; display: inline !important }</style>"
    )
    page = open_static(eh.render(rec).replace("</head>", f"{unstyled}</head>"), "unstyled")
    text = page.locator("[data-ecco-static]").inner_text()
    assert all(str(int(r)) in text for r in rec.ranks.reshape(-1))
    assert all(label in text for label in rec.layer_labels)


def test_notebook_output_carries_the_static_view(view_records, open_static) -> None:
    gen = view_records["Generation"]
    bundle = notebook.mimebundle(gen)
    page = open_static(f"<!DOCTYPE html><html><body>{bundle['text/html']}</body></html>", "nb")
    assert _cells(page) == _expected("Generation", gen)


def test_multi_text_factors_show_text_boundaries_without_javascript(tiny_lm, open_static) -> None:
    lm = tiny_lm("gpt2")
    acts = ec.activations(lm, ["the tower is tall", "paris is in france", "hello"])
    fac = ec.factorize(acts, n_components=2, lm=lm)
    page = open_static(eh.render(fac), "factor_texts")
    text = page.locator("[data-ecco-static]").inner_text()
    assert "text 0:" in text and "text 1:" in text and "text 2:" in text
    assert "3 texts" in text
    header = _cells(page)[0]
    assert header[1:] == [_shown(t) for t in fac.tokens]
