"""The corpus report in a real browser: charts render as inline SVG, tables hold the corpus's
values, control characters in tokens do not break the charts, nothing is fetched."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest

from ecco_adapters.corpus import BatchOptions, RunConfig, run_corpus

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def report_dir(tiny_path: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("corpus-report")
    lines = [f"The tower\tnumber {i} is in the city of" for i in range(10)]
    lines += ["<script>window.__xss = 1</script> the city", ""]
    data = folder / "prompts.txt"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = RunConfig(
        data=data,
        out=folder / "out",
        model=str(tiny_path("gpt2")),
        batch_size=4,
        options=BatchOptions(
            analyses=("generate", "rankings", "attribution"),
            methods=("saliency",),
            max_new_tokens=3,
        ),
    )
    return Path(run_corpus(config))


def test_report_renders_offline_with_every_chart(report_dir: Path, open_html: Any) -> None:
    page_html = (report_dir / "report.html").read_text(encoding="utf-8")
    assert "<script" not in page_html.replace("&lt;script", "")  # no JavaScript, escaped text
    p = open_html(page_html, "corpus-report")
    assert p.errors == [], p.errors
    assert len(p.requests) == 1 and p.requests[0].startswith("file://"), p.requests
    page = p.page
    assert page.evaluate("window.__xss") is None
    assert page.locator("#depth svg").count() == 1
    assert page.locator("#ranks svg").count() == 1
    assert page.locator(".attribution svg").count() == 1
    # the charts drew marks (bars, lines), not empty frames
    assert page.locator("#depth svg path, #depth svg rect").count() > 3
    box = page.locator("#ranks svg").bounding_box()
    assert box is not None and box["width"] > 300 and box["height"] > 150
    # the tab inside the prompts reaches the attribution chart escaped, not raw
    labels = page.locator(".attribution svg text").all_text_contents()
    assert any("\\x09" in label for label in labels), labels
    # least-sure table: the lowest first-token probabilities of the corpus, lowest first
    gens = ds.dataset(report_dir / "generations").to_table().to_pandas()
    first = gens[gens["step"] == 0].sort_values("prob")
    rows = page.locator("#least-sure tr").all_text_contents()[1:]
    assert len(rows) == len(first)
    shown = [
        float(page.locator(f"#least-sure tr:nth-child({i + 2}) td:nth-child(4)").inner_text())
        for i in range(len(rows))
    ]
    assert shown == [round(float(p), 3) for p in first["prob"]]
    # the empty line is listed among the failed prompts, by stage
    assert page.locator("#errors").inner_text().split() == ["stage", "prompts", "input", "1"]
    p.shot("corpus-report")
