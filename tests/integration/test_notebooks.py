"""Example notebooks run offline, start to finish, with nbclient."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


def _run(path: Path, folder: Path) -> Any:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(folder)}}
    )
    client.execute()
    return nb


def _html(nb: Any) -> list[str]:
    return [
        out["data"]["text/html"]
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if "data" in out and "text/html" in out["data"]
    ]


GALLERY = {
    "01_predicted_tokens.ipynb": ["Generation"],
    "02_rankings.ipynb": ["Rankings"],
    "03_layer_predictions_and_watch.ipynb": ["LayerPredictions", "RankingsWatch"],
    "04_primary_attributions.ipynb": ["Attributions"],
    "05_detailed_attributions.ipynb": [],
    "06_neuron_factors.ipynb": ["Factorization"],
    "07_sentiment.ipynb": ["Attributions"],
    "08_attention.ipynb": ["Attention", "Attributions"],
}


@pytest.mark.real
@pytest.mark.parametrize("name", sorted(GALLERY))
def test_gallery_notebook_runs_offline_on_real_models(name: str, tmp_path: Path, smollm2) -> None:
    nb = _run(EXAMPLES / name, tmp_path)
    html = _html(nb)
    for kind in GALLERY[name]:
        assert any(f'\\"kind\\": \\"{kind}\\"' in h or f'"kind": "{kind}"' in h for h in html), kind
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors == []


@pytest.mark.parametrize("name", ["views.ipynb"])
def test_example_notebook_runs(name: str, tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(EXAMPLES / name, as_version=4)
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    html = [
        out["data"]["text/html"]
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if "data" in out and "text/html" in out["data"]
    ]
    assert len(html) >= 6 and all("data-ecco-record" in h for h in html)
    kinds = {
        k for h in html for k in ("ecco-", "Rankings", "Attributions", "Factorization") if k in h
    }
    assert {"Rankings", "Attributions", "Factorization"} <= kinds
    widgets = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if "application/vnd.jupyter.widget-view+json" in out.get("data", {})
    ]
    assert len(widgets) == 1
    svg = [
        out
        for cell in nb.cells
        for out in cell.get("outputs", [])
        if "image/svg+xml" in out.get("data", {})
    ]
    assert len(svg) == 1
