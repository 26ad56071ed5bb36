"""The notebook widget class (imports anywidget; loaded on first use by ``widget()``)."""

from __future__ import annotations

import json
from typing import Any

import anywidget
import traitlets

from ecco_core.summaries import summary

from ..html import css, javascript


class EccoWidget(anywidget.AnyWidget):
    """A view of one record whose ``selected`` trait follows the user's hover and click.

    Traits: ``record_json`` (the record's view envelope), ``mode`` (``minimal`` or
    ``detailed`` for attributions), ``selected`` (the position the user last hovered or
    clicked, or the factor index in the NMF view; -1 until the user does).
    """

    _esm = javascript()
    _css = css()
    record_json = traitlets.Unicode("").tag(sync=True)
    mode = traitlets.Unicode("minimal").tag(sync=True)
    selected = traitlets.Int(-1).tag(sync=True)

    def __init__(self, record: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._record = record

    def __repr__(self) -> str:
        head = f"EccoWidget (mode={self.mode!r}, selected={self.selected})"
        if self._record is not None:
            return f"{head}\n{summary(self._record)}"
        kind = json.loads(self.record_json)["kind"] if self.record_json else "no record"
        return f"{head}: {kind}"
