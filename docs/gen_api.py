"""Write docs/api.md from the public functions' and records' docstrings.

Usage: python docs/gen_api.py   (a test checks that docs/api.md is up to date)
"""

from __future__ import annotations

import inspect
from pathlib import Path

import attrs

import ecco_core as ec
from ecco_adapters import corpus, html, notebook, vega
from ecco_adapters.corpus import batch, ray_engine

HEADER = """# API reference

Generated from the docstrings by `python docs/gen_api.py`; do not edit by hand.
Array shapes are given in brackets, e.g. `[n_layers, n_generated]`.
"""


def _function(name: str, obj: object) -> str:
    signature = str(inspect.signature(obj))  # type: ignore[arg-type]
    doc = inspect.getdoc(obj) or ""
    return f"### `{name}{signature}`\n\n{doc}\n"


def _record(cls: type) -> str:
    fields = ", ".join(f.name for f in attrs.fields(cls))
    doc = inspect.getdoc(cls) or ""
    kind, version = cls.KIND, cls.VERSION  # type: ignore[attr-defined]
    return f"### `{cls.__name__}` (kind `{kind}`, version {version})\n\nFields: {fields}\n\n{doc}\n"


def build() -> str:
    parts = [HEADER, "## ecco_core functions\n"]
    functions = [n for n in ec.__all__ if inspect.isfunction(getattr(ec, n))]
    parts += [_function(f"ec.{n}", getattr(ec, n)) for n in sorted(functions)]
    parts.append("## Model handle and spec\n")
    parts += [_function("ec.LM", ec.LM), _function("ec.ModelSpec", ec.ModelSpec)]
    parts.append(
        "## Records\n\nEvery record has `to_json()`, `to_dict()`, `save(path)`; "
        "`ec.load_record` reads them back.\n"
    )
    records = [getattr(ec, n) for n in sorted(ec.__all__)]
    parts += [_record(r) for r in records if inspect.isclass(r) and hasattr(r, "KIND")]
    parts.append("## Errors\n")
    errors = [n for n in sorted(ec.__all__) if n.endswith("Error")]
    parts += [f"- `ec.{n}`: {inspect.getdoc(getattr(ec, n))}" for n in errors]
    parts.append("\n## Front ends (`ecco_adapters`)\n")
    for module in (html, notebook, vega):
        for n in module.__all__:
            parts.append(_function(f"{module.__name__.split('.')[-1]}.{n}", getattr(module, n)))
    parts.append("\n## Corpus runs (`ecco_adapters.corpus`)\n")
    for name, obj in (
        ("corpus.run_corpus", corpus.run_corpus),
        ("corpus.RunConfig", corpus.RunConfig),
        ("corpus.BatchOptions", corpus.BatchOptions),
        ("corpus.batch.BatchFunction", batch.BatchFunction),
        ("corpus.batch.process_batch", batch.process_batch),
        ("corpus.ray_engine.run", ray_engine.run),
        ("corpus.ray_engine.ray_session", ray_engine.ray_session),
    ):
        parts.append(_function(name, obj))
    return "\n".join(parts)


if __name__ == "__main__":
    Path(__file__).with_name("api.md").write_text(build(), encoding="utf-8")
