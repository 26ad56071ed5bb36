"""Render time of the views in headless Chromium (figures, not a timed test).

Builds a 2,000-token Attributions record (20 explained tokens), renders it with the HTML
adapter and measures, inside the page, the time to mount the view and to recolour the 2,000
tokens when another output token is hovered. Target: the 2,000-token view renders in < 1 s.

Usage: python benchmarks/bench_views.py
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

import numpy as np

import ecco_core as ec
from ecco_adapters import html as eh
from ecco_adapters.browser import launch
from ecco_core.testing import fixed_provenance

N_TOKENS, N_TARGETS = 2000, 20


def record() -> ec.Attributions:
    rng = np.random.default_rng(0)
    n_input = N_TOKENS - N_TARGETS
    scores = np.zeros((N_TARGETS, N_TOKENS), dtype=np.float32)
    for i in range(N_TARGETS):
        row = rng.random(n_input + i)
        scores[i, : n_input + i] = row / row.sum()
    return ec.Attributions(
        scores=scores,
        values=np.zeros((0, 0, 0)),
        token_ids=np.arange(N_TOKENS),
        tokens=[f" w{i}" for i in range(N_TOKENS)],
        n_input_tokens=n_input,
        n_encoder_tokens=0,
        target_positions=np.arange(n_input, N_TOKENS),
        target_ids=np.arange(N_TARGETS),
        foil_id=-1,
        target_values=np.full(N_TARGETS, 0.5),
        convergence_delta=np.zeros(N_TARGETS),
        method="integrated_gradients",
        target="probability",
        aggregation="l2",
        baseline="zeros",
        precision="fp32",
        precision_deviation=0.0,
        provenance=fixed_provenance("synthetic", "bench"),
    )


def main() -> None:
    from playwright.sync_api import sync_playwright

    page_html = eh.render(record()).replace(
        "mountAll(document);",
        "const t0 = performance.now(); mountAll(document); "
        "window.renderMs = performance.now() - t0;",
    )
    folder = Path(tempfile.mkdtemp())
    path = folder / "attributions-2000.html"
    path.write_text(page_html, encoding="utf-8")
    mounts, hovers = [], []
    with sync_playwright() as p:
        browser = launch(p)
        for _ in range(5):
            page = browser.new_page()
            page.goto(path.as_uri())
            page.wait_for_selector(".ecco-output")
            mounts.append(page.evaluate("window.renderMs"))
            hovers.append(
                page.evaluate(
                    "() => { const outs = document.querySelectorAll('.ecco-output');"
                    " const t0 = performance.now();"
                    " outs[outs.length - 1].dispatchEvent(new MouseEvent('mouseenter'));"
                    " return performance.now() - t0; }"
                )
            )
            page.close()
        browser.close()
    print(f"page size: {len(page_html) / 1024:.0f} KiB for {N_TOKENS} tokens x {N_TARGETS} targets")
    print(
        f"mount the attribution view: median {statistics.median(mounts):.0f} ms (target < 1000 ms)"
    )
    print(f"recolour {N_TOKENS} tokens on hover: median {statistics.median(hovers):.0f} ms")


if __name__ == "__main__":
    main()
