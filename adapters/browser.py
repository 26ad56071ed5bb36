"""Headless Chromium for screenshots and browser tests (Debian's package, never a download).

Used by the test suite, ``benchmarks/bench_views.py`` and ``docs/screenshot.py``; needs the
``playwright`` Python package (dev extra) and a ``chromium`` executable on the PATH.
"""

from __future__ import annotations

import shutil
from typing import Any

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def chromium_path() -> str | None:
    """Path of the system's Chromium, or None when it is not installed."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def launch(playwright: Any) -> Any:
    """Launch the system Chromium through a started Playwright instance."""
    executable = chromium_path()
    if executable is None:
        raise FileNotFoundError("no chromium executable: apt-get install chromium")
    return playwright.chromium.launch(executable_path=executable, args=FLAGS)
