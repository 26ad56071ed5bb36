"""Server-rendered static views: each record as plain HTML with inline styles.

Every view's HTML carries this version inside its container; the view module replaces it with
the interactive view when scripts run. Where they do not (an untrusted notebook in JupyterLab,
GitHub's and nbviewer's renderers, a browser with JavaScript off, an e-mail client) the static
version is what the reader sees: tokens, values and colours, with every number written in the
text so that it still reads when styles are stripped too.

:func:`static_view` is the one entry point; one function per record kind does the work.
Numbers are formatted as the view module formats them (:func:`percent`, :func:`fixed`).
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ecco_core.convergence import unconverged_steps
from ecco_core.records import (
    Activations,
    Attributions,
    Classification,
    Factorization,
    Generation,
    LayerPredictions,
    MaskedPredictions,
    Rankings,
    RankingsWatch,
    Record,
)

__all__ = ["fixed", "percent", "show", "static_view"]

# The light palette of ecco.css, spelled out: no stylesheet is needed.
FG, MUTED, BORDER, PANEL = "#1f2328", "#57606a", "#d0d7de", "#f5f6f8"
POS, NEG, SELECT, WARN = (37, 99, 235), (234, 88, 12), "#b45309", "#b42318"
PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)
BOX = (
    f"font:14px/1.5 system-ui,sans-serif;color:{FG};background:#ffffff;"
    f"border:1px solid {BORDER};border-radius:6px;padding:8px 10px;margin:6px 0;overflow-x:auto"
)
TABLE = "border-collapse:collapse;font-size:12px;margin:4px 0"
CELL = f"border:1px solid {BORDER};padding:2px 6px;text-align:center;white-space:pre"
HEAD = f"color:{MUTED};font-weight:500;padding:2px 6px;white-space:pre"
TOKEN = "white-space:pre;border-radius:3px;padding:1px 1px"


def show(token: str) -> str:
    """A token as the views display it: newlines as ⏎, other control characters as ``\\xNN``."""
    return "".join(
        "\u23ce"
        if c == "\n"
        else f"\\x{ord(c):02x}"
        if (ord(c) < 32 and c != "\t") or ord(c) == 127
        else c
        for c in str(token)
    )


def percent(p: float) -> str:
    """A probability as the views write it (``43.1%``, ``<0.1%``, ``100%``)."""
    return "100%" if p >= 0.995 else "<0.1%" if p < 0.0005 else f"{p * 100:.1f}%"


def fixed(v: float) -> str:
    """A score as the views write it: 3 decimals below 1, 2 up to 100, exponent below 0.001."""
    a = abs(v)
    if a == 0:
        return "0"
    if a < 0.001:
        mantissa, exponent = f"{v:.1e}".split("e")
        return f"{mantissa}e{int(exponent):+d}"
    return f"{v:.0f}" if a >= 100 else f"{v:.2f}" if a >= 1 else f"{v:.3f}"


def _text(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _token(token: str, style: str = "", title: str = "") -> str:
    extra = f' title="{_text(title)}"' if title else ""
    return f'<span style="{TOKEN};{style}"{extra}>{_text(show(token))}</span>'


def _shade(value: float, largest: float, negative: bool = False) -> str:
    alpha = min(1.0, abs(value) / largest) if largest > 0 else 0.0
    r, g, b = NEG if negative else POS
    # Text stays dark on light shades and turns white on the darkest ones.
    colour = "#ffffff" if alpha > 0.6 else FG
    return f"background:rgba({r},{g},{b},{0.85 * alpha:.3f});color:{colour}"


def _heading(text: str) -> str:
    return f'<div style="font-weight:600;font-size:15px;margin:0 0 4px">{_text(text)}</div>'


def _note(text: str) -> str:
    return f'<div style="color:{MUTED};font-size:12px;margin:4px 0">{_text(text)}</div>'


def _row(cells: Sequence[str]) -> str:
    return "<tr>" + "".join(cells) + "</tr>"


def _th(text: str, style: str = "") -> str:
    return f'<th style="{HEAD};{style}">{_text(show(text))}</th>'


def _td(text: str, style: str = "", title: str = "") -> str:
    extra = f' title="{_text(title)}"' if title else ""
    return f'<td style="{CELL};{style}"{extra}>{_text(text)}</td>'


def _table(rows: Sequence[str]) -> str:
    return f'<table style="{TABLE}">' + "".join(rows) + "</table>"


def _tokens_line(tokens: Sequence[str], marked: set[int]) -> str:
    """The text as tokens, the ``marked`` ones (generated or masked) underlined."""
    spans = [
        _token(t, f"border-bottom:2px solid rgb{POS}" if i in marked else "")
        for i, t in enumerate(tokens)
    ]
    return f'<div style="line-height:2;margin:4px 0">{"".join(spans)}</div>'


def _predictions_table(
    tokens: Sequence[str],
    positions: Sequence[int],
    top_tokens: Sequence[Sequence[str]],
    top_probs: np.ndarray,
) -> str:
    k = top_probs.shape[1] if top_probs.ndim == 2 else 0
    rows = [_row([_th("position"), _th("token"), *[_th(f"#{j + 1}") for j in range(k)]])]
    for step, position in enumerate(positions):
        cells = [_td(str(position)), _td(show(tokens[position]), "font-weight:600")]
        for j in range(k):
            p = float(top_probs[step, j])
            cells.append(_td(f"{show(top_tokens[step][j])} {percent(p)}", _shade(p, 1.0)))
        rows.append(_row(cells))
    return _table(rows)


def _generation(rec: Generation) -> str:
    positions = list(range(rec.n_input_tokens, rec.n_tokens))
    return (
        _heading("Predicted tokens")
        + _tokens_line(rec.tokens, set(positions))
        + _note("Top predictions of the model at each generated position (underlined above):")
        + _predictions_table(rec.tokens, positions, rec.top_tokens, rec.top_probs)
    )


def _masked(rec: MaskedPredictions) -> str:
    positions = [int(p) for p in rec.positions]
    return (
        _heading("Masked predictions")
        + _tokens_line(rec.tokens, set(positions))
        + _note("Top fillers of each mask (underlined above):")
        + _predictions_table(rec.tokens, positions, rec.top_tokens, rec.top_probs)
    )


def _classification(rec: Classification) -> str:
    rows = [_row([_th("label"), _th("probability")])]
    for label, p in zip(rec.labels, rec.probs, strict=True):
        rows.append(_row([_td(label, "text-align:left"), _td(percent(float(p)), _shade(p, 1.0))]))
    return _heading("Classification") + _tokens_line(rec.tokens, set()) + _table(rows)


def _rank_table(labels: Sequence[str], columns: Sequence[str], ranks: np.ndarray) -> str:
    log_max = float(np.log(max(2, int(ranks.max(initial=1)))))
    rows = [_row([_th(""), *[_th(c) for c in columns]])]
    for layer, label in enumerate(labels):
        cells = [_th(label, "text-align:right")]
        for j, column in enumerate(columns):
            rank = int(ranks[layer, j])
            strength = 1 - float(np.log(rank)) / log_max
            cells.append(_td(str(rank), _shade(strength, 1.0), f"{label}, {column}: rank {rank}"))
        rows.append(_row(cells))
    return _table(rows)


def _rankings(rec: Rankings) -> str:
    return (
        _heading("Rank of each generated token at every layer")
        + _note(
            f"Logit lens, norm={rec.norm}. Rank 1 means the layer's top prediction is the token "
            "the model produced; darker is a better rank (log scale)."
        )
        + _rank_table(rec.layer_labels, rec.tokens, rec.ranks)
    )


def _watch(rec: RankingsWatch) -> str:
    context = "".join(rec.sequence_tokens[: rec.position])[-80:]
    return (
        _heading(f"Ranks of watched tokens at position {rec.position}")
        + _note(show(f"…{context}"))
        + _rank_table(rec.layer_labels, rec.watch_tokens, rec.ranks)
    )


def _layer_predictions(rec: LayerPredictions) -> str:
    k = rec.probs.shape[1]
    rows = [_row([_th(""), *[_th(f"#{j + 1}") for j in range(k)]])]
    for layer, label in enumerate(rec.layer_labels):
        cells = [_th(label, "text-align:right")]
        for j in range(k):
            p = float(rec.probs[layer, j])
            target = int(rec.token_ids[layer, j]) == rec.target_id
            style = _shade(p, 1.0) + (
                f";font-weight:700;outline:2px solid {SELECT}" if target else ""
            )
            text = f"{show(rec.tokens[layer][j])} {percent(p)}"
            cells.append(_td(text, style))
        rows.append(_row(cells))
    return (
        _heading(f"Layer predictions at position {rec.position}")
        + _note(
            f"Actual token: {show(rec.target_token)} (bold where it appears); logit lens, "
            f"norm={rec.norm}."
        )
        + _table(rows)
    )


def _attributions(rec: Attributions) -> str:
    signed = rec.aggregation in ("sum", "none")
    flags = unconverged_steps(rec)
    positions = [int(p) for p in rec.target_positions]
    width = max([p for p in positions if p >= 0], default=rec.scores.shape[1])
    if -1 in positions:
        width = rec.scores.shape[1]
    # The explained value and the completeness delta come first: long rows scroll.
    columns = [_th(""), _th(rec.target)]
    if rec.convergence_delta.size:
        columns.append(_th("completeness delta"))
    columns += [_th(t) for t in rec.tokens[:width]]
    rows = [_row(columns)]
    for step, position in enumerate(positions):
        scores = rec.scores[step]
        largest = float(np.abs(scores).max(initial=0.0))
        label = rec.tokens[position] if position >= 0 else f"class {rec.target_ids[step]}"
        cells = [_th(label, "text-align:right;font-weight:600")]
        cells.append(_td(fixed(float(rec.target_values[step]))))
        if rec.convergence_delta.size:
            delta = fixed(float(rec.convergence_delta[step]))
            if flags[step]:
                cells.append(_td(f"{delta} ⚠ not converged", f"color:{WARN};font-weight:700"))
            else:
                cells.append(_td(delta))
        for j in range(width):
            v = float(scores[j])
            beyond = position >= 0 and j >= position
            cells.append(
                _td("" if beyond else fixed(v), "" if beyond else _shade(v, largest, v < 0))
            )
        rows.append(_row(cells))
    notes = [
        f"{rec.method}, {rec.aggregation} aggregation, baseline {rec.baseline}: one row per "
        "explained token, one column per input token"
        + (" (negative scores in orange)." if signed else ".")
    ]
    if flags.any():
        notes.append(
            f"⚠ {int(flags.sum())} of {len(flags)} rows have a completeness delta above 5% of "
            "the explained value: the scores have not converged (try more n_steps or another "
            "baseline)."
        )
    return _heading("Input attributions") + "".join(_note(n) for n in notes) + _table(rows)


def _text_starts(text_index: np.ndarray) -> list[int]:
    """Positions where a new text begins (after the first)."""
    return [j for j in range(1, len(text_index)) if text_index[j] != text_index[j - 1]]


def _factorization(rec: Factorization) -> str:
    factors = rec.token_factors
    k, n = factors.shape
    largest = np.maximum(factors.max(axis=1, initial=0.0), 1e-12)
    dominant = np.argmax(factors / largest[:, None], axis=0) if k else np.zeros(n, int)
    starts = set(_text_starts(rec.text_index))
    several = bool(starts)
    spans = []
    for j, token in enumerate(rec.tokens):
        if (j == 0 and several) or j in starts:
            if j:
                spans.append("<br>")
            spans.append(
                f'<span style="color:{MUTED};font-size:12px">text {int(rec.text_index[j])}: </span>'
            )
        c = int(dominant[j])
        alpha = round(200 * float(factors[c, j] / largest[c]))
        colour = f"{PALETTE[c % len(PALETTE)]}{alpha:02x}"
        spans.append(_token(token, f"background:{colour}", f"factor {c}: {fixed(factors[c, j])}"))
    boundary = f";border-left:3px solid {MUTED}"
    header = [_th("")]
    for j, token in enumerate(rec.tokens):
        header.append(_th(token, boundary if j in starts else ""))
    rows = [_row(header)]
    for c in range(k):
        swatch = f'<span style="color:{PALETTE[c % len(PALETTE)]}">■</span>'
        promoted = " ".join(repr(t) for t in rec.promoted_tokens[c][:5])
        label = f"factor {c}" + (f" (promotes {promoted})" if promoted else "")
        cells = [f'<th style="{HEAD};text-align:left">{swatch} {_text(show(label))}</th>']
        for j in range(n):
            v = float(factors[c, j])
            style = _shade(v, float(largest[c])) + (boundary if j in starts else "")
            cells.append(_td(fixed(v), style))
        rows.append(_row(cells))
    texts = f", {int(rec.text_index.max()) + 1} texts" if several else ""
    return (
        _heading(f"Neuron factors (NMF, {k} components, {len(rec.layer_labels)} layers{texts})")
        + _note("Tokens coloured by their dominant factor; the table gives each factor's value.")
        + f'<div style="line-height:2;margin:4px 0">{"".join(spans)}</div>'
        + _table(rows)
    )


def _activations(rec: Activations) -> str:
    norms = np.sqrt(np.square(rec.values.astype(np.float64)).sum(axis=1))  # [layers, positions]
    largest = float(norms.max(initial=0.0))
    rows = [_row([_th(""), *[_th(t) for t in rec.tokens]])]
    for layer, label in enumerate(rec.layer_labels):
        cells = [_th(label, "text-align:right")]
        cells += [_td(fixed(float(v)), _shade(float(v), largest)) for v in norms[layer]]
        rows.append(_row(cells))
    return _heading(f"FFN activations ({rec.stack}): norm per layer and position") + _table(rows)


VIEWS: dict[type[Record], Callable[[Any], str]] = {
    Generation: _generation,
    MaskedPredictions: _masked,
    Classification: _classification,
    Rankings: _rankings,
    RankingsWatch: _watch,
    LayerPredictions: _layer_predictions,
    Attributions: _attributions,
    Factorization: _factorization,
    Activations: _activations,
}


def static_view(record: Record) -> str:
    """The record as static HTML (one ``div``), readable without scripts or stylesheets."""
    view = VIEWS.get(type(record))
    body = view(record) if view else _note(f"No view for records of kind {type(record).KIND}.")
    return (
        f'<div class="ecco-static" data-ecco-static="{_text(type(record).KIND)}" '
        f'style="{BOX}">{body}'
        + _note(
            "Static copy: the interactive view needs scripts (run the cell, trust the notebook, "
            "or open the page in a browser with JavaScript)."
        )
        + "</div>"
    )
