"""``report.html`` of a corpus run: one self-contained page, offline, no JavaScript.

It summarizes the tables in the output folder: a histogram of prediction depth (the first
layer from which the first generated token stays rank 1), rank-by-layer curves (median and
quartiles over the corpus), the input tokens with the highest mean attribution, and the
prompts where the model was least sure of its first token. The charts are Vega-Lite specs
rendered to inline SVG by vl-convert. Every figure is computed by streaming the Parquet parts
(counts, sums and a small heap), so the report's memory does not grow with the corpus.
"""

from __future__ import annotations

import heapq
import html
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import attrs
import pyarrow.compute as pc
import pyarrow.dataset as ds

from ..vega import _text as visible
from ..vega import schema_url
from . import store

LEAST_SURE = 15  # prompts listed in the "least sure" table
TOP_TOKENS = 15  # tokens per attribution method
MIN_COUNT = 3  # occurrences a token needs before its mean attribution is listed


TOP_NEURONS = 8  # neurons listed per factor in the factor explorer


@attrs.frozen
class FactorView:
    """One factor of the corpus factor explorer.

    Attributes
    ----------
    factor : its index; neurons : [(layer, neuron, loading)] highest loading first.
    promoted : tokens its neurons promote through the unembedding.
    examples : [(prompt_id, activation, context tokens, their activations, index of the
        example among them)] strongest first.
    """

    factor: int
    neurons: list[tuple[int, int, float]]
    promoted: list[str]
    examples: list[tuple[Any, float, list[str], list[float], int]]


def _factors(out: Path) -> list[FactorView]:
    """The explorer's factors from factor_loadings, factor_tokens and factor_examples."""
    top: dict[int, list[tuple[float, int, int]]] = defaultdict(list)
    for batch in _scan(out, "factor_loadings", ["factor", "layer", "neuron", "loading"]):
        for f, layer, neuron, loading in zip(*batch.to_pydict().values(), strict=True):
            heap = top[f]
            item = (float(loading), -int(layer), -int(neuron))
            if len(heap) < TOP_NEURONS:
                heapq.heappush(heap, item)
            else:
                heapq.heappushpop(heap, item)
    promoted: dict[int, list[str]] = defaultdict(list)
    for batch in _scan(out, "factor_tokens", ["factor", "rank", "token"]):
        for f, _, token in sorted(zip(*batch.to_pydict().values(), strict=True)):
            promoted[f].append(token)
    examples: dict[int, list[Any]] = defaultdict(list)
    columns = ["factor", "rank", "prompt_id", "activation", "context_tokens"]
    columns += ["context_activations", "context_index"]
    folder = out / "factor_examples"
    parts = sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []
    if parts and "context_tokens" in ds.dataset(parts, format="parquet").schema.names:
        for batch in _scan(out, "factor_examples", columns):
            for row in batch.to_pylist():
                examples[row["factor"]].append(row)
    views = []
    for f in sorted(top):
        rows = sorted(examples[f], key=lambda r: r["rank"])
        views.append(
            FactorView(
                factor=f,
                neurons=[(-lay, -neu, load) for load, lay, neu in sorted(top[f], reverse=True)],
                promoted=promoted[f],
                examples=[
                    (
                        r["prompt_id"],
                        float(r["activation"]),
                        list(r["context_tokens"]),
                        [float(a) for a in r["context_activations"]],
                        int(r["context_index"]),
                    )
                    for r in rows
                ],
            )
        )
    return views


