// ecco-core views: one hand-written module with no dependencies and no network access.
// It renders any ecco-core record from its JSON envelope {kind, version, data}. The static
// HTML adapter inlines it; the notebook widget loads it as its ES module.
// Every token is inserted as text (textContent), never as HTML.
// The server writes a static copy of each view into its container; rendering replaces it.
// Every listener is added through `opts.listen` with the render's AbortSignal, so `destroy()`
// (called on re-render and when a widget is removed) removes all of them.

const SVG = "http://www.w3.org/2000/svg";

function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key === "style") node.setAttribute("style", value);
    else node.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function s(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  return node;
}

// Arrays arrive as {dtype, shape, data}; non-finite floats as the strings "nan", "inf", "-inf".
function arr(a) {
  const values = a.data.map((v) => (typeof v === "string" ? Number(v.replace("inf", "Infinity")) : v));
  const shape = a.shape;
  const get = (...idx) => {
    let offset = 0;
    for (let k = 0; k < idx.length; k++) offset = offset * shape[k] + idx[k];
    return values[offset];
  };
  const row = (i) => values.slice(i * shape[1], (i + 1) * shape[1]);
  return { shape, values, get, row };
}

function show(text) {
  // Make whitespace-only and newline tokens visible without changing other text.
  return String(text)
    .replace(/\n/g, "\u23ce")
    .replace(/[\u0000-\u0008\u000b-\u001f\u007f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`);
}

function tokenSpan(text, cls, index) {
  const span = h("span", { class: `ecco-token ${cls}` }, show(text));
  if (index !== undefined) span.dataset.index = String(index);
  return span;
}

function percent(p) {
  return p >= 0.995 ? "100%" : p < 0.0005 ? "<0.1%" : `${(p * 100).toFixed(1)}%`;
}

function fixed(v) {
  const a = Math.abs(v);
  if (a === 0) return "0";
  if (a < 0.001) return v.toExponential(1);
  return a >= 100 ? v.toFixed(0) : a >= 1 ? v.toFixed(2) : v.toFixed(3);
}

function shade(value, max, negative) {
  const alpha = max > 0 ? Math.min(1, Math.abs(value) / max) : 0;
  return `background: rgba(var(${negative ? "--ecco-neg" : "--ecco-pos"}), ${(0.85 * alpha).toFixed(3)});`;
}

function barRow(label, value, max, text) {
  const width = max > 0 ? Math.min(100, (100 * Math.abs(value)) / max) : 0;
  return h(
    "div", { class: "ecco-bar-row" },
    h("span", { class: "ecco-bar-label" }, show(label)),
    h("span", { class: "ecco-bar-track" },
      h("div", { class: `ecco-bar${value < 0 ? " ecco-negative" : ""}`, style: `width: ${width.toFixed(2)}%` })),
    h("span", { class: "ecco-bar-value" }, text),
  );
}

function legend(left, right, ramp) {
  return h("div", { class: "ecco-legend" }, left,
    h("span", { class: "ecco-legend-ramp", style: `background: ${ramp}` }), right);
}

const POSITIVE_RAMP = "linear-gradient(to right, rgba(var(--ecco-pos), 0), rgba(var(--ecco-pos), 0.85))";
const SIGNED_RAMP = "linear-gradient(to right, rgba(var(--ecco-neg), 0.85), rgba(var(--ecco-pos), 0), rgba(var(--ecco-pos), 0.85))";

// A row of tokens: inputs plain, outputs selectable. Calls onPick(index) on hover and click.
function tokenRow(tokens, isOutput, onPick, listen) {
  const row = h("div", { class: "ecco-tokens" });
  tokens.forEach((t, i) => {
    const span = tokenSpan(t, isOutput(i) ? "ecco-output" : "ecco-input", i);
    if (isOutput(i)) {
      listen(span, "mouseenter", () => onPick(i));
      listen(span, "click", () => onPick(i));
    }
    row.append(span);
  });
  return row;
}

function markSelected(row, index) {
  for (const span of row.querySelectorAll(".ecco-token")) {
    span.classList.toggle("ecco-selected", Number(span.dataset.index) === index);
  }
}

// Generated text with the top-k predictions of the selected step (also masked predictions).
function predictionsView(el, d, opts, positions, title) {
  const ids = arr(d.top_probs);
  const steps = new Map(positions.map((p, i) => [p, i]));
  const panel = h("div", { class: "ecco-panel" });
  const row = tokenRow(d.tokens, (i) => steps.has(i), (i) => select(i, true), opts.listen);
  // `user` is true for a hover or click: only those are reported (a widget's `selected`).
  function select(position, user) {
    markSelected(row, position);
    const step = steps.get(position);
    const probs = ids.row(step);
    panel.replaceChildren(
      h("div", { class: "ecco-note" }, `Top predictions for position ${position}:`),
      ...d.top_tokens[step].map((t, k) => barRow(t, probs[k], 1, percent(probs[k]))),
    );
    if (user) opts.onSelect(position);
  }
  el.append(h("h3", {}, title), row, panel,
    h("div", { class: "ecco-note" }, "Hover or click an underlined token to see what the model predicted there."));
  if (positions.length) select(positions[0], false);
  return { select };
}

function generationView(el, d, opts) {
  const first = d.n_input_tokens;
  const positions = d.tokens.map((_, i) => i).filter((i) => i >= first);
  return predictionsView(el, d, opts, positions, "Predicted tokens");
}

function maskedView(el, d, opts) {
  return predictionsView(el, d, opts, arr(d.positions).values, "Masked predictions");
}

function classificationView(el, d, opts) {
  const probs = arr(d.probs).values;
  el.append(h("h3", {}, "Classification"),
    tokenRow(d.tokens, () => false, () => {}, opts.listen),
    h("div", { class: "ecco-panel" }, ...d.labels.map((l, i) => barRow(l, probs[i], 1, percent(probs[i])))));
  return { select() {} };
}

// Heatmap of ranks: rows layers, columns tokens; log colour scale, rank in each cell.
function rankTable(d, columns, ranks, maxRank) {
  const logMax = Math.log(Math.max(2, maxRank));
  const table = h("table", { class: "ecco-grid" });
  table.append(h("tr", {}, h("th", {}, ""), ...columns.map((c) => h("th", {}, show(c)))));
  for (let layer = 0; layer < ranks.shape[0]; layer++) {
    const tr = h("tr", {}, h("th", {}, d.layer_labels[layer]));
    for (let j = 0; j < ranks.shape[1]; j++) {
      const rank = ranks.get(layer, j);
      const strength = 1 - Math.log(rank) / logMax;
      const td = h("td", { style: shade(strength, 1, false), title: `${d.layer_labels[layer]}, ${columns[j]}: rank ${rank}` }, String(rank));
      td.dataset.rank = String(rank);
      tr.append(td);
    }
    table.append(tr);
  }
  return table;
}

function rankingsView(el, d) {
  const ranks = arr(d.ranks);
  el.append(h("h3", {}, "Rank of each generated token at every layer"),
    h("div", { class: "ecco-note" }, `Logit lens, norm=${d.norm}. Rank 1 means the layer's top prediction is the token the model produced.`),
    legend(`rank ${Math.max(...ranks.values)}`, "rank 1 (log scale)", POSITIVE_RAMP),
    rankTable(d, d.tokens, ranks, Math.max(...ranks.values)));
  return { select() {} };
}

function watchView(el, d) {
  const ranks = arr(d.ranks);
  const context = d.sequence_tokens.slice(0, d.position).join("");
  el.append(h("h3", {}, `Ranks of watched tokens at position ${d.position}`),
    h("div", { class: "ecco-note" }, show(`…${context.slice(-80)}`)),
    legend(`rank ${Math.max(...ranks.values)}`, "rank 1 (log scale)", POSITIVE_RAMP),
    rankTable(d, d.watch_tokens, ranks, Math.max(...ranks.values)));
  return { select() {} };
}

function layerPredictionsView(el, d) {
  const probs = arr(d.probs);
  const table = h("table", { class: "ecco-grid" });
  const k = probs.shape[1];
  table.append(h("tr", {}, h("th", {}, ""), ...Array.from({ length: k }, (_, i) => h("th", {}, `#${i + 1}`))));
  for (let layer = 0; layer < probs.shape[0]; layer++) {
    const tr = h("tr", {}, h("th", {}, d.layer_labels[layer]));
    for (let j = 0; j < k; j++) {
      const p = probs.get(layer, j);
      const td = h("td", { style: shade(p, 1, false), title: percent(p) }, show(d.tokens[layer][j]));
      if (arr(d.token_ids).get(layer, j) === d.target_id) td.classList.add("ecco-target");
      tr.append(td);
    }
    table.append(tr);
  }
  el.append(h("h3", {}, `Layer predictions at position ${d.position}`),
    h("div", { class: "ecco-note" }, "Actual token: ", h("b", {}, show(d.target_token)), ` (outlined where it appears; logit lens, norm=${d.norm}).`),
    legend("0%", "100% probability", POSITIVE_RAMP), table);
  return { select() {} };
}

// Attributions: minimal (hover an output token, its inputs are coloured) and detailed (bars).
function attributionView(el, d, opts) {
  const scores = arr(d.scores);
  const positions = arr(d.target_positions).values;
  const steps = new Map(positions.map((p, i) => [p, i]));
  const signed = d.aggregation === "sum" || d.aggregation === "none";
  const deltas = d.convergence_delta.data.length ? arr(d.convergence_delta).values : null;
  const values = arr(d.target_values).values;
  // Same rule as ecco_core.convergence.unconverged (tolerance 5% of the explained value).
  const unconverged = positions.map((_, k) => deltas !== null && Math.abs(deltas[k]) > 0.05 * Math.max(1e-9, Math.abs(values[k])));
  let mode = opts.mode || "minimal";
  let current = positions.length ? positions[0] : -1;
  const row = tokenRow(d.tokens, (i) => steps.has(i), (i) => select(i, true), opts.listen);
  positions.forEach((p, k) => {
    if (!unconverged[k] || p < 0) return;
    const span = row.querySelector(`[data-index="${p}"]`);
    span.classList.add("ecco-unconverged");
  });
  const flagged = positions.filter((_, k) => unconverged[k]);
  const warning = flagged.length
    ? h("div", { class: "ecco-warning" },
      `\u26a0 Not converged for ${flagged.length} of ${positions.length} explained tokens (completeness delta above 5% of the value; wavy underline): `,
      flagged.map((p, k) => `${k ? ", " : ""}${p >= 0 ? JSON.stringify(d.tokens[p]) : "class"}`).join(""),
      ". Try more n_steps or another baseline.")
    : null;
  const detail = h("div", { class: "ecco-panel" });
  const note = h("div", { class: "ecco-note" });
  const buttons = h("div", { class: "ecco-buttons" });
  for (const m of ["minimal", "detailed"]) {
    const b = h("button", { type: "button", "data-mode": m }, m);
    opts.listen(b, "click", () => { mode = m; select(current, false); });
    buttons.append(b);
  }
  function select(position, user) {
    current = position;
    const step = steps.get(position);
    if (step === undefined) return;
    const rowScores = scores.row(step);
    const max = Math.max(...rowScores.map(Math.abs));
    for (const span of row.querySelectorAll(".ecco-token")) {
      const j = Number(span.dataset.index);
      const v = j < rowScores.length ? rowScores[j] : 0;
      span.setAttribute("style", j === position ? "" : shade(v, max, v < 0));
      span.title = j === position ? "explained token" : `score ${fixed(v)}`;
      if (span.classList.contains("ecco-unconverged")) span.title += " (not converged)";
    }
    markSelected(row, position);
    for (const b of buttons.querySelectorAll("button")) b.classList.toggle("ecco-active", b.dataset.mode === mode);
    const target = d.target_positions.data[step] >= 0 ? d.tokens[position] : `class ${d.target_ids.data[step]}`;
    let text = `${d.method}: ${d.target} of ${JSON.stringify(target)} = ${fixed(values[step])}`;
    if (deltas) text += `; completeness delta ${fixed(deltas[step])}${unconverged[step] ? " (not converged: try more n_steps or another baseline)" : ""}`;
    note.textContent = text;
    detail.hidden = mode !== "detailed";
    if (mode === "detailed") {
      const visible = rowScores.map((v, j) => [j, v]).filter(([j, v]) => v !== 0 || j < position);
      detail.replaceChildren(...visible.map(([j, v]) => barRow(d.tokens[j], v, max, fixed(v))));
    }
    if (user) opts.onSelect(position);
  }
  el.append(h("h3", {}, "Input attributions"), ...(warning ? [warning] : []), buttons,
    signed ? legend("negative", "positive", SIGNED_RAMP) : legend("0", "largest share", POSITIVE_RAMP),
    row, note, detail,
    h("div", { class: "ecco-note" }, "Hover or click an underlined output token: its inputs are coloured by their contribution."));
  // A sequence classifier explains a class at position -1: every token is then an input.
  if (positions.length) select(positions[0], false);
  return { select };
}

const PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"];

function factorView(el, d, opts) {
  const factors = arr(d.token_factors);
  const [k, n] = factors.shape;
  const colour = (c) => PALETTE[c % PALETTE.length];
  const maxOf = Array.from({ length: k }, (_, c) => Math.max(1e-12, ...factors.row(c)));
  const dominant = Array.from({ length: n }, (_, j) => {
    let best = 0;
    for (let c = 1; c < k; c++) if (factors.get(c, j) / maxOf[c] > factors.get(best, j) / maxOf[best]) best = c;
    return best;
  });
  // Several texts factorized together: a labelled break where each new text begins.
  const texts = arr(d.text_index).values;
  const starts = texts.map((t, j) => j > 0 && t !== texts[j - 1]);
  const several = starts.some(Boolean);
  const row = h("div", { class: "ecco-tokens" });
  d.tokens.forEach((t, j) => {
    if (several && (j === 0 || starts[j])) row.append(h("div", { class: "ecco-text-break" }, `text ${texts[j]}`));
    row.append(tokenSpan(t, "ecco-input", j));
  });
  let pinned = -1;
  function paint(active, user) {
    row.querySelectorAll(".ecco-token").forEach((span, j) => {
      const c = active >= 0 ? active : dominant[j];
      const strength = factors.get(c, j) / maxOf[c];
      span.setAttribute("style", `background: ${colour(c)}${Math.round(strength * 200).toString(16).padStart(2, "0")}`);
      span.title = `factor ${c}: ${fixed(factors.get(c, j))}`;
    });
    list.querySelectorAll(".ecco-factor-row").forEach((r, c) => r.classList.toggle("ecco-active", c === active));
    if (user) opts.onSelect(active);
  }
  const list = h("div", {});
  for (let c = 0; c < k; c++) {
    const width = Math.max(120, Math.min(400, n * 6));
    const svg = s("svg", { width, height: 24, viewBox: `0 0 ${width} 24` });
    const points = factors.row(c).map((v, j) => `${((j + 0.5) * width / n).toFixed(1)},${(22 - 20 * v / maxOf[c]).toFixed(1)}`);
    starts.forEach((start, j) => {
      if (!start) return;
      const x = (j * width / n).toFixed(1);
      svg.append(s("line", { class: "ecco-text-boundary", x1: x, x2: x, y1: 0, y2: 24 }));
    });
    svg.append(s("polyline", { points: points.join(" "), fill: "none", stroke: colour(c), "stroke-width": 1.5 }));
    const promoted = d.promoted_tokens[c] || [];
    const r = h("div", { class: "ecco-factor-row" },
      h("span", { class: "ecco-swatch", style: `background: ${colour(c)}` }),
      h("span", {}, `factor ${c}`), svg,
      promoted.length ? h("span", { class: "ecco-promoted" }, "promotes: " + promoted.slice(0, 5).map((t) => JSON.stringify(t)).join(" ")) : null);
    opts.listen(r, "mouseenter", () => paint(c, true));
    opts.listen(r, "mouseleave", () => paint(pinned, true));
    opts.listen(r, "click", () => { pinned = pinned === c ? -1 : c; paint(pinned, true); });
    list.append(r);
  }
  const nTexts = several ? `, ${Math.max(...texts) + 1} texts` : "";
  el.append(h("h3", {}, `Neuron factors (NMF, ${k} components, ${d.layer_labels.length} layers${nTexts})`),
    h("div", { class: "ecco-note" }, "Tokens are coloured by their dominant factor. Hover a factor to isolate it; click to pin."),
    row, list);
  paint(-1, false);
  return { select: paint };
}

function activationsView(el, d) {
  const values = arr(d.values);
  const [layers, neurons, n] = values.shape;
  const norms = [];
  for (let l = 0; l < layers; l++) {
    const row = [];
    for (let j = 0; j < n; j++) {
      let sum = 0;
      for (let q = 0; q < neurons; q++) { const v = values.get(l, q, j); sum += v * v; }
      row.push(Math.sqrt(sum));
    }
    norms.push(row);
  }
  const max = Math.max(...norms.flat());
  const table = h("table", { class: "ecco-grid" });
  table.append(h("tr", {}, h("th", {}, ""), ...d.tokens.map((t) => h("th", {}, show(t)))));
  norms.forEach((row, l) => table.append(h("tr", {}, h("th", {}, d.layer_labels[l]),
    ...row.map((v) => h("td", { style: shade(v, max, false), title: fixed(v) }, "")))));
  el.append(h("h3", {}, `FFN activations (${d.stack}): norm per layer and position`),
    legend("0", `norm ${fixed(max)}`, POSITIVE_RAMP), table);
  return { select() {} };
}

const VIEWS = {
  Generation: generationView,
  MaskedPredictions: maskedView,
  Classification: classificationView,
  Rankings: rankingsView,
  RankingsWatch: watchView,
  LayerPredictions: layerPredictionsView,
  Attributions: attributionView,
  Factorization: factorView,
  Activations: activationsView,
  Attention: attentionView,
};

// Renders a record into `el` (replacing what it held, e.g. the static copy). Returns
// {select, destroy}; destroy() removes every listener the view added.
export function renderRecord(el, envelope, options = {}) {
  const controller = new AbortController();
  const listen = (node, type, fn) => node.addEventListener(type, fn, { signal: controller.signal });
  const opts = { onSelect: () => {}, ...options, listen };
  const root = h("div", { class: `ecco ecco-${envelope.kind}` });
  el.replaceChildren(root);
  const view = VIEWS[envelope.kind];
  const destroy = () => controller.abort();
  if (!view) {
    root.append(h("div", { class: "ecco-note" }, `No view for records of kind ${envelope.kind}.`));
    return { select() {}, destroy };
  }
  return { ...view(root, envelope.data, opts), destroy };
}

// Static HTML: every element with data-ecco-record names the id of a JSON script element.
export function mountAll(doc) {
  for (const el of doc.querySelectorAll("[data-ecco-record]")) {
    if (el.dataset.eccoMounted) continue;
    const source = doc.getElementById(el.dataset.eccoRecord);
    renderRecord(el, JSON.parse(source.textContent), { mode: el.dataset.eccoMode });
    el.dataset.eccoMounted = "1";
  }
}

// anywidget: the record arrives as a JSON string; the hovered/clicked position goes back.
// `selected` stays -1 until the user hovers or clicks. A re-render (new record or mode)
// first tears the previous view down; the returned cleanup removes every listener.
export default {
  render({ model, el }) {
    let view = null;
    const draw = () => {
      if (view) view.destroy();
      view = renderRecord(el, JSON.parse(model.get("record_json")), {
        mode: model.get("mode"),
        onSelect: (i) => { model.set("selected", i); model.save_changes(); },
      });
    };
    draw();
    model.on("change:record_json", draw);
    model.on("change:mode", draw);
    return () => {
      model.off("change:record_json", draw);
      model.off("change:mode", draw);
      if (view) view.destroy();
      view = null;
    };
  },
};

// Attention: a head view (query tokens on the left, key tokens on the right, one line per head
// and pair with opacity = weight; layer selector, head toggles, hover a token to isolate its
// lines) and a grid of per-head heatmaps for one layer (click a head to open it in the head view).
function attentionView(el, d, opts) {
  const weights = arr(d.weights);
  const [nLayers, nHeads, nQ, nK] = weights.shape;
  const heads = d.heads.data;
  const colour = (h) => PALETTE[heads[h] % PALETTE.length];
  let layer = nLayers - 1;
  let mode = opts.mode === "grid" ? "grid" : "lines";
  let pinned = null;
  const active = new Set(Array.from({ length: nHeads }, (_, h) => h));
  const meanRow = (i) => Array.from({ length: nK }, (_, j) => {
    let sum = 0;
    for (const h of active) sum += weights.get(layer, h, i, j);
    return active.size ? sum / active.size : 0;
  });

  const layerSelect = h("select", { class: "ecco-layer", "aria-label": "layer" },
    ...d.layer_labels.map((label, l) => h("option", { value: l }, label)));
  layerSelect.value = String(layer);
  layerSelect.addEventListener("change", () => { layer = Number(layerSelect.value); draw(); });
  const modes = h("span", { class: "ecco-buttons" });
  for (const [m, label] of [["lines", "head view"], ["grid", "all heads"]]) {
    const b = h("button", { type: "button", "data-mode": m }, label);
    b.addEventListener("click", () => { mode = m; draw(); });
    modes.append(b);
  }
  const chips = h("span", { class: "ecco-buttons ecco-heads" });
  for (let hd = 0; hd < nHeads; hd++) {
    const b = h("button", { type: "button", "data-head": heads[hd] },
      h("span", { class: "ecco-swatch", style: `background: ${colour(hd)}` }), ` ${heads[hd]}`);
    b.addEventListener("click", () => { if (active.has(hd)) active.delete(hd); else active.add(hd); draw(); });
    b.addEventListener("dblclick", () => { active.clear(); active.add(hd); draw(); });
    chips.append(b);
  }
  const body = h("div", { class: "ecco-attention-body" });
  const note = h("div", { class: "ecco-note ecco-attention-note" });

  function describe(i) {
    const row = meanRow(i).map((v, j) => [j, v]).sort((a, b) => b[1] - a[1]).slice(0, 5);
    const which = active.size === nHeads ? "all heads" : `heads ${[...active].map((hd) => heads[hd]).join(", ")}`;
    return `${JSON.stringify(show(d.query_tokens[i]))} attends to (mean of ${which}): ` +
      row.map(([j, v]) => `${JSON.stringify(show(d.key_tokens[j]))} ${percent(v)}`).join(", ");
  }

  function isolate(side, index) {
    for (const line of body.querySelectorAll("line")) {
      const keep = index === null || Number(line.dataset[side]) === index;
      line.style.display = keep ? "" : "none";
    }
    for (const t of body.querySelectorAll("text.ecco-att-token")) {
      t.classList.toggle("ecco-att-focus", index !== null && t.dataset.side === side && Number(t.dataset.index) === index);
    }
    if (index === null) note.textContent = "Hover a token to see only its lines; click to pin it.";
    else if (side === "q") { note.textContent = describe(index); opts.onSelect(d.query_start + index); }
    else note.textContent = `${JSON.stringify(show(d.key_tokens[index]))}: lines from the queries that attend to it`;
  }

  function headView() {
    const rowH = 20;
    const most = 40;  // longer tokens are cut, with the whole token as the label's tooltip
    const longest = Math.max(...d.query_tokens.map((t) => show(t).length), ...d.key_tokens.map((t) => show(t).length));
    const labelW = Math.ceil(16 + 7.5 * Math.min(most + 1, longest));
    const gap = 160;
    const width = 2 * labelW + gap;
    const height = rowH * Math.max(nQ, nK) + 8;
    const svg = s("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "ecco-att-lines" });
    const y = (i) => 4 + rowH * (i + 0.5);
    for (const hd of active) {
      for (let i = 0; i < nQ; i++) {
        for (let j = 0; j < nK; j++) {
          const v = weights.get(layer, hd, i, j);
          if (v <= 0) continue;
          const line = s("line", { x1: labelW + 4, y1: y(i), x2: labelW + gap - 4, y2: y(j),
            stroke: colour(hd), "stroke-width": 2, "stroke-opacity": v.toFixed(4) });
          line.dataset.q = String(i); line.dataset.k = String(j);
          line.dataset.head = String(heads[hd]); line.dataset.weight = String(v);
          svg.append(line);
        }
      }
    }
    const label = (text, x, yy, anchor, side, index) => {
      const t = s("text", { x, y: yy, "text-anchor": anchor, "dominant-baseline": "middle", class: "ecco-att-token" });
      const shown = show(text);
      t.textContent = shown.length > most ? `${shown.slice(0, most)}…` : shown;
      if (shown.length > most) t.append(Object.assign(s("title"), { textContent: shown }));
      t.dataset.side = side; t.dataset.index = String(index);
      t.addEventListener("mouseenter", () => { if (pinned === null) isolate(side, index); });
      t.addEventListener("mouseleave", () => { if (pinned === null) isolate(side, null); });
      t.addEventListener("click", () => {
        pinned = pinned && pinned.side === side && pinned.index === index ? null : { side, index };
        isolate(side, pinned ? index : null);
      });
      svg.append(t);
    };
    d.query_tokens.forEach((t, i) => label(t, labelW - 4, y(i), "end", "q", i));
    d.key_tokens.forEach((t, j) => label(t, labelW + gap + 4, y(j), "start", "k", j));
    return svg;
  }

  function gridView() {
    const cell = Math.max(3, Math.min(14, Math.floor(180 / Math.max(nQ, nK))));
    const grid = h("div", { class: "ecco-att-grid" });
    for (let hd = 0; hd < nHeads; hd++) {
      const svg = s("svg", { width: cell * nK, height: cell * nQ, viewBox: `0 0 ${cell * nK} ${cell * nQ}` });
      svg.append(s("rect", { width: cell * nK, height: cell * nQ, style: "fill: var(--ecco-panel)" }));
      for (let i = 0; i < nQ; i++) {
        for (let j = 0; j < nK; j++) {
          const v = weights.get(layer, hd, i, j);
          if (v <= 0) continue;
          const r = s("rect", { x: j * cell, y: i * cell, width: cell, height: cell,
            style: `fill: rgba(var(--ecco-pos), ${v.toFixed(4)})` });
          r.dataset.q = String(i); r.dataset.k = String(j); r.dataset.weight = String(v);
          r.addEventListener("mouseenter", () => {
            note.textContent = `head ${heads[hd]}: ${JSON.stringify(show(d.query_tokens[i]))} → ${JSON.stringify(show(d.key_tokens[j]))} ${fixed(v)}`;
            opts.onSelect(d.query_start + i);
          });
          svg.append(r);
        }
      }
      const tile = h("div", { class: "ecco-att-tile", "data-head": heads[hd], title: "click to open this head in the head view" },
        h("div", { class: "ecco-note" }, h("span", { class: "ecco-swatch", style: `background: ${colour(hd)}` }), ` head ${heads[hd]}`), svg);
      tile.addEventListener("click", () => { active.clear(); active.add(hd); mode = "lines"; draw(); });
      grid.append(tile);
    }
    return grid;
  }

  function draw() {
    pinned = null;
    for (const b of modes.querySelectorAll("button")) b.classList.toggle("ecco-active", b.dataset.mode === mode);
    chips.querySelectorAll("button").forEach((b, hd) => b.classList.toggle("ecco-active", active.has(hd)));
    chips.hidden = mode !== "lines";
    body.replaceChildren(mode === "lines" ? headView() : gridView());
    note.textContent = mode === "lines"
      ? "Hover a token to see only its lines; click to pin it."
      : `Rows: queries, columns: keys (${nQ} × ${nK}). Hover a cell for its weight; click a head to open it.`;
  }

  const what = { encoder: "encoder self-attention", decoder: "decoder self-attention", cross: "cross-attention (decoder → encoder)" }[d.stack] || d.stack;
  el.append(h("h3", {}, `Attention: ${what}`),
    h("div", { class: "ecco-attention-controls" }, layerSelect, " ", modes, " ", chips),
    h("div", { class: "ecco-note" }, "Queries on the left, keys on the right; a line's opacity is its attention weight, one colour per head (click a head to toggle it, double-click to show it alone)."),
    legend("0", "weight 1", POSITIVE_RAMP), note, body);
  draw();
  return {
    select(position) {
      const i = position - d.query_start;
      if (mode === "lines" && i >= 0 && i < nQ) isolate("q", i);
    },
  };
}
