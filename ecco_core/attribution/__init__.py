"""Input attributions: how much each source token contributed to each predicted token.

Defaults reproduce Ecco: the explained quantity is the probability of the generated token, the
inputs are the token embeddings (the model adds position embeddings as usual), integrated
gradients use a zero baseline and 50 Gauss-Legendre steps, and each token's score is the L2 norm
of its attribution over embedding dimensions, normalized to sum 1 per predicted token.

The package holds one job per module:

- :mod:`.targets`: the :class:`~.targets.Task` built from a record (inputs, rows, target
  tokens), baselines, and the explained quantity every method differentiates or perturbs;
- :mod:`.native`: the batched gradient engine (integrated gradients, saliency, grad x input);
- :mod:`.captum_methods`: the captum methods, a registry of one function per method, run on
  each prefix as Ecco did;
- :mod:`.methods`: the registry of all methods, aliases and :func:`list_methods`;
- this module: :func:`attribute` (checks, precision, aggregation, the record).

Parameter gradients are switched off throughout; only input gradients are computed.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, overload

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..capture import analysis_mode, model_device
from ..checks import check_choice, check_int
from ..convergence import DEFAULT_TOLERANCE, unconverged_steps
from ..dtypes import resolve_precision
from ..errors import ConvergenceWarning, InvalidArgumentError, InvalidTypeError
from ..loading import LM
from ..records import Attributions, Classification, Generation, MaskedPredictions
from .attention_methods import ATTENTION, check_options
from .methods import ALIASES, METHODS, TOKEN_LEVEL, UNSOUND, list_methods, resolve_method
from .native import NATIVE, ROWS_PER_PASS
from .packs import make_pack, target_values
from .targets import TARGETS, Settings, Task, baseline_embeds, make_task

__all__ = ["ALIASES", "UNSOUND", "attribute", "list_methods", "resolve_method"]

AGGREGATIONS = ("l2", "l1", "sum", "none")
PRECISIONS = ("fp32", "tf32", "bf16")


@contextlib.contextmanager
def _input_gradients_only(model: nn.Module) -> Iterator[None]:
    """Switch off parameter gradients (restored after) and enter eval mode."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        with analysis_mode(model), torch.enable_grad():
            yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@contextlib.contextmanager
def _precision(mode: str, device: torch.device) -> Iterator[None]:
    if mode == "fp32":
        yield
    elif mode == "tf32":
        previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous
    else:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield


def _aggregate(
    raw: np.ndarray, aggregation: str, token_level: bool
) -> tuple[np.ndarray, np.ndarray]:
    """raw [T, n, hidden] -> (scores [T, n], values [T, n, hidden] or empty)."""
    if token_level:
        per_token = raw[..., 0]  # the same value on every dimension of a token
        magnitude, signed = np.abs(per_token), per_token
    else:
        magnitude = (
            np.linalg.norm(raw, axis=-1) if aggregation == "l2" else np.abs(raw).sum(axis=-1)
        )
        signed = raw.sum(axis=-1)
    if aggregation in ("l2", "l1"):
        sums = magnitude.sum(axis=1, keepdims=True)
        scores = np.divide(magnitude, sums, out=np.zeros_like(magnitude), where=sums > 0)
    else:
        scores = signed
    values = raw if aggregation == "none" else np.zeros((0, 0, 0), dtype=np.float32)
    return scores.astype(np.float32), values.astype(np.float32)


Explained = Generation | MaskedPredictions | Classification
# Several records (``list`` is invariant, so lists of one kind are named too).
ExplainedMany = (
    list[Generation]
    | list[MaskedPredictions]
    | list[Classification]
    | list[Explained]
    | tuple[Explained, ...]
)


@overload
def attribute(
    lm: LM,
    gen: Explained,
    method: str = ...,
    *,
    target: str = ...,
    foil: int | str | None = ...,
    aggregation: str = ...,
    n_steps: int = ...,
    baseline: Any = ...,
    batch_size: int | None = ...,
    precision: str | torch.dtype = ...,
    n_samples: int = ...,
    seed: int = ...,
    progress: bool | None = ...,
    label: int | str | None = ...,
) -> Attributions: ...


