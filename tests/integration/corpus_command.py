"""The ``ecco-core corpus`` command line the corpus and Ray tests run in a subprocess."""

from __future__ import annotations

import sys
from pathlib import Path


def corpus_command(data: Path, out: Path, model: Path, analyses: str, *extra: str) -> list[str]:
    """Run ``analyses`` on ``model`` quietly, in batches of 2 prompts with 2 new tokens."""
    return [
        sys.executable,
        "-m",
        "ecco_adapters.entry",
        "corpus",
        "--data",
        str(data),
        "--out",
        str(out),
        "--model",
        str(model),
        "--batch-size",
        "2",
        "--max-new-tokens",
        "2",
        "--analyses",
        analyses,
        "--quiet",
        *extra,
    ]
