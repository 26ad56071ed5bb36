"""Screenshot of an HTML report in headless Chromium, for the README.

Usage: python docs/screenshot.py demo/report.html docs/images/report.png [HEIGHT]
"""

from __future__ import annotations

import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

from ecco_adapters.browser import launch


def main(source: str, target: str, height: int = 1500) -> None:
    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1100, "height": height})
        page.goto(Path(source).resolve().as_uri())
        page.wait_for_selector(".ecco")
        outputs = page.locator(".ecco-Attributions .ecco-output")
        if outputs.count():
            outputs.first.hover()
        page.screenshot(path=target, full_page=False)
        browser.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *map(int, sys.argv[3:4]))