@overload
def attribute(
    lm: LM,
    gen: ExplainedMany,
    method: str = ...,
    *,
    target: str = ...,
    foil: int | str | None = ...,
    aggregation: str = ...,
    n_steps: int = ...,
    baseline: Any = ...,
    batch_size: int | None = ...,
    precision: str | torch.dtype = ...,
    n_samples: int = ...,
    seed: int = ...,
    progress: bool | None = ...,
    label: int | str | None = ...,
) -> tuple[Attributions, ...]: ...


def attribute(
    lm: LM,
    gen: Explained | ExplainedMany,
    method: str = "integrated_gradients",
    *,
    target: str = "probability",
    foil: int | str | None = None,
    aggregation: str = "l2",
    n_steps: int = 50,
    baseline: Any = "zeros",
    batch_size: int | None = None,
    precision: str | torch.dtype = "fp32",
    n_samples: int = 50,
    seed: int = 0,
    progress: bool | None = None,
    label: int | str | None = None,
) -> Attributions | tuple[Attributions, ...]:
    """Attribute every generated token (or masked prediction) to the source tokens.

    Parameters
    ----------
    lm : handle from :func:`ecco_core.load`.
    gen : a :class:`Generation` (causal or encoder-decoder), a :class:`MaskedPredictions`
        (each mask's top prediction is explained) or a :class:`Classification` (the class
        ``label``, by default the predicted one, is explained). A list of records gives a
        tuple of Attributions, one per record, each equal to its own call (to float rounding).
        The native methods (integrated gradients, saliency, grad x input) run the records as
        padded batches: each forward pass holds several records (a classifier's only with
        records of the same length) and one vector-Jacobian product explains the same step of
        all of them. The other methods run the records one after another.
    method : one of :func:`list_methods` or an alias (``ig``, ``gradient``, ``dl``, ``dls``,
        ``gb``, ``deconv``, ``rollout``, ...). ``attention_rollout`` and
        ``attention_last_layer`` score tokens by attention weights (docs/attention.md): they
        refuse a ``target`` other than ``probability``, a ``foil``, a ``baseline`` and
        Classification records, and ignore ``n_steps``, ``batch_size``, ``n_samples`` and
        ``seed``, as saliency does.
    target : ``probability`` (Ecco), ``logit`` or ``log_probability`` of the predicted token.
    foil : a token (id or single-token string): explain target minus foil, e.g. why
        " London" rather than " Paris".
    aggregation : ``l2`` (norm over embedding dims, rows sum to 1; Ecco), ``l1`` (same with
        absolute sums), ``sum`` (signed), ``none`` (also keep per-dimension ``values``).
    n_steps : integration steps of integrated gradients (Gauss-Legendre).
    baseline : ``zeros``, ``pad``, ``unk``, ``mask`` (that token's embedding), or a tensor
        [hidden] or [n_input_rows, hidden].
    batch_size : sequences per forward pass of the native methods: records x interpolation
        points (a list runs in consecutive groups of up to ``batch_size`` records). By default,
        as many records as fit ``ROWS_PER_PASS`` = 400 token rows, and equal batches of points
        of at most that many rows; on CUDA an out-of-memory error halves the points, then
        splits the records, and goes on.
    precision : ``fp32``; ``tf32`` (CUDA) or ``bf16`` record their measured deviation. Any
        spelling works: ``"bf16"``, ``"bfloat16"``, ``torch.bfloat16`` (``ecco_core.dtypes``).
    n_samples, seed : samples of the sampling methods (SHAP, LIME) and their random seed.
    progress : show a progress bar (default: only in interactive terminals and notebooks).
    label : for a Classification, the class (index or name) to explain; ``foil`` may then
        name another class.

    Warns
    -----
    ConvergenceWarning
        once per call, when integrated gradients' completeness delta exceeds 5% of the
        explained value for some explained tokens (their scores are unreliable; the views mark
        them too): use more ``n_steps`` or another baseline.
    """
    single = isinstance(gen, (Generation, MaskedPredictions, Classification))
    records = [gen] if single else gen
    if not isinstance(records, (list, tuple)):
        raise InvalidTypeError(
            "attribute needs a Generation, MaskedPredictions or Classification record or a list "
            f"of them, got {type(gen).__name__}"
        )
    if not records:
        raise InvalidArgumentError("the list of records is empty; give at least one record")
    name = resolve_method(method)
    target = check_choice("target", target, TARGETS)
    aggregation = check_choice("aggregation", aggregation, AGGREGATIONS)
    precision = resolve_precision(precision)
    n_steps = check_int("n_steps", n_steps, 1)
    n_samples = check_int("n_samples", n_samples, 1)
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size, 1)
    if lm.spec.head_input is None and lm.spec.kind != "classifier":
        raise InvalidArgumentError(f"{lm.name} has no LM head: there is no prediction to explain")
    if aggregation == "none" and name in TOKEN_LEVEL:
        raise InvalidArgumentError(
            f"{name} scores whole tokens; aggregation='none' needs a gradient method"
        )
    device = model_device(lm.model)
    if precision == "tf32" and device.type != "cuda":
        raise InvalidArgumentError("precision='tf32' exists only on CUDA; use fp32 or bf16")
    if name in ATTENTION:
        for record in records:
            check_options(name, record, target, foil, baseline)
    tasks = [make_task(lm, record, target, foil, label) for record in records]
    bases = [baseline_embeds(lm, task, baseline) for task in tasks]
    hide = None if progress is None else not progress
    settings = Settings(
        n_steps=n_steps,
        batch_size=batch_size,
        n_samples=n_samples,
        seed=seed,
        hide_progress=hide if single else True,
    )
    baseline_name = baseline if isinstance(baseline, str) else "tensor"
    options = {
        "method": name,
        "target": target,
        "foil": tasks[0].foil_id,
        "aggregation": aggregation,
        "n_steps": n_steps,
        "baseline": "none" if name in ATTENTION else baseline_name,
        "batch_size": batch_size,
        "precision": precision,
        "n_samples": n_samples,
        "seed": seed,
    }
    results: dict[int, Attributions] = {}
    bar = tqdm(total=len(records), desc=f"{name} ({len(records)} records)", disable=hide or single)
    for group in _packs(lm, tasks, name, batch_size):
        found = _attribute_pack(
            lm,
            [records[i] for i in group],
            [tasks[i] for i in group],
            [bases[i] for i in group],
            settings,
            options,
        )
        results.update(zip(group, found, strict=True))
        bar.update(len(group))
    bar.close()
    ordered = [results[i] for i in range(len(records))]
    _warn_if_unconverged(ordered, n_steps)
    return ordered[0] if single else tuple(ordered)


