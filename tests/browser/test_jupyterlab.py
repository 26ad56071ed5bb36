"""A shared notebook reopened in a real JupyterLab, untrusted: every view shows its content.

A notebook holding the display outputs of every view is written without a trust signature (as
one received from someone else). JupyterLab then shows its ``text/html`` outputs through its
sanitizer, without scripts: what remains must be the static copy of each view, with its
tokens and numbers, not an empty box. JupyterLab runs on a free loopback port with a token and
its own settings, data and runtime folders; Playwright drives the system Chromium.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ecco_adapters import notebook

from .conftest import ARTIFACTS
from .test_static_views import KINDS, _expected

pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _settings(folder: Path) -> None:
    """Lab settings: every cell attached to the page (no windowing), no news fetching."""
    files = {
        "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
            "fetchNews": "false",
            "checkForUpdates": False,
        },
    }
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content), encoding="utf-8")


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(base URL with token, notebook folder) of a running JupyterLab."""
    pytest.importorskip("jupyterlab")
    root = tmp_path_factory.mktemp("jupyterlab")
    notebooks = root / "notebooks"
    notebooks.mkdir()
    _settings(root / "settings")
    port, token = _free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(root / "config"),
        "JUPYTER_DATA_DIR": str(root / "data"),
        "JUPYTER_RUNTIME_DIR": str(root / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(root / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(root / "workspaces"),
        "IPYTHONDIR": str(root / "ipython"),
    }
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--port-retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={notebooks}",
        "--LabApp.news_url=",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
        "--ServerApp.terminals_enabled=False",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # containers and CI machines run as root
        command.append("--allow-root")
    log = (root / "server.log").open("w")
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail(f"jupyter lab did not start:\n{(root / 'server.log').read_text()}")
                time.sleep(0.5)
        yield f"{base}/lab/tree/{{name}}?token={token}", notebooks
    finally:
        server.terminate()  # the server shuts its kernels down on SIGTERM
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def _untrusted_notebook(records: dict[str, Any], path: Path) -> list[str]:
    """Write a notebook whose cells display ``records`` (no trust signature); returns kinds."""
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    kinds = []
    for kind in KINDS:
        cell = nbformat.v4.new_code_cell(f"# {kind}")
        cell.outputs = [
            nbformat.v4.new_output("display_data", data=notebook.mimebundle(records[kind]))
        ]
        nb.cells.append(cell)
        kinds.append(kind)
    nbformat.write(nb, path)
    return kinds


def test_untrusted_notebook_in_jupyterlab_shows_every_view(
    view_records, browser, jupyterlab
) -> None:
    url, folder = jupyterlab
    kinds = _untrusted_notebook(view_records, folder / "shared.ipynb")
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        page.goto(url.format(name="shared.ipynb"))
        outputs = page.locator(".jp-OutputArea-output")
        outputs.nth(len(kinds) - 1).locator("table").first.wait_for(timeout=60_000)
        assert outputs.count() == len(kinds)
        # Untrusted: the sanitizer removed every script, so no interactive view was built.
        assert page.locator(".jp-OutputArea-output script").count() == 0
        assert page.locator(".jp-OutputArea-output .ecco").count() == 0
        for i, kind in enumerate(kinds):
            output = outputs.nth(i)
            rows = output.locator("tr").evaluate_all(
                "rows => rows.map(r => [...r.children].map(c => c.textContent))"
            )
            expected = _expected(kind, view_records[kind])
            if kind == "Factorization":
                rows = [[None, *r[1:]] if j else r for j, r in enumerate(rows)]
            assert rows == expected, kind
            box = output.bounding_box()
            assert box is not None and box["height"] > 40, kind  # not an empty box
        output = outputs.nth(kinds.index("Rankings"))
        output.scroll_into_view_if_needed()
        style = output.locator("td").first.get_attribute("style") or ""
        assert "background" in style  # colours survive the sanitizer
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "jupyterlab_untrusted.png"))
    finally:
        context.close()
