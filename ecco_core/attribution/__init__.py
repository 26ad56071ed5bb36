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

from ..capture import analysis_mode, model_device
from ..checks import check_choice, check_int
from ..convergence import DEFAULT_TOLERANCE, unconverged_steps
from ..dtypes import resolve_precision
from ..errors import ConvergenceWarning, InvalidArgumentError, InvalidTypeError
from ..loading import LM
from ..records import Attributions, Classification, Generation, MaskedPredictions
from .attention_methods import ATTENTION, check_options
from .methods import ALIASES, METHODS, TOKEN_LEVEL, UNSOUND, list_methods, resolve_method
from .targets import TARGETS, Settings, baseline_embeds, make_task, target_values

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
        tuple of Attributions, one per record, each equal to its own call. The records run one
        after the other (every method, native and captum); the native engine batches each
        record's interpolation points and shares its prefixes, so integrated gradients already
        fill passes of ``ROWS_PER_PASS`` rows, while saliency and grad x input (one point per
        record) would gain from padding several records into one pass, which is not done.
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
    batch_size : interpolation points per forward pass (default: equal batches of at most
        ``ROWS_PER_PASS`` = 400 token rows); on CUDA an out-of-memory error halves it and goes
        on.
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
    results = tuple(
        _attribute_one(
            lm,
            record,
            method,
            target=target,
            foil=foil,
            aggregation=aggregation,
            n_steps=n_steps,
            baseline=baseline,
            batch_size=batch_size,
            precision=precision,
            n_samples=n_samples,
            seed=seed,
            progress=progress,
            label=label,
        )
        for record in records
    )
    return results[0] if single else results


def _attribute_one(
    lm: LM,
    gen: Any,
    method: str,
    *,
    target: str,
    foil: int | str | None,
    aggregation: str,
    n_steps: int,
    baseline: Any,
    batch_size: int | None,
    precision: str | torch.dtype,
    n_samples: int,
    seed: int,
    progress: bool | None,
    label: int | str | None,
) -> Attributions:
    """:func:`attribute` of one record."""
    name = resolve_method(method)
    target = check_choice("target", target, TARGETS)
    aggregation = check_choice("aggregation", aggregation, AGGREGATIONS)
    precision = resolve_precision(precision)
    n_steps = check_int("n_steps", n_steps, 1)
    n_samples = check_int("n_samples", n_samples, 1)
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size, 1)
    if name in ATTENTION:
        check_options(name, gen, target, foil, baseline)
    if lm.spec.head_input is None and lm.spec.kind != "classifier":
        raise InvalidArgumentError(f"{lm.name} has no LM head: there is no prediction to explain")
    if aggregation == "none" and name in TOKEN_LEVEL:
        raise InvalidArgumentError(
            f"{name} scores whole tokens; aggregation='none' needs a gradient method"
        )
    device = model_device(lm.model)
    if precision == "tf32" and device.type != "cuda":
        raise InvalidArgumentError("precision='tf32' exists only on CUDA; use fp32 or bf16")
    task = make_task(lm, gen, target, foil, label)
    base = baseline_embeds(lm, task, baseline)
    settings = Settings(
        n_steps=n_steps,
        batch_size=batch_size,
        n_samples=n_samples,
        seed=seed,
        hide_progress=None if progress is None else not progress,
    )
    all_steps = list(range(len(task.rows)))

    def run(steps: Sequence[int], mode: str) -> np.ndarray:
        with _input_gradients_only(lm.model), _precision(mode, device):
            raw = METHODS[name](task, base, steps, settings)
        return raw.detach().cpu().numpy()

    raw = run(all_steps, precision)
    scores, values = _aggregate(raw, aggregation, name in TOKEN_LEVEL)
    deviation = 0.0
    if precision != "fp32":
        reference, _ = _aggregate(run([0], "fp32"), aggregation, name in TOKEN_LEVEL)
        deviation = float(np.abs(reference[0] - scores[0]).max())
    with _input_gradients_only(lm.model), torch.no_grad():
        ends = target_values(task, torch.cat([task.embeds, base]), all_steps).float().cpu()
    delta = np.zeros(0, dtype=np.float32)
    if name == "integrated_gradients":
        delta = raw.sum(axis=(1, 2)) - (ends[0] - ends[1]).numpy()

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
    baseline_name = baseline if isinstance(baseline, str) else "tensor"
    if name in ATTENTION:
        baseline_name = "none"
    params = {
        "method": name,
        "target": target,
        "foil": task.foil_id,
        "aggregation": aggregation,
        "n_steps": n_steps,
        "baseline": baseline_name,
        "batch_size": batch_size,
        "precision": precision,
        "n_samples": n_samples,
        "seed": seed,
    }
    record = Attributions(
        scores=scores,
        values=values,
        token_ids=gen.token_ids,
        tokens=gen.tokens,
        n_input_tokens=gen.n_input_tokens if is_gen else n_tokens,
        n_encoder_tokens=gen.n_encoder_tokens if is_gen else 0,
        target_positions=np.array(positions, dtype=np.int64),
        target_ids=np.array(task.target_ids, dtype=np.int64),
        foil_id=task.foil_id,
        target_values=ends[0].numpy(),
        convergence_delta=delta.astype(np.float32),
        method=name,
        target=target,
        aggregation=aggregation,
        baseline=baseline_name,
        precision=precision,
        precision_deviation=deviation,
        provenance=lm.provenance("attribute", params),
    )
    _warn_if_unconverged(record, n_steps)
    return record


def _warn_if_unconverged(record: Attributions, n_steps: int) -> None:
    """One :class:`ConvergenceWarning` naming the unconverged tokens and what to do."""
    flags = unconverged_steps(record)
    if not flags.any():
        return
    worst = int(np.argmax(np.where(flags, np.abs(record.convergence_delta), -1.0)))
    position = int(record.target_positions[worst])
    label = repr(record.tokens[position]) if position >= 0 else f"class {record.target_ids[worst]}"
    warnings.warn(
        ConvergenceWarning(
            f"integrated gradients did not converge for {int(flags.sum())} of {len(flags)} "
            f"explained tokens: the completeness delta exceeds {DEFAULT_TOLERANCE:.0%} of the "
            f"explained value (worst {label}: delta {float(record.convergence_delta[worst]):.3g}"
            f" for a {record.target} of {float(record.target_values[worst]):.3g}), so their "
            f"scores are unreliable. Use more n_steps (now {n_steps}) or another baseline "
            f"(now {record.baseline!r}); the views mark these tokens"
        ),
        stacklevel=3,
    )