@attrs.frozen
class Summary:
    """What the report shows (small, whatever the size of the corpus).

    Attributes
    ----------
    manifest : the run's manifest.json (model, options, rows).
    depth : {first-token depth (None: not rank 1 at the last layer): prompts}.
    rank_quartiles : [(layer, q25, median, q75)] of the first generated token's rank.
    attributions : {method: [(token, mean score, occurrences)]} highest mean first.
    least_sure : [(prob, prompt_id, prompt, token, [(candidate, prob)], depth)] lowest first.
    errors : {stage: prompts}; error_examples : [(prompt_id, stage, message)].
    n_prompts : prompts that generated.
    factors : one :class:`FactorView` per neuron factor (``neurons`` analysis), else empty.
    """

    manifest: dict[str, Any]
    depth: dict[int | None, int]
    rank_quartiles: list[tuple[int, int, int, int]]
    attributions: dict[str, list[tuple[str, float, int]]]
    least_sure: list[tuple[float, Any, str, str, list[tuple[str, float]], int | None]]
    errors: dict[str, int]
    error_examples: list[tuple[Any, str, str]]
    n_prompts: int
    factors: list[FactorView] = attrs.field(factory=list)


def _scan(out: Path, table: str, columns: list[str], where: Any = None) -> Any:
    """Record batches of ``columns`` of a table's finished parts (none if it was not made)."""
    folder = out / table
    if not folder.is_dir() or not any(folder.glob("part-*.parquet")):
        return
    yield from ds.dataset(folder, format="parquet").to_batches(columns=columns, filter=where)


def quantile(counts: dict[int, int], q: float) -> int:
    """Smallest value whose cumulative share reaches ``q`` (numpy's ``inverted_cdf``)."""
    total = sum(counts.values())
    seen = 0
    for value in sorted(counts):
        seen += counts[value]
        if seen >= q * total:
            return value
    raise ValueError("no values")


def _generations(out: Path) -> tuple[int, dict[int | None, int], list[tuple[Any, ...]]]:
    """(prompts, prediction depth counts, the least sure first tokens) from ``generations``."""
    depth: Counter[int | None] = Counter()
    heap: list[tuple[float, int, Any]] = []  # max-heap (negated prob) of the least sure
    order = 0
    n_prompts = 0
    columns = ["prompt_id", "prompt", "token", "prob", "top_tokens", "top_probs", "depth"]
    for batch in _scan(out, "generations", columns, pc.field("step") == 0):
        for row in batch.to_pylist():
            n_prompts += 1
            depth[row["depth"]] += 1
            if row["prob"] is None:
                continue
            item = (-row["prob"], -order, row)
            order += 1
            if len(heap) < LEAST_SURE:
                heapq.heappush(heap, item)
            else:
                heapq.heappushpop(heap, item)
    least = [
        (
            r["prob"],
            r["prompt_id"],
            r["prompt"],
            r["token"],
            list(zip(r["top_tokens"][:3], r["top_probs"][:3], strict=True)),
            r["depth"],
        )
        for _, _, r in sorted(heap, key=lambda item: (-item[0], -item[1]))
    ]
    return n_prompts, dict(depth), least


def _rank_quartiles(out: Path) -> list[tuple[int, int, int, int]]:
    """(layer, first quartile, median, third quartile) of the first generated token's rank."""
    ranks: dict[int, Counter[int]] = defaultdict(Counter)
    for batch in _scan(out, "rankings", ["layer", "rank"], pc.field("step") == 0):
        layers = batch.column("layer").to_numpy()
        values = batch.column("rank").to_numpy()
        for layer, rank in zip(layers.tolist(), values.tolist(), strict=True):
            ranks[layer][rank] += 1
    return [
        (layer, quantile(c, 0.25), quantile(c, 0.5), quantile(c, 0.75))
        for layer, c in sorted(ranks.items())
    ]


def _top_attributed(out: Path) -> dict[str, list[tuple[str, float, int]]]:
    """Per method, the input tokens with the highest mean score (seen ``MIN_COUNT`` times)."""
    sums: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0])
    for batch in _scan(
        out, "attributions", ["method", "source_token", "score"], pc.field("is_input")
    ):
        for method, token, score in zip(
            *(batch.column(c).to_pylist() for c in ("method", "source_token", "score")),
            strict=True,
        ):
            entry = sums[(method, token)]
            entry[0] += score
            entry[1] += 1
    by_method: dict[str, list[tuple[str, float, int]]] = defaultdict(list)
    for (method, token), (total, count) in sums.items():
        if count >= MIN_COUNT:
            by_method[method].append((token, total / count, int(count)))
    return {
        m: sorted(rows, key=lambda r: (-r[1], r[0]))[:TOP_TOKENS]
        for m, rows in sorted(by_method.items())
    }