def _packs(lm: LM, tasks: Sequence[Task], name: str, batch_size: int | None) -> list[list[int]]:
    """Indices of the records run together: consecutive records, as many as ``batch_size``
    (by default as many as fit ``ROWS_PER_PASS`` token rows), for the native methods only.

    A classifier's records go together only with records of the same length (a classifier's
    head may read the last position, which padding would move).
    """
    if name not in NATIVE:
        return [[i] for i in range(len(tasks))]
    buckets: dict[int, list[int]] = {}
    for i, task in enumerate(tasks):
        key = task.embeds.shape[1] if lm.spec.kind == "classifier" else 0
        buckets.setdefault(key, []).append(i)
    groups: list[list[int]] = []
    for members in buckets.values():
        group: list[int] = []
        width = 0
        for i in members:
            wider = max(width, tasks[i].embeds.shape[1])
            full = (
                len(group) == batch_size if batch_size else (len(group) + 1) * wider > ROWS_PER_PASS
            )
            if group and full:
                groups.append(group)
                group, wider = [], tasks[i].embeds.shape[1]
            group.append(i)
            width = wider
        groups.append(group)
    return groups


def _attribute_pack(
    lm: LM,
    records: Sequence[Any],
    tasks: Sequence[Task],
    bases: Sequence[torch.Tensor],
    settings: Settings,
    options: dict[str, Any],
) -> list[Attributions]:
    """:func:`attribute` of records run together (see :func:`_packs`)."""
    name, aggregation, precision = options["method"], options["aggregation"], options["precision"]
    device = model_device(lm.model)
    all_slots = list(range(max(len(task.rows) for task in tasks)))
    token_level = name in TOKEN_LEVEL

    def run(
        tasks: Sequence[Task], bases: Sequence[torch.Tensor], slots: list[int], mode: str
    ) -> list[np.ndarray]:
        try:
            with _input_gradients_only(lm.model), _precision(mode, device):
                raws = METHODS[name](make_pack(tasks, bases), slots, settings)
        except torch.OutOfMemoryError:
            if device.type != "cuda" or len(tasks) == 1:
                raise
            torch.cuda.empty_cache()
            half = len(tasks) // 2
            return run(tasks[:half], bases[:half], slots, mode) + run(
                tasks[half:], bases[half:], slots, mode
            )
        return [raw.detach().cpu().numpy() for raw in raws]

    raws = run(tasks, bases, all_slots, precision)
    references = run(tasks, bases, [0], "fp32") if precision != "fp32" else []
    pack = make_pack(tasks, bases)
    x = torch.cat([pack.embeds, pack.base])  # run_body enters analysis mode itself
    ends = target_values(pack, x, all_slots, grad=False).float().cpu()
    out = []
    for i, (record, task, raw) in enumerate(zip(records, tasks, raws, strict=True)):
        scores, values = _aggregate(raw, aggregation, token_level)
        deviation = 0.0
        if references:
            reference, _ = _aggregate(references[i], aggregation, token_level)
            deviation = float(np.abs(reference[0] - scores[0]).max())
        n = len(task.rows)
        real, base = ends[i, :n].numpy(), ends[len(tasks) + i, :n].numpy()
        delta = np.zeros(0, dtype=np.float32)
        if name == "integrated_gradients":
            delta = raw.sum(axis=(1, 2)) - (real - base)
        out.append(_record(lm, record, task, scores, values, real, delta, deviation, options))
    return out


