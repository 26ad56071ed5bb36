"""The display registry: entry points read once, enable() as a context manager, include/exclude."""

from __future__ import annotations

from typing import Any

import pytest

import ecco_core as ec
from ecco_core import display
from ecco_core.testing import fixed_provenance


class _EntryPoint:
    """Stands in for an importlib entry point; counts imports."""

    group = display.GROUP

    def __init__(self, name: str, renderer: Any) -> None:
        self.name, self.renderer, self.loads = name, renderer, 0

    def load(self) -> Any:
        self.loads += 1
        return self.renderer


def _html(record: Any) -> dict[str, str]:
    return {"text/html": f"<b>{record.KIND}</b>", "text/plain": "plain"}


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """An unread registry whose entry points are two fake front ends; counts the reads."""
    state: dict[str, Any] = {"reads": 0, "html": _EntryPoint("html", _html)}
    state["zz"] = _EntryPoint("zz", lambda r: {"text/markdown": "*zz*"})

    def entry_points(group: str) -> list[_EntryPoint]:
        assert group == "ecco_core.display"
        state["reads"] += 1
        return [state["zz"], state["html"]]

    monkeypatch.setattr(display, "entry_points", entry_points)
    monkeypatch.setattr(display, "_REGISTRY", None)
    monkeypatch.setattr(display, "_ACTIVE", [])
    return state


def _record() -> ec.Provenance:
    return fixed_provenance("m", "f")


def test_entry_points_are_read_once_and_imported_on_first_use(fresh: dict[str, Any]) -> None:
    rec = _record()
    assert fresh["reads"] == 0
    assert display.list_renderers() == ["html", "text", "zz"]
    assert display.active() == "html"  # the first by name
    for _ in range(3):
        assert rec._repr_mimebundle_() == _html(rec)
    assert fresh["reads"] == 1 and fresh["html"].loads == 1 and fresh["zz"].loads == 0


def test_enable_for_good_or_inside_a_with_block(fresh: dict[str, Any]) -> None:
    rec = _record()
    with display.enable("text"):
        assert rec._repr_mimebundle_() == {"text/plain": repr(rec)}
        with display.enable("zz"):
            assert rec._repr_mimebundle_() == {"text/markdown": "*zz*"}
        assert display.active() == "text"
    assert display.active() == "html"
    display.enable("zz")
    assert display.active() == "zz"
    with pytest.raises(ec.InvalidArgumentError, match=r"no display renderer named 'svg'.*html"):
        display.enable("svg")
    assert display.active() == "zz"


def test_include_and_exclude_limit_the_mime_types(fresh: dict[str, Any]) -> None:
    rec = _record()
    assert rec._repr_mimebundle_(include={"text/plain"}) == {"text/plain": "plain"}
    assert rec._repr_mimebundle_(exclude={"text/plain"}) == {"text/html": "<b>Provenance</b>"}
    assert rec._repr_mimebundle_(include={"text/html"}, exclude={"text/html"}) == {}


def test_registered_renderer_and_a_broken_one(fresh: dict[str, Any]) -> None:
    rec = _record()

    def broken(record: Any) -> dict[str, str]:
        raise RuntimeError("no browser here")

    display.register("broken", broken)
    with display.enable("broken"):
        bundle = rec._repr_mimebundle_()
    assert bundle == {"text/plain": f"{rec!r}\n(display failed: no browser here)"}