def summarize(out: Path) -> Summary:
    """Stream the tables in ``out`` into the figures of the report."""
    n_prompts, depth, least = _generations(out)
    errors: Counter[str] = Counter()
    examples: list[tuple[Any, str, str]] = []
    for batch in _scan(out, "errors", ["prompt_id", "stage", "message"]):
        for row in batch.to_pylist():
            errors[row["stage"]] += 1
            if len(examples) < 10:
                examples.append((row["prompt_id"], row["stage"], row["message"]))
    return Summary(
        manifest=store.read_manifest(out) or {},
        depth=depth,
        rank_quartiles=_rank_quartiles(out),
        attributions=_top_attributed(out),
        least_sure=least,
        errors=dict(errors),
        error_examples=examples,
        n_prompts=n_prompts,
        factors=_factors(out),
    )


def _svg(spec: dict[str, Any]) -> str:
    import vl_convert as vlc

    svg = str(vlc.vegalite_to_svg(spec))
    return svg[svg.index("<svg") :] if "<svg" in svg else svg


def _spec(title: str, rows: list[dict[str, Any]], **rest: Any) -> dict[str, Any]:
    return {
        "$schema": schema_url(),
        "title": title,
        "data": {"values": rows},
        "width": 520,
        "config": {"view": {"stroke": None}, "font": "sans-serif"},
        **rest,
    }


def depth_chart(summary: Summary, n_layers: int) -> dict[str, Any]:
    """Vega-Lite bar chart: prompts per prediction depth of the first generated token."""
    rows = [{"depth": layer, "prompts": summary.depth.get(layer, 0)} for layer in range(n_layers)]
    return _spec(
        "Prediction depth of the first generated token",
        rows,
        height=220,
        mark={"type": "bar", "color": "#4c78a8"},
        encoding={
            "x": {
                "field": "depth",
                "type": "ordinal",
                "title": "layer from which it stays top-1",
                "axis": {"labelAngle": 0},
            },
            "y": {"field": "prompts", "type": "quantitative", "title": "prompts"},
            "tooltip": [{"field": "depth"}, {"field": "prompts"}],
        },
    )


def rank_chart(summary: Summary) -> dict[str, Any]:
    """Vega-Lite: median rank by layer with the quartile band (log scale)."""
    rows = [
        {"layer": layer, "q25": q25, "median": med, "q75": q75}
        for layer, q25, med, q75 in summary.rank_quartiles
    ]
    x = {
        "field": "layer",
        "type": "quantitative",
        "title": "layer",
        "axis": {"format": "d", "tickMinStep": 1},
        "scale": {"nice": False},
    }
    scale = {"type": "log"}
    return _spec(
        "Rank of the first generated token at each layer (median, quartiles)",
        rows,
        height=260,
        layer=[
            {
                "mark": {"type": "area", "opacity": 0.3, "color": "#4c78a8"},
                "encoding": {
                    "x": x,
                    "y": {
                        "field": "q75",
                        "type": "quantitative",
                        "scale": scale,
                        "title": "rank (1 = top)",
                    },
                    "y2": {"field": "q25"},
                },
            },
            {
                "mark": {"type": "line", "point": True, "color": "#4c78a8"},
                "encoding": {
                    "x": x,
                    "y": {"field": "median", "type": "quantitative", "scale": scale},
                    "tooltip": [{"field": c} for c in ("layer", "q25", "median", "q75")],
                },
            },
        ],
    )


