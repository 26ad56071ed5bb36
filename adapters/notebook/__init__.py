"""Notebook front end: rich display of records and a two-way widget.

Rich display needs nothing from the user: ecco-core records implement ``_repr_mimebundle_``,
which asks the display renderers registered under the entry-point group
``ecco_core.display``; this package registers :func:`mimebundle` there, so records show as
views in Jupyter (Lab, classic Notebook), VS Code and Colab whenever ``ecco-core[adapters]`` is
installed, and as text otherwise. The core never imports IPython.

:func:`widget` returns an anywidget whose ``selected`` trait follows the token hovered or
clicked in the view, readable from Python.
"""

from __future__ import annotations

from typing import Any

from ecco_core.records import Record

from ..html import css, fragment, javascript, view_envelope

__all__ = ["mimebundle", "widget"]


def mimebundle(record: Record) -> dict[str, str]:
    """Display data for a record: the HTML view, plus a plain-text fallback."""
    return {"text/html": fragment(record), "text/plain": repr(record)}


def widget(record: Record, *, mode: str = "minimal") -> Any:
    """An anywidget showing ``record``; its ``selected`` trait is the last position the user
    hovered or clicked (-1 before any).

    ``mode`` opens attribution views as ``minimal`` or ``detailed``.
    """
    import json

    import anywidget
    import traitlets

    class EccoWidget(anywidget.AnyWidget):
        _esm = javascript()
        _css = css()
        record_json = traitlets.Unicode("").tag(sync=True)
        mode = traitlets.Unicode("minimal").tag(sync=True)
        selected = traitlets.Int(-1).tag(sync=True)

    payload = json.dumps(view_envelope(record), sort_keys=True, allow_nan=False)
    return EccoWidget(record_json=payload, mode=mode)