def _record(
    lm: LM,
    gen: Any,
    task: Task,
    scores: np.ndarray,
    values: np.ndarray,
    target_values: np.ndarray,
    delta: np.ndarray,
    deviation: float,
    options: dict[str, Any],
) -> Attributions:
    """The Attributions record of one explained record (scores [T, n_rows] padded to its
    tokens)."""
    n_tokens = gen.token_ids.shape[0]
    pad = n_tokens - scores.shape[1]
    scores = np.pad(scores, ((0, 0), (0, pad)))
    if values.size:
        values = np.pad(values, ((0, 0), (0, pad), (0, 0)))
    is_gen = isinstance(gen, Generation)
    if isinstance(gen, Classification):
        positions = [-1]
    else:
        positions = [r + 1 for r in task.rows] if is_gen else task.rows
    return Attributions(
        scores=scores,
        values=values,
        token_ids=gen.token_ids,
        tokens=gen.tokens,
        n_input_tokens=gen.n_input_tokens if is_gen else n_tokens,
        n_encoder_tokens=gen.n_encoder_tokens if is_gen else 0,
        target_positions=np.array(positions, dtype=np.int64),
        target_ids=np.array(task.target_ids, dtype=np.int64),
        foil_id=task.foil_id,
        target_values=target_values,
        convergence_delta=delta.astype(np.float32),
        method=options["method"],
        target=options["target"],
        aggregation=options["aggregation"],
        baseline=options["baseline"],
        precision=options["precision"],
        precision_deviation=deviation,
        provenance=lm.provenance("attribute", options),
    )


def _warn_if_unconverged(records: Sequence[Attributions], n_steps: int) -> None:
    """One :class:`ConvergenceWarning` naming the unconverged tokens and what to do."""
    flags = [unconverged_steps(record) for record in records]
    flagged = [i for i, f in enumerate(flags) if f.any()]
    if not flagged:
        return
    record, worst_flags = max(
        ((records[i], flags[i]) for i in flagged),
        key=lambda pair: float(np.abs(pair[0].convergence_delta[pair[1]]).max()),
    )
    worst = int(np.argmax(np.where(worst_flags, np.abs(record.convergence_delta), -1.0)))
    position = int(record.target_positions[worst])
    label = repr(record.tokens[position]) if position >= 0 else f"class {record.target_ids[worst]}"
    n_flagged = sum(int(flags[i].sum()) for i in flagged)
    n_tokens = sum(len(f) for f in flags)
    where = f" in {len(flagged)} of {len(records)} records" if len(records) > 1 else ""
    warnings.warn(
        ConvergenceWarning(
            f"integrated gradients did not converge for {n_flagged} of {n_tokens} explained "
            f"tokens{where}: the completeness delta exceeds {DEFAULT_TOLERANCE:.0%} of the "
            f"explained value (worst {label}: delta {float(record.convergence_delta[worst]):.3g}"
            f" for a {record.target} of {float(record.target_values[worst]):.3g}), so their "
            f"scores are unreliable. Use more n_steps (now {n_steps}) or another baseline "
            f"(now {record.baseline!r}); the views mark these tokens"
        ),
        stacklevel=3,
    )