def attribution_chart(method: str, rows: list[tuple[str, float, int]]) -> dict[str, Any]:
    """Vega-Lite bar chart of the input tokens with the highest mean attribution."""
    values = [
        {"token": f"'{visible(token)}'", "mean": round(mean, 6), "count": count}
        for token, mean, count in rows
    ]
    return _spec(
        f"Input tokens with the highest mean attribution ({method})",
        values,
        height={"step": 18},
        mark={"type": "bar", "color": "#f58518"},
        encoding={
            "y": {"field": "token", "type": "nominal", "sort": "-x", "title": None},
            "x": {"field": "mean", "type": "quantitative", "title": "mean score"},
            "tooltip": [{"field": "token"}, {"field": "mean"}, {"field": "count"}],
        },
    )


CSS = """
body{font-family:sans-serif;margin:24px;color:#222;max-width:1000px}
h1{font-size:22px} h2{font-size:17px;margin-top:28px}
table{border-collapse:collapse;font-size:13px} td,th{border:1px solid #ddd;padding:4px 8px}
th{background:#f4f4f4;text-align:left} .muted{color:#777} code{background:#f4f4f4}
.chart svg{max-width:100%;height:auto}
.factor{margin:14px 0;padding:8px 12px;border:1px solid #e4e4e4;border-radius:4px}
.context{font-family:monospace;font-size:13px;white-space:pre-wrap;margin:2px 0}
.context span{border-radius:2px} .context .hit{outline:2px solid #c0392b}
"""


def _e(value: Any) -> str:
    return html.escape(visible(str(value)))


def render(summary: Summary) -> str:
    """The report page (a complete HTML document)."""
    m = summary.manifest
    rows = m.get("rows", {})
    run = m.get("run", {})
    n_errors = sum(summary.errors.values())
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; "
        "style-src 'unsafe-inline'; img-src data:\">",
        f"<title>ecco-core corpus: {_e(m.get('model', ''))}</title><style>{CSS}</style>",
        "</head><body><div class='ecco corpus-report'>",
        f"<h1>Corpus report: {_e(m.get('model', ''))}</h1>",
        f"<p>{summary.n_prompts} prompts generated, {n_errors} failed "
        f"(data <code>{_e(run.get('data', ''))}</code>; analyses "
        f"{_e(', '.join(m.get('analyses', [])))}; {run.get('max_new_tokens', '?')} new tokens "
        f"per prompt).</p>",
    ]
    n_layers = int(m.get("n_layers") or 0)
    parts.append("<h2>Prediction depth</h2>")
    if any(d is not None for d in summary.depth):
        never = summary.depth.get(None, 0)
        parts.append(f"<div class='chart' id='depth'>{_svg(depth_chart(summary, n_layers))}</div>")
        parts.append(
            f"<p class='muted'>The layer from which the first generated token is ranked 1 through "
            f"the last layer (logit lens, final norm). {never} prompts have no depth "
            "(no rankings, or the token is not top-1 at the last layer).</p>"
        )
    else:
        parts.append("<p class='muted'>Not computed: add <code>rankings</code> to --analyses.</p>")
    parts.append("<h2>Rank by layer</h2>")
    if summary.rank_quartiles:
        parts.append(f"<div class='chart' id='ranks'>{_svg(rank_chart(summary))}</div>")
    else:
        parts.append("<p class='muted'>Not computed: add <code>rankings</code> to --analyses.</p>")
    parts.append("<h2>Input tokens with the highest mean attribution</h2>")
    if summary.attributions:
        for method, tokens in summary.attributions.items():
            chart = _svg(attribution_chart(method, tokens))
            parts.append(f"<div class='chart attribution'>{chart}</div>")
        parts.append(
            f"<p class='muted'>Mean score over every prompt token and generated token it was "
            f"attributed for; tokens seen at least {MIN_COUNT} times.</p>"
        )
    else:
        parts.append(
            "<p class='muted'>Not computed: add <code>attribution</code> to --analyses.</p>"
        )
    parts.append("<h2>Prompts where the model was least sure</h2>")
    if summary.least_sure:
        parts.append(
            "<table id='least-sure'><tr><th>prompt id</th><th>prompt</th><th>first token</th>"
            "<th>probability</th><th>top candidates</th><th>depth</th></tr>"
        )
        for prob, pid, prompt, token, top, depth in summary.least_sure:
            candidates = ", ".join(f"'{_e(t)}' {p:.2f}" for t, p in top)
            parts.append(
                f"<tr><td>{_e(pid)}</td><td>{_e(prompt)}</td><td>'{_e(token)}'</td>"
                f"<td>{prob:.3f}</td><td>{candidates}</td>"
                f"<td>{'' if depth is None else depth}</td></tr>"
            )
        parts.append("</table>")
    else:
        parts.append("<p class='muted'>No generations.</p>")
    parts += _factor_explorer(summary.factors)
    if summary.errors:
        parts.append(
            "<h2>Failed prompts</h2><table id='errors'><tr><th>stage</th><th>prompts</th></tr>"
        )
        for stage, count in sorted(summary.errors.items()):
            parts.append(f"<tr><td>{_e(stage)}</td><td>{count}</td></tr>")
        parts.append("</table><p class='muted'>First ones:</p><table>")
        for pid, stage, message in summary.error_examples:
            parts.append(f"<tr><td>{_e(pid)}</td><td>{_e(stage)}</td><td>{_e(message)}</td></tr>")
        parts.append("</table>")
    listed = ", ".join(f"{_e(k)} {v}" for k, v in sorted(rows.items()))
    parts.append(f"<p class='muted'>Tables in this folder: {listed}.</p></div></body></html>")
    return "\n".join(parts)


