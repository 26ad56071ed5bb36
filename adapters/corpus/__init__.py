"""Corpus runs: every analysis over a whole data set, as Parquet tables and a report.

From Python::

    from ecco_adapters.corpus import BatchOptions, RunConfig, run_corpus
    run_corpus(RunConfig(data="prompts.jsonl", out="runs/facts",
                         options=BatchOptions(analyses=("generate", "rankings"))))

or from the command line: ``ecco-core corpus --data prompts.jsonl --out runs/facts``.
Modules: :mod:`.readers` (lazy prompt files), :mod:`.options` and :mod:`.checks` (what to run,
checked without torch), :mod:`.analyses` (one call into the core per analysis and batch),
:mod:`.batch` (the batch function engines call), :mod:`.store` (atomic Parquet parts, resume),
:mod:`.runner` (the local engine), :mod:`.report` (report.html), :mod:`.cli`.
This package imports nothing heavy until a run starts.
"""

from __future__ import annotations

from typing import Any

from .errors import CorpusInputError
from .options import ANALYSES, BatchOptions, RunConfig

__all__ = ["ANALYSES", "BatchOptions", "CorpusInputError", "RunConfig", "run_corpus"]


def run_corpus(config: RunConfig, *, progress: bool = False, lm: Any = None) -> Any:
    """Check and run a corpus run with ``config.engine``; return the output folder (a Path).

    ``lm`` reuses a model already loaded with ``ec.load`` (local engine only; else
    ``config.model`` is loaded). ``RunConfig(engine="ray", address=..., workers=...,
    gpus_per_worker=...)`` runs on Ray Data (``pip install 'ecco-core[ray]'``).
    """
    from .checks import check

    checked = check(config)
    if config.engine == "ray":
        if lm is not None:
            raise CorpusInputError("lm= applies to the local engine; Ray workers load the model")
        from .ray_engine import run as run_ray

        run_ray(checked, progress=progress)
    else:
        from .runner import run

        run(checked, progress=progress, lm=lm)
    return checked.config.out
