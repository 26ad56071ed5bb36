"""The work of one batch: input rows in, one table per kind out.

An engine is a loop that feeds batches to :class:`BatchFunction` (or to :func:`process_batch`,
the pure function it wraps) and stores what comes back. The local engine runs the loop in this
process; a distributed engine builds one ``BatchFunction`` per worker (it holds the loaded
model) and calls it on its batches. Both give the same tables, since the work of a batch
depends only on (model, rows, options, factors).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import numpy as np
import pyarrow as pa

import ecco_core as ec
from ecco_core.records import Record
from ecco_core.tables import CONTEXT_TOKENS, context_window, schema, table, to_tables

from . import analyses
from .options import BatchOptions

TEXT_IN_ERRORS = 200  # characters of the prompt kept in an errors row


@attrs.frozen(kw_only=True)
class Factors:
    """NMF neuron factors fitted on a sample of the corpus, used to score every batch.

    Attributes
    ----------
    components : float32 [n_factors, n_neurons] neuron loadings (neurons of every block,
        block by block, as in ``factor_loadings``).
    """

    components: np.ndarray

    def codes(self, acts: ec.Activations) -> np.ndarray:
        """float32 [n_factors, n_positions]: each position's activation of each factor.

        The non-negative least-squares code of the position's (clipped) activations against
        the fixed factors (``ec.factor_codes``, as scikit-learn's ``NMF.transform``).
        """
        return ec.factor_codes(acts, self.components)


def check_prompt(lm: ec.LM, text: str | None, max_new_tokens: int) -> tuple[str, str] | None:
    """(stage, message) when ``text`` cannot be generated from, else None."""
    if text is None or not text.strip():
        return "input", "the prompt is empty"
    try:
        ids = lm.tokenizer(text, add_special_tokens=True)["input_ids"]
    except Exception as exc:
        return "tokenize", f"the tokenizer failed: {_message(exc)}"
    if not len(ids):
        return "tokenize", "the prompt tokenizes to no tokens"
    limit = lm.spec.max_positions
    needed = len(ids) + (max_new_tokens if lm.spec.kind == "causal" else 0)
    if limit is not None and needed > limit:
        return "tokenize", (
            f"prompt of {len(ids)} tokens plus {max_new_tokens} new tokens exceeds the "
            f"model's context of {limit} tokens"
        )
    return None


def _storable(text: str) -> str:
    """``text`` with what UTF-8 cannot hold (lone surrogates) written as escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _message(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def examples_schema(id_type: pa.DataType) -> pa.Schema:
    """``factor_examples`` of a corpus run: the core's columns plus the context, token by token.

    ``context_tokens`` and ``context_activations`` are the tokens around the example (up to
    ``CONTEXT_TOKENS`` each side) and the factor's activation at each; ``context_index`` is the
    example's place among them (the report shades the context with them).
    """
    extra = [
        pa.field("context_tokens", pa.list_(pa.string())),
        pa.field("context_activations", pa.list_(pa.float32())),
        pa.field("context_index", pa.int64()),
    ]
    core = schema("factor_examples", id_type)
    return pa.schema([*core, *extra])


def factor_examples(
    factors: Factors,
    acts: Sequence[ec.Activations],
    ids: Sequence[Any],
    top: int,
    id_type: pa.DataType,
) -> pa.Table:
    """The ``top`` strongest positions of each factor among ``acts`` (ranks within them)."""
    target = examples_schema(id_type)
    rows: dict[str, list[Any]] = {n: [] for n in target.names}
    candidates = []  # (factor, activation, order, prompt_id, position, record, codes)
    order = 0
    for pid, rec in zip(ids, acts, strict=True):
        codes = factors.codes(rec)  # [n_factors, n_positions]
        for f in range(codes.shape[0]):
            for p in np.argsort(-codes[f], kind="stable")[:top].tolist():
                candidates.append((f, float(codes[f, p]), order, pid, p, rec, codes[f]))
                order += 1
    candidates.sort(key=lambda c: (c[0], -c[1], c[2]))
    rank = 0
    for i, (f, value, _, pid, p, rec, code) in enumerate(candidates):
        rank = 1 if i == 0 or candidates[i - 1][0] != f else rank + 1
        if rank > top:
            continue
        for name, v in (
            ("prompt_id", pid),
            ("factorization", 0),
            ("factor", f),
            ("rank", rank),
            ("position", p),
            ("token_id", int(rec.token_ids[p])),
            ("token", rec.tokens[p]),
            ("activation", value),
            ("context", context_window(rec.tokens, p)),
            (
                "context_tokens",
                list(rec.tokens[max(0, p - CONTEXT_TOKENS) : p + CONTEXT_TOKENS + 1]),
            ),
            (
                "context_activations",
                code[max(0, p - CONTEXT_TOKENS) : p + CONTEXT_TOKENS + 1].tolist(),
            ),
            ("context_index", min(p, CONTEXT_TOKENS)),
        ):
            rows[name].append(v)
    return pa.table(rows, schema=target)


def process_batch(
    lm: ec.LM,
    ids: Sequence[Any],
    texts: Sequence[str | None],
    options: BatchOptions,
    factors: Factors | None = None,
    problems: Sequence[str] | None = None,
) -> dict[str, pa.Table]:
    """Run every analysis of ``options`` on one batch of prompts.

    Parameters
    ----------
    lm : the loaded model.
    ids : [n] prompt ids (int row numbers, or strings when ``options.string_ids``).
    texts : [n] prompt texts (None for a row that could not be read).
    options : what to compute.
    factors : fitted NMF factors; required when ``neurons`` is among the analyses.
    problems : [n] why a row could not be read ("" when it was read).

    Returns
    -------
    ``{table: pyarrow.Table}`` for every name in ``options.tables()`` (empty tables included),
    ``prompt_id`` int64, or string when ``options.string_ids``. A prompt that fails at any
    stage gets an ``errors`` row (prompt_id, stage, message, text) and keeps the tables of
    earlier stages.
    """
    id_type = pa.string() if options.string_ids else pa.int64()
    errors: list[dict[str, Any]] = []

    def fail(pid: Any, stage: str, message: str, text: str | None) -> None:
        clipped = None if text is None else _storable(text[:TEXT_IN_ERRORS])
        row = {"prompt_id": pid, "stage": stage, "message": _storable(message), "text": clipped}
        errors.append(row)

    good_ids, good_texts = _readable(lm, ids, texts, problems, options, fail)
    records: list[Record] = []
    record_ids: list[Any] = []
    gens: list[ec.Generation] = []
    gen_ids: list[Any] = []
    texts_of: dict[int, str | None] = {}
    outcomes = (
        analyses.generate(lm, good_texts, max_new_tokens=options.max_new_tokens)
        if good_texts
        else []
    )
    for pid, text, out in zip(good_ids, good_texts, outcomes, strict=True):
        if isinstance(out, Exception):
            fail(pid, "generate", _message(out), text)
        else:
            texts_of[len(gens)] = text
            gens.append(out)
            gen_ids.append(pid)
    records += gens
    record_ids += gen_ids

    def collect(stage: str, results: list[Any]) -> list[Any]:
        """Records of the prompts that succeeded; an errors row for each that failed."""
        kept = []
        for j, (pid, out) in enumerate(zip(gen_ids, results, strict=True)):
            if isinstance(out, Exception):
                fail(pid, stage, _message(out), texts_of[j])
                continue
            for rec in out if isinstance(out, tuple) else (out,):
                records.append(rec)
                record_ids.append(pid)
            kept.append((pid, out))
        return kept

    for stage, run in _record_stages(lm, gens, options):
        collect(stage, run())
    examples = None
    if "neurons" in options.analyses:
        if factors is None:
            raise ec.InvalidArgumentError("the neurons analysis needs fitted factors")
        acts_ids, acts = [], []
        for j, (pid, out) in enumerate(zip(gen_ids, analyses.activations(lm, gens), strict=True)):
            if isinstance(out, Exception):
                fail(pid, "neurons", _message(out), texts_of[j])
            else:
                acts_ids.append(pid)
                acts.append(out)
        examples = factor_examples(factors, acts, acts_ids, options.top_examples, id_type)
    made = to_tables(records, prompt_ids=record_ids) if records else {}
    return _batch_tables(options, made, errors, examples, id_type)


def activation_matrix(
    lm: ec.LM,
    ids: Sequence[Any],
    texts: Sequence[str | None],
    options: BatchOptions,
    problems: Sequence[str] | None = None,
) -> np.ndarray:
    """float32 [n_positions, n_layers * n_neurons]: clipped FFN activations of every token.

    The rows are the positions (prompt and generated tokens) of each prompt that generates,
    prompt after prompt in input order; the columns the neurons of every block, block by
    block (the layout of ``factor_loadings``). Prompts that fail are left out here: the
    tables pass gives them their ``errors`` rows.
    """
    _good_ids, good_texts = _readable(lm, ids, texts, problems, options, lambda *_: None)
    if not good_texts:
        return np.zeros((0, 0), dtype=np.float32)
    gens = [
        g
        for g in analyses.generate(lm, good_texts, max_new_tokens=options.max_new_tokens)
        if isinstance(g, ec.Generation)
    ]
    parts = []
    for acts in analyses.activations(lm, gens) if gens else []:
        if isinstance(acts, ec.Activations):
            n_layers, n_neurons, n_positions = acts.values.shape
            values = np.asarray(acts.values, dtype=np.float32)
            parts.append(np.maximum(values.reshape(n_layers * n_neurons, n_positions).T, 0))
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)


def _readable(
    lm: ec.LM,
    ids: Sequence[Any],
    texts: Sequence[str | None],
    problems: Sequence[str] | None,
    options: BatchOptions,
    fail: Callable[[Any, str, str, str | None], None],
) -> tuple[list[Any], list[str]]:
    """(ids, texts) of the rows that can be run; ``fail`` is called for each other row."""
    good_ids: list[Any] = []
    good_texts: list[str] = []
    for i, (pid, text) in enumerate(zip(ids, texts, strict=True)):
        problem = problems[i] if problems is not None else ""
        checked = ("read", problem) if problem else check_prompt(lm, text, options.max_new_tokens)
        if checked is not None or text is None:
            fail(pid, *(checked or ("input", "the prompt is empty")), text)
        else:
            good_ids.append(pid)
            good_texts.append(text)
    return good_ids, good_texts


def _record_stages(
    lm: ec.LM, gens: list[ec.Generation], options: BatchOptions
) -> list[tuple[str, Callable[[], list[Any]]]]:
    """(stage name, run) of each analysis that gives records for the generations, in order."""
    if not gens:
        return []
    chosen = options.analyses
    stages: list[tuple[str, Callable[[], list[Any]]]] = []
    if "rankings" in chosen:
        stages.append(("rankings", lambda: analyses.rankings(lm, gens)))
    if "layer_predictions" in chosen:
        top_k = options.top_k
        stages.append(
            ("layer_predictions", lambda: analyses.layer_predictions(lm, gens, top_k=top_k))
        )
    if "watch" in chosen:
        stages.append(("watch", lambda: analyses.watch(lm, gens, tokens=options.watch)))
    if "attribution" in chosen:
        for method in options.methods:
            run = functools.partial(
                analyses.attribution, lm, gens, method=method, n_steps=options.n_steps
            )
            stages.append((f"attribution {method}", run))
    return stages


def _batch_tables(
    options: BatchOptions,
    made: dict[str, pa.Table],
    errors: list[dict[str, Any]],
    examples: pa.Table | None,
    id_type: pa.DataType,
) -> dict[str, pa.Table]:
    """Every table of ``options.tables()``, empty where nothing was made."""
    result: dict[str, pa.Table] = {}
    for name in options.tables():
        if name == "errors":
            result[name] = pa.Table.from_pylist(errors, schema=schema("errors", id_type))
        elif name == "factor_examples":
            empty = examples_schema(id_type).empty_table()
            result[name] = examples if examples is not None else empty
        elif name in made:
            result[name] = made[name].cast(schema(name, id_type))
        else:
            result[name] = table(name, [], id_type)
    return result


def versions() -> dict[str, str]:
    """Versions of the libraries that compute the tables (on the machine running the model)."""
    import platform

    import torch
    import transformers

    return {
        "ecco_core": ec.__version__,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "pyarrow": pa.__version__,
        "python": platform.python_version(),
    }


def describe(
    lm: ec.LM, options: BatchOptions, components: np.ndarray | None = None
) -> dict[str, Any]:
    """What a run's driver needs from the model, as plain values (it may not hold the model).

    Returns ``model``, ``model_kind``, ``n_layers``, ``device``, ``versions``, ``watch_error``
    (why a ``--watch`` token is unusable, or None) and, when ``components`` (fitted factors
    [k, n_layers * n_neurons]) are given, ``promoted_ids`` [k, 10] and ``promoted_tokens``.
    """
    from ecco_core.lens import watch_ids

    from .factors import PROMOTED

    facts: dict[str, Any] = {
        "model": lm.name,
        "model_kind": lm.spec.kind,
        "n_layers": lm.spec.n_layers,
        "device": str(lm.device),
        "versions": versions(),
        "watch_error": None,
    }
    if "watch" in options.analyses:
        try:
            watch_ids(lm, list(options.watch))
        except ec.InvalidArgumentError as exc:
            facts["watch_error"] = str(exc)
    if components is not None:
        ids, tokens = ec.promoted_tokens(lm, components, range(lm.spec.n_layers), top_k=PROMOTED)
        facts["promoted_ids"], facts["promoted_tokens"] = ids, tokens
    return facts


def load_model(model: str | None, device: str | None, dtype: str | None) -> ec.LM:
    """Load the model a batch function runs (None: the embedded SmolLM2)."""
    return ec.load(model, device=device, dtype=dtype)


class BatchFunction:
    """A loaded model plus options: maps a batch of input rows to a dict of tables.

    Build one per worker (loading the model once), then call it on each batch::

        fn = BatchFunction(options, model="HuggingFaceTB/SmolLM2-135M-Instruct")
        tables = fn({"prompt_id": [0, 1], "text": ["The Eiffel Tower is in", "Rome is in"]})

    ``batch`` is a mapping of columns: ``prompt_id`` and ``text`` (sequences of equal length,
    numpy arrays accepted) and optionally ``problem`` (why a row could not be read, "" if it
    was). The result is :func:`process_batch`'s: ``{table name: pyarrow.Table}``.
    """

    def __init__(
        self,
        options: BatchOptions,
        *,
        model: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        factors: Factors | None = None,
        lm: ec.LM | None = None,
    ) -> None:
        self.options = options
        self.factors = factors
        self.lm = lm if lm is not None else load_model(model, device, dtype)

    def __call__(self, batch: Mapping[str, Sequence[Any]]) -> dict[str, pa.Table]:
        ids = [i.item() if isinstance(i, np.generic) else i for i in batch["prompt_id"]]
        texts = [None if t is None else str(t) for t in batch["text"]]
        problems = [str(p) for p in batch["problem"]] if "problem" in batch else None
        return process_batch(self.lm, ids, texts, self.options, self.factors, problems)