def _shaded(tokens: list[str], values: list[float], hit: int, scale: float) -> str:
    """A context, each token shaded by the factor's activation there, the example outlined."""
    spans = []
    for i, (token, value) in enumerate(zip(tokens, values, strict=True)):
        alpha = 0.0 if scale <= 0 else max(0.0, min(1.0, value / scale))
        cls = " class='hit'" if i == hit else ""
        spans.append(
            f"<span{cls} style='background:rgba(230,126,34,{alpha:.2f})' "
            f"title='{value:.3g}'>{_e(token)}</span>"
        )
    return "".join(spans)


def _factor_explorer(factors: list[FactorView]) -> list[str]:
    """The corpus factor explorer: each factor's neurons, tokens and strongest contexts."""
    if not factors:
        return []
    parts = [
        "<h2>Neuron factors</h2>",
        "<p class='muted'>NMF factors of the FFN neurons of every layer, fitted over every token "
        "of the corpus. For each: the neurons with the highest loading (layer:neuron), the "
        "tokens those neurons promote through the unembedding, and the contexts where the factor "
        "is most active: the token is outlined, the factor's activation shades every token.</p>",
    ]
    for view in factors:
        neurons = ", ".join(
            f"{layer}:{neuron} ({load:.2f})" for layer, neuron, load in view.neurons
        )
        promoted = ", ".join(f"'{_e(t)}'" for t in view.promoted) or "(none)"
        parts.append(f"<div class='factor' id='factor-{view.factor}'><h3>Factor {view.factor}</h3>")
        parts.append(f"<p>Top neurons: {neurons}<br>Promotes: {promoted}</p>")
        scale = max((a for _, a, *_ in view.examples), default=0.0)
        for pid, activation, tokens, values, hit in view.examples:
            parts.append(
                f"<div class='context'>{_shaded(tokens, values, hit, scale)} "
                f"<span class='muted'>prompt {_e(pid)}, {activation:.3g}</span></div>"
            )
        parts.append("</div>")
    return parts


def write_report(out: Path) -> Path:
    """Write ``out/report.html`` from the tables in ``out`` (atomically); return its path."""
    page = render(summarize(out))
    path = out / store.REPORT
    store.write_atomic(path, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return path
