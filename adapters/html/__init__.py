"""Self-contained static HTML for ecco-core records.

``render(records)`` returns one HTML document with the view module and its CSS inline and each
record embedded as JSON in a ``<script type="application/json">`` element (``<``, ``>`` and
``&`` escaped, so no token can close the script; large fields no view reads are left out).
Static first, interactive on top: each view's container holds a server-rendered static copy
(:mod:`.static`: tokens, values and colours as plain HTML with inline styles), which the module
replaces with the interactive view when scripts run. Nothing is loaded from any host: the file
works when opened from disk. Element ids derive from the content, so output is deterministic.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from ecco_core.records import Record
from ecco_core.serialization import to_envelope, write_text_atomic

from .static import static_view

__all__ = ["css", "fragment", "javascript", "render", "save", "static_view", "view_envelope"]


@lru_cache(maxsize=1)
def javascript() -> str:
    """Source of the view module (an ES module)."""
    return (resources.files("ecco_adapters") / "static" / "ecco.js").read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def css() -> str:
    """The views' stylesheet."""
    return (resources.files("ecco_adapters") / "static" / "ecco.css").read_text(encoding="utf-8")


# Large fields no view reads; they stay in the record's own JSON (record.save / to_json).
VIEW_OMITS = {
    "Factorization": ("neuron_factors", "neuron_layers", "neuron_indices"),
    "Attributions": ("values",),
}


def view_envelope(record: Record) -> dict[str, Any]:
    """The record's envelope without the large fields that no view reads."""
    envelope = to_envelope(record)
    for name in VIEW_OMITS.get(envelope["kind"], ()):
        envelope["data"].pop(name, None)
    return envelope


def _json_for_script(record: Record) -> str:
    text = json.dumps(view_envelope(record), sort_keys=True, allow_nan=False, ensure_ascii=False)
    for char, escape in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escape)
    return text


def _as_list(records: Record | Sequence[Record]) -> list[Record]:
    items = [records] if isinstance(records, Record) else list(records)
    if not items or not all(isinstance(r, Record) for r in items):
        raise TypeError("expected an ecco-core record or a non-empty list of records")
    return items


def _blocks(records: list[Record], mode: str | None) -> tuple[str, str]:
    """(view containers, JSON data scripts) for ``records``."""
    views, data = [], []
    for record in records:
        payload = _json_for_script(record)
        ident = "ecco-" + hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]
        mode_attr = f' data-ecco-mode="{html.escape(mode)}"' if mode else ""
        views.append(
            f'<div class="ecco-view" data-ecco-record="{ident}"{mode_attr}>'
            f"{static_view(record)}</div>"
        )
        data.append(f'<script type="application/json" id="{ident}">{payload}</script>')
    return "\n".join(views), "\n".join(data)


# Nothing may load from anywhere: inline script and style only.
_CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:"


def fragment(records: Record | Sequence[Record], *, mode: str | None = None) -> str:
    """An HTML fragment (style, views, data, module script) for embedding, e.g. in notebooks.

    Each fragment carries its own copy of the module and mounts only its own views.
    """
    views, data = _blocks(_as_list(records), mode)
    return (
        f"<style>{css()}</style>\n{views}\n{data}\n"
        f'<script type="module">\n{javascript()}\nmountAll(document);\n</script>'
    )


def render(
    records: Record | Sequence[Record], *, title: str = "ecco-core", mode: str | None = None
) -> str:
    """A complete, self-contained HTML document showing ``records``.

    ``mode="detailed"`` opens attribution views in their detailed (bar) mode.
    """
    views, data = _blocks(_as_list(records), mode)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<title>{html.escape(title)}</title>
<style>
body {{ margin: 16px; max-width: 1100px; font-family: system-ui, sans-serif; }}
@media (prefers-color-scheme: dark) {{ body {{ background: #0d1117; color: #e6edf3; }} }}
{css()}
</style>
</head>
<body>
<h1 style="font: 600 18px system-ui, sans-serif">{html.escape(title)}</h1>
{views}
{data}
<script type="module">
{javascript()}
mountAll(document);
</script>
</body>
</html>
"""


def save(
    records: Record | Sequence[Record],
    path: str | os.PathLike[str],
    *,
    title: str = "ecco-core",
    mode: str | None = None,
) -> Path:
    """Write :func:`render` to ``path`` atomically; returns the path."""
    target = Path(path)
    write_text_atomic(target, render(records, title=title, mode=mode))
    return target
