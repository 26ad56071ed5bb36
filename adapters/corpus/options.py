"""What a corpus run computes, as plain values (no torch: checked before the model loads).

:class:`BatchOptions` says what every batch computes; :class:`RunConfig` adds where the data
and the output are, the model and the batching. Both are recorded in ``manifest.json``; a
resumed run must match the recorded values.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs

from .. import names
from .errors import CorpusInputError

ENGINES = ("local", "ray")
ANALYSES = ("generate", "rankings", "layer_predictions", "watch", "attribution", "neurons")


def parse_analyses(text: str) -> tuple[str, ...]:
    """``"generate,rankings"`` -> the analyses in :data:`ANALYSES` order (generate included)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in ANALYSES]
    if unknown or not names:
        shown = ", ".join(map(repr, unknown)) if unknown else "none given"
        raise CorpusInputError(
            f"unknown analysis {shown}; valid: {','.join(ANALYSES)} (comma-separated)"
        )
    return tuple(a for a in ANALYSES if a in names or a == "generate")


def resolve_method(name: str) -> str:
    """Canonical attribution method for ``name`` or an alias, else CorpusInputError."""
    return names.resolve_method(name, CorpusInputError)


def _tuple(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _positive(name: str) -> Any:
    def check(_: Any, __: Any, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CorpusInputError(f"{name} must be an integer of at least 1, got {value!r}")

    return check


@attrs.frozen(kw_only=True)
class BatchOptions:
    """What to compute for every prompt.

    Attributes
    ----------
    analyses : subset of :data:`ANALYSES`, in that order; ``generate`` is always included
        (the other analyses explain the generation).
    methods : attribution methods (canonical names) for the ``attribution`` analysis.
    max_new_tokens : tokens generated per prompt (greedy decoding).
    n_steps : integration steps of integrated gradients.
    top_k : tokens per layer in ``layer_predictions``.
    watch : tokens (each a single token, e.g. " Paris") ranked at the first generated position.
    top_examples : examples kept per factor in ``factor_examples``.
    string_ids : prompt ids are strings (an id column was given) rather than row numbers.
    """

    analyses: tuple[str, ...] = attrs.field(default=("generate", "rankings"), converter=_tuple)
    methods: tuple[str, ...] = attrs.field(default=("integrated_gradients",), converter=_tuple)
    max_new_tokens: int = attrs.field(default=4, validator=_positive("--max-new-tokens"))
    n_steps: int = attrs.field(default=50, validator=_positive("--n-steps"))
    top_k: int = attrs.field(default=5, validator=_positive("--top-k"))
    watch: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    top_examples: int = attrs.field(default=10, validator=_positive("--top-examples"))
    string_ids: bool = False

    def __attrs_post_init__(self) -> None:
        bad = [a for a in self.analyses if a not in ANALYSES]
        if bad or "generate" not in self.analyses:
            raise CorpusInputError(f"analyses must include generate and be among {ANALYSES}")
        for method in self.methods:
            if method not in names.METHODS:
                resolve_method(method)  # raises, listing the valid names
        if "attribution" in self.analyses and not self.methods:
            raise CorpusInputError("the attribution analysis needs at least one --method")
        if "watch" in self.analyses and not self.watch:
            raise CorpusInputError('the watch analysis needs tokens: --watch " Paris" " Rome"')

    def tables(self) -> list[str]:
        """Names of the tables every batch produces with these options."""
        wanted = {
            "generations": True,
            "rankings": "rankings" in self.analyses,
            "layer_predictions": "layer_predictions" in self.analyses,
            "watch": "watch" in self.analyses,
            "attributions": "attribution" in self.analyses,
            "factor_examples": "neurons" in self.analyses,
            "errors": True,
        }
        return [name for name, on in wanted.items() if on]


@attrs.frozen(kw_only=True)
class RunConfig:
    """A whole corpus run.

    Attributes
    ----------
    data : the prompt file; column, id_column : where the text and the ids are.
    out : the output folder.
    model : hub id or folder (None: the embedded SmolLM2-135M-Instruct).
    device, dtype : where and in what precision the model runs (None: defaults).
    batch_size : prompts per batch (and per Parquet part file).
    options : what every batch computes.
    nmf : number of neuron factors (``neurons`` analysis).
    nmf_sample : fit the factors on the first ``nmf_sample`` rows only (None: every row).
    resume : continue the run already in ``out``.
    engine : ``local`` (this process) or ``ray`` (Ray Data); both give the same tables.
    address : Ray cluster to join (``auto``, ``host:port``, ``ray://host:port``); None starts
        a local Ray instance for the run (or uses the one this process already started).
    workers : Ray actors, each with its own copy of the model (None: 2 on CPUs, as many as
        the cluster's GPUs allow with ``gpus_per_worker``).
    gpus_per_worker : GPUs reserved per Ray actor (0: the actors run on CPUs).
    """

    data: Path = attrs.field(converter=Path)
    out: Path = attrs.field(converter=Path)
    model: str | None = None
    column: str = "text"
    id_column: str | None = None
    device: str | None = None
    dtype: str | None = None
    batch_size: int = attrs.field(default=16, validator=_positive("--batch-size"))
    options: BatchOptions = attrs.field(factory=BatchOptions)
    nmf: int = attrs.field(default=8, validator=_positive("--nmf"))
    nmf_sample: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(_positive("--nmf-sample"))
    )
    resume: bool = False
    engine: str = "local"
    address: str | None = None
    workers: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(_positive("--workers"))
    )
    gpus_per_worker: float = 0.0

    def __attrs_post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise CorpusInputError(f"unknown engine {self.engine!r}; valid: {', '.join(ENGINES)}")
        if self.engine == "local":
            given = [
                flag
                for flag, value in (
                    ("--address", self.address),
                    ("--workers", self.workers),
                    ("--gpus-per-worker", self.gpus_per_worker or None),
                )
                if value is not None
            ]
            if given:
                raise CorpusInputError(f"{', '.join(given)} applies only to --engine ray")
        if isinstance(self.gpus_per_worker, bool) or not (
            isinstance(self.gpus_per_worker, (int, float)) and self.gpus_per_worker >= 0
        ):
            raise CorpusInputError(
                f"--gpus-per-worker must be a number >= 0 (0: CPU), got {self.gpus_per_worker!r}"
            )

    def key(self) -> dict[str, Any]:
        """The values that decide the results; a resumed run must have the same ones."""
        return {
            "data": str(self.data.expanduser().resolve()),
            "column": self.column,
            "id_column": self.id_column,
            "model": self.model,
            "dtype": self.dtype,
            "batch_size": self.batch_size,
            "nmf": self.nmf if "neurons" in self.options.analyses else None,
            "nmf_sample": self.nmf_sample if "neurons" in self.options.analyses else None,
            **{k: v for k, v in attrs.asdict(self.options).items() if k != "string_ids"},
            "analyses": list(self.options.analyses),
            "methods": list(self.options.methods),
            "watch": list(self.options.watch),
        }
