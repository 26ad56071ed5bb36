"""Vega-Lite specs for ecco-core records, for use in other dashboards.

``spec(record)`` returns a plain dict (tidy long-form data inline, ``$schema`` pinned to the
Vega-Lite version of the installed altair); ``chart(record)`` wraps it as an ``altair.Chart``.
Output is deterministic. ``save(record, path)`` exports offline through vl-convert by suffix:
``.svg``, ``.png``, ``.html`` (with Vega bundled inline) or ``.json`` (the spec).
"""

from __future__ import annotations

import json
import os
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ecco_core.records import (
    Activations,
    Attention,
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
from ecco_core.serialization import write_bytes_atomic, write_text_atomic

__all__ = ["chart", "save", "schema_url", "spec"]


def schema_url() -> str:
    """The ``$schema`` of the Vega-Lite version bundled with the installed altair."""
    import altair as alt

    return str(alt.SCHEMA_URL)


def _text(token: str) -> str:
    """A token as visible text: newlines as ⏎, other control characters escaped.

    (Control characters are also what makes vl-convert's SVG text renderer abort.)
    """
    return "".join(
        "⏎" if ch == "\n" else f"\\x{ord(ch):02x}" if unicodedata.category(ch) == "Cc" else ch
        for ch in token
    )


def _label(index: int, token: str) -> str:
    """Unique axis label for a token at ``index`` (tokens repeat; indices do not)."""
    return f"{index}: '{_text(token)}'"[:40]


def _base(title: str, rows: list[dict[str, Any]], **rest: Any) -> dict[str, Any]:
    return {
        "$schema": schema_url(),
        "title": title,
        "data": {"values": rows},
        "config": {"view": {"stroke": None}},
        **rest,
    }


def _predictions(rec: Generation | MaskedPredictions, positions: list[int]) -> dict[str, Any]:
    rows = [
        {
            "step": _label(p, rec.tokens[p]),
            "candidate": _text(token),
            "rank": k + 1,
            "probability": round(float(rec.top_probs[i, k]), 6),
        }
        for i, p in enumerate(positions)
        for k, token in enumerate(rec.top_tokens[i])
    ]
    return _base(
        "Top predictions per step",
        rows,
        mark={"type": "bar"},
        encoding={
            "row": {"field": "step", "type": "ordinal", "sort": None, "title": None},
            "y": {
                "field": "candidate",
                "type": "nominal",
                "sort": {"field": "rank"},
                "title": None,
            },
            "x": {"field": "probability", "type": "quantitative", "axis": {"format": ".0%"}},
            "tooltip": [{"field": "candidate"}, {"field": "probability", "format": ".2%"}],
        },
        resolve={"scale": {"y": "independent"}},
    )


def _generation(rec: Generation) -> dict[str, Any]:
    return _predictions(rec, list(range(rec.n_input_tokens, rec.n_tokens)))


def _masked(rec: MaskedPredictions) -> dict[str, Any]:
    return _predictions(rec, [int(p) for p in rec.positions])


def _heatmap(
    title: str,
    rows: list[dict[str, Any]],
    x: str,
    y: str,
    value: str,
    scale: dict[str, Any],
    text: str | None = None,
) -> dict[str, Any]:
    rect = {
        "mark": {"type": "rect"},
        "encoding": {
            "color": {"field": value, "type": "quantitative", "scale": scale},
            "tooltip": [{"field": x}, {"field": y}, {"field": value}],
        },
    }
    layers: list[dict[str, Any]] = [rect]
    if text:
        layers.append(
            {
                "mark": {"type": "text", "fontSize": 9},
                "encoding": {"text": {"field": text, "type": "nominal"}},
            }
        )
    return _base(
        title,
        rows,
        encoding={
            "x": {"field": x, "type": "ordinal", "sort": None, "title": None},
            "y": {"field": y, "type": "ordinal", "sort": None, "title": None},
        },
        layer=layers,
    )


def _rank_rows(labels: Any, columns: list[str], ranks: np.ndarray) -> list[dict[str, Any]]:
    return [
        {"layer": labels[i], "token": columns[j], "rank": int(ranks[i, j])}
        for i in range(ranks.shape[0])
        for j in range(ranks.shape[1])
    ]


def _rankings(rec: Rankings) -> dict[str, Any]:
    columns = [_label(int(p), t) for p, t in zip(rec.positions, rec.tokens, strict=True)]
    return _heatmap(
        f"Rank of each generated token per layer (norm={rec.norm})",
        _rank_rows(rec.layer_labels, columns, rec.ranks),
        "token",
        "layer",
        "rank",
        {"type": "log", "scheme": "blues", "reverse": True},
        text="rank",
    )


def _watch(rec: RankingsWatch) -> dict[str, Any]:
    rows = _rank_rows(rec.layer_labels, [_text(t) for t in rec.watch_tokens], rec.ranks)
    return _base(
        f"Ranks of watched tokens at position {rec.position} (norm={rec.norm})",
        rows,
        mark={"type": "line", "point": True},
        encoding={
            "x": {"field": "layer", "type": "ordinal", "sort": None},
            "y": {
                "field": "rank",
                "type": "quantitative",
                "scale": {"type": "log", "reverse": True},
            },
            "color": {"field": "token", "type": "nominal", "title": "watched token"},
            "tooltip": [{"field": "token"}, {"field": "layer"}, {"field": "rank"}],
        },
    )


def _layer_predictions(rec: LayerPredictions) -> dict[str, Any]:
    rows = [
        {
            "layer": rec.layer_labels[i],
            "rank": k + 1,
            "token": _text(rec.tokens[i][k]),
            "probability": round(float(rec.probs[i, k]), 6),
        }
        for i in range(rec.probs.shape[0])
        for k in range(rec.probs.shape[1])
    ]
    return _heatmap(
        f"Layer predictions at position {rec.position} (norm={rec.norm})",
        rows,
        "rank",
        "layer",
        "probability",
        {"scheme": "blues", "domain": [0, 1]},
        text="token",
    )


def _attributions(rec: Attributions) -> dict[str, Any]:
    rows = [
        {
            "output": _label(int(p), rec.tokens[int(p)] if p >= 0 else "class"),
            "input": _label(j, rec.tokens[j]),
            "score": round(float(rec.scores[i, j]), 6),
        }
        for i, p in enumerate(rec.target_positions)
        for j in range(rec.scores.shape[1])
        if rec.scores[i, j] != 0 or j < (int(p) if p >= 0 else rec.scores.shape[1])
    ]
    signed = rec.aggregation in ("sum", "none")
    scale = {"scheme": "redblue", "domainMid": 0} if signed else {"scheme": "blues"}
    return _heatmap(
        f"Attributions ({rec.method}, {rec.target})", rows, "input", "output", "score", scale
    )


def _factorization(rec: Factorization) -> dict[str, Any]:
    rows = [
        {
            "factor": f"factor {c}",
            "position": _label(j, rec.tokens[j]),
            "activation": round(float(rec.token_factors[c, j]), 6),
        }
        for c in range(rec.n_components)
        for j in range(rec.token_factors.shape[1])
    ]
    return _base(
        f"NMF factors over tokens ({rec.n_components} components)",
        rows,
        mark={"type": "line"},
        encoding={
            "x": {"field": "position", "type": "ordinal", "sort": None, "title": None},
            "y": {"field": "activation", "type": "quantitative"},
            "color": {"field": "factor", "type": "nominal"},
            "tooltip": [{"field": "factor"}, {"field": "position"}, {"field": "activation"}],
        },
    )


def _classification(rec: Classification) -> dict[str, Any]:
    rows = [
        {"label": label, "probability": round(float(p), 6)}
        for label, p in zip(rec.labels, rec.probs, strict=True)
    ]
    return _base(
        "Class probabilities",
        rows,
        mark={"type": "bar"},
        encoding={
            "y": {"field": "label", "type": "nominal", "sort": None},
            "x": {"field": "probability", "type": "quantitative"},
        },
    )


def _activations(rec: Activations) -> dict[str, Any]:
    norms = np.linalg.norm(rec.values.astype(np.float64), axis=1)  # [layers, positions]
    rows = [
        {
            "layer": rec.layer_labels[i],
            "position": _label(j, rec.tokens[j]),
            "norm": round(float(norms[i, j]), 6),
        }
        for i in range(norms.shape[0])
        for j in range(norms.shape[1])
    ]
    return _heatmap(
        f"FFN activation norm ({rec.stack})", rows, "position", "layer", "norm", {"scheme": "blues"}
    )


def _attention(rec: Attention) -> dict[str, Any]:
    """Per-head heatmaps (query rows x key columns) of one layer, a select input for the layer."""
    labels = list(rec.layer_labels)
    queries = [_label(rec.query_start + i, t) for i, t in enumerate(rec.query_tokens)]
    keys = [_label(rec.key_start + j, t) for j, t in enumerate(rec.key_tokens)]
    weights = rec.weights
    rows = [
        {
            "layer": labels[li],
            "head": f"head {int(head)}",
            "query": queries[i],
            "key": keys[j],
            "weight": round(float(weights[li, hi, i, j]), 6),
        }
        for li in range(weights.shape[0])
        for hi, head in enumerate(rec.heads)
        for i in range(weights.shape[2])
        for j in range(weights.shape[3])
        if weights[li, hi, i, j] > 0
    ]
    size = max(80, min(240, 12 * max(len(queries), len(keys))))
    return _base(
        f"Attention weights ({rec.stack}), one heatmap per head",
        rows,
        params=[
            {
                "name": "layer",
                "value": labels[-1],
                "bind": {"input": "select", "options": labels, "name": "layer "},
            }
        ],
        transform=[{"filter": "datum.layer === layer"}],
        facet={"field": "head", "type": "ordinal", "sort": None, "title": None},
        columns=4,
        spec={
            "width": size,
            "height": size,
            "mark": {"type": "rect"},
            "encoding": {
                "x": {"field": "key", "type": "ordinal", "sort": keys, "title": "key"},
                "y": {"field": "query", "type": "ordinal", "sort": queries, "title": "query"},
                "color": {
                    "field": "weight",
                    "type": "quantitative",
                    "scale": {"scheme": "blues", "domain": [0, 1]},
                },
                "tooltip": [
                    {"field": "layer"},
                    {"field": "head"},
                    {"field": "query"},
                    {"field": "key"},
                    {"field": "weight", "format": ".3f"},
                ],
            },
        },
    )


SPECS: dict[type, Callable[[Any], dict[str, Any]]] = {
    Generation: _generation,
    MaskedPredictions: _masked,
    Rankings: _rankings,
    RankingsWatch: _watch,
    LayerPredictions: _layer_predictions,
    Attributions: _attributions,
    Factorization: _factorization,
    Classification: _classification,
    Activations: _activations,
    Attention: _attention,
}


def spec(record: Record) -> dict[str, Any]:
    """The Vega-Lite spec (a plain dict) of ``record``."""
    builder = SPECS.get(type(record))
    if builder is None:
        kinds = ", ".join(sorted(t.__name__ for t in SPECS))
        raise TypeError(f"no Vega-Lite spec for {type(record).__name__}; specs exist for {kinds}")
    return builder(record)


def chart(record: Record) -> Any:
    """The spec of ``record`` as an ``altair.Chart`` (validated by altair)."""
    import altair as alt

    return alt.Chart.from_dict(spec(record))


def save(record: Record, path: str | os.PathLike[str]) -> Path:
    """Export offline by suffix: .svg, .png, .html (Vega bundled inline) or .json."""
    import vl_convert as vlc

    target = Path(path)
    the_spec = spec(record)
    suffix = target.suffix.lower()
    if suffix == ".json":
        write_text_atomic(target, json.dumps(the_spec, sort_keys=True, indent=1))
    elif suffix == ".svg":
        write_text_atomic(target, vlc.vegalite_to_svg(the_spec))
    elif suffix == ".html":
        write_text_atomic(target, vlc.vegalite_to_html(the_spec, bundle=True))
    elif suffix == ".png":
        write_bytes_atomic(target, vlc.vegalite_to_png(the_spec, scale=2))
    else:
        raise ValueError(f"unknown export suffix {suffix!r}; use .svg, .png, .html or .json")
    return target
