"""A real headless Chromium (Debian's package) driven by Playwright's Python package."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ecco_adapters.browser import chromium_path, launch

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "views"


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    if chromium_path() is None:
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        instance = launch(playwright)
        yield instance
        instance.close()


@dataclass
class Page:
    """A page with everything it asked the network for and every error it logged."""

    page: Any
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def shot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def open_html(browser: Any, tmp_path: Path) -> Iterator[Any]:
    pages: list[Any] = []

    def open_(html: str, name: str = "page") -> Page:
        path = tmp_path / f"{name}.html"
        path.write_text(html, encoding="utf-8")
        context = browser.new_context(viewport={"width": 1100, "height": 800})
        page = context.new_page()
        result = Page(page)
        page.on("request", lambda r: result.requests.append(r.url))
        page.on("console", lambda m: result.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: result.errors.append(str(e)))

        def dismiss(dialog: Any) -> None:
            result.dialogs.append(dialog.message)
            dialog.dismiss()

        page.on("dialog", dismiss)
        page.goto(path.as_uri())
        page.wait_for_selector(".ecco")
        pages.append(context)
        return result

    yield open_
    for context in pages:
        context.close()
