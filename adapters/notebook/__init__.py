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

import json
from typing import TYPE_CHECKING, Any

from ecco_core.records import Record
from ecco_core.summaries import summary

from ..html import fragment, view_envelope

if TYPE_CHECKING:
    from .anywidget_view import EccoWidget

__all__ = ["EccoWidget", "mimebundle", "widget"]


def mimebundle(record: Record) -> dict[str, str]:
    """Display data for a record: the HTML view (a static copy inside, which the script replaces
    with the interactive view), plus a plain-text summary (kind, model, tokens, numbers)."""
    return {"text/html": fragment(record), "text/plain": summary(record)}


def __getattr__(name: str) -> Any:
    # The widget class imports anywidget: only when it is asked for.
    if name == "EccoWidget":
        from .anywidget_view import EccoWidget

        return EccoWidget
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def widget(record: Record, *, mode: str = "minimal") -> EccoWidget:
    """An :class:`EccoWidget` showing ``record``; its ``selected`` trait is the last position
    the user hovered or clicked (-1 until the user does).

    ``mode`` opens attribution views as ``minimal`` or ``detailed``.
    """
    from .anywidget_view import EccoWidget

    payload = json.dumps(view_envelope(record), sort_keys=True, allow_nan=False)
    return EccoWidget(record, record_json=payload, mode=mode)
