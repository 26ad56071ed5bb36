"""Rich display of records in notebooks, through a small registry of named renderers.

A renderer is a function ``record -> {mime type: data}``. Front ends register theirs under the
entry-point group ``ecco_core.display`` (``ecco_adapters`` registers ``html``); the group is
read once, on the first display, and each renderer is imported when first used. The built-in
``text`` renderer shows the plain repr. The active renderer is, by default, the first
registered one by name (``text`` when none is installed); :func:`enable` switches it, for good
or for the duration of a ``with`` block::

    import ecco_core.display as display
    display.enable("text")             # from now on
    with display.enable("html"):       # only inside the block
        ...

The core never imports a front end: it only reads entry points.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from importlib.metadata import entry_points
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

from .errors import InvalidArgumentError

if TYPE_CHECKING:
    from .records import Record

Renderer = Callable[["Record"], Mapping[str, str]]
GROUP = "ecco_core.display"


def _text(record: Record) -> dict[str, str]:
    return {"text/plain": repr(record)}


# name -> renderer, or a loader of it (an entry point not imported yet). None until the entry
# points have been read.
_REGISTRY: dict[str, Any] | None = None
_ACTIVE: list[str] = []  # the enabled renderer's name; empty: the default


def _registry() -> dict[str, Any]:
    global _REGISTRY
    if _REGISTRY is None:
        found = sorted(entry_points(group=GROUP), key=lambda e: e.name)
        _REGISTRY = {"text": _text, **{e.name: e for e in found}}
    return _REGISTRY


def register(name: str, renderer: Renderer) -> None:
    """Add (or replace) the renderer called ``name``."""
    if not isinstance(name, str) or not name:
        raise InvalidArgumentError("a renderer needs a non-empty name")
    _registry()[name] = renderer


def list_renderers() -> list[str]:
    """Names of the available renderers (``text`` always)."""
    return sorted(_registry())


def active() -> str:
    """Name of the renderer that displays records now."""
    if _ACTIVE:
        return _ACTIVE[-1]
    others = [name for name in _registry() if name != "text"]
    return min(others) if others else "text"


class _Enabled:
    """Returned by :func:`enable`; as a context manager it restores the previous renderer."""

    def __init__(self, previous: list[str]) -> None:
        self._previous = previous

    def __enter__(self) -> _Enabled:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        _ACTIVE[:] = self._previous


def enable(name: str) -> _Enabled:
    """Display records with renderer ``name`` from now on, or inside a ``with`` block."""
    if name not in _registry():
        raise InvalidArgumentError(
            f"no display renderer named {name!r}; available: {', '.join(list_renderers())}"
        )
    previous = list(_ACTIVE)
    _ACTIVE[:] = [name]
    return _Enabled(previous)


def _renderer(name: str) -> Renderer:
    registry = _registry()
    entry = registry[name]
    if hasattr(entry, "load") and hasattr(entry, "group"):  # an entry point: import it once
        entry = registry[name] = entry.load()
    return cast(Renderer, entry)


def mimebundle(
    record: Record, include: Iterable[str] | None = None, exclude: Iterable[str] | None = None
) -> dict[str, str]:
    """Display data of ``record`` from the active renderer, limited to the mime types in
    ``include`` (all when ``None``) and not in ``exclude`` (IPython's arguments).

    A renderer that fails gives the plain repr with the error, so a broken front end never
    breaks a notebook.
    """
    try:
        bundle = dict(_renderer(active())(record))
    except Exception as exc:
        bundle = {"text/plain": f"{record!r}\n(display failed: {exc})"}
    wanted = set(bundle) if include is None else set(include)
    wanted -= set(exclude or ())
    return {k: v for k, v in bundle.items() if k in wanted}
