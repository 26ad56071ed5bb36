"""Input attributions: how much each source token contributed to each predicted token.

Defaults reproduce Ecco: the explained quantity is the probability of the generated token, the
inputs are the token embeddings (the model adds position embeddings as usual), integrated
gradients use a zero baseline and 50 Gauss-Legendre steps, and each token's score is the L2 norm
of its attribution over embedding dimensions, normalized to sum 1 per predicted token.

Gradient methods (integrated gradients, saliency, grad x input) are computed natively. The
causal mask makes the prediction at position ``t`` depend only on its prefix, so one forward
pass over a prefix serves every generated token inside it with the results of Ecco's
per-prefix runs. Tokens are grouped by prefix so that the backward passes of early tokens skip
the rows only later tokens see (:func:`_prefix_groups`). Per group and batch of interpolation
points there is one forward pass; the LM head runs once over the predicting rows only, its
gradients come from one small backward pass, and one batched vector-Jacobian product
(``is_grads_batched``) gives every token's input gradients. Parameter gradients are switched
off. The other methods run captum on each prefix, as Ecco did.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import attrs
import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .capture import analysis_mode, model_device
from .checks import check_choice, check_int
from .errors import InvalidArgumentError, InvalidTypeError
from .head import head_by_forward, head_by_linear
from .lens import watch_ids
from .loading import LM, check_record_ids
from .records import Attributions, Classification, Generation, MaskedPredictions

TARGETS = ("probability", "logit", "log_probability")
AGGREGATIONS = ("l2", "l1", "sum", "none")
PRECISIONS = ("fp32", "tf32", "bf16")
BASELINES = ("zeros", "pad", "unk", "mask")
ALIASES = {
    "ig": "integrated_gradients",
    "gradient": "saliency",
    "input_x_gradient": "grad_x_input",
    "dl": "deep_lift",
    "dls": "deep_lift_shap",
    "gb": "guided_backprop",
    "deconv": "deconvolution",
    "gs": "gradient_shap",
    "ablation": "feature_ablation",
}
UNSOUND = {
    "guided_gradcam": (
        "Guided Grad-CAM needs a convolutional layer whose spatial feature maps it weights; "
        "transformer blocks have none, so the result would be meaningless"
    ),
    "layer_relevance_propagation": (
        "captum's LRP has rules only for linear, convolution, ReLU and pooling layers; "
        "attention, layer norm and GELU/SiLU in transformer blocks have no sound rule there"
    ),
}
UNSOUND["lrp"] = UNSOUND["layer_relevance_propagation"]
TOKEN_LEVEL = ("feature_ablation", "occlusion", "lime", "kernel_shap")


@attrs.frozen
class _Task:
    """What to explain: inputs and the predictions to attribute.

    ``embeds`` [1, n_rows, hidden] are the model inputs (encoder rows first for encoder-decoder
    models); row ``r`` is source token column ``r``. Step ``s`` explains ``target_ids[s]``
    predicted from the output at ``rows[s]``; it sees rows ``[0, visible[s])``.
    """

    lm: LM
    embeds: torch.Tensor
    n_encoder_rows: int
    rows: list[int]
    visible: list[int]
    target_ids: list[int]
    foil_id: int
    target: str


def _scores(task: _Task, logits: torch.Tensor, steps: Sequence[int]) -> torch.Tensor:
    """logits [B, len(steps), vocab] -> the explained quantity [B, len(steps)] of each step."""
    logits = logits.float()
    if task.target == "probability":
        values = torch.softmax(logits, dim=-1)
    elif task.target == "log_probability":
        values = torch.log_softmax(logits, dim=-1)
    else:
        values = logits
    ids = torch.tensor([task.target_ids[s] for s in steps], device=values.device)
    out = values.gather(-1, ids.expand(values.shape[0], -1)[..., None])[..., 0]
    if task.foil_id >= 0:
        out = out - values[..., task.foil_id]
    return out


def _head(lm: LM, hidden: torch.Tensor) -> torch.Tensor:
    spec = lm.spec
    if spec.head_is_linear:
        return head_by_linear(lm.model, hidden, grad=True)
    return head_by_forward(lm.model, spec.kind, str(spec.head_input), hidden, grad=True)


def _body(task: _Task, x: torch.Tensor) -> torch.Tensor:
    """Inputs x [B, n, d] of a causal or masked LM -> the LM head's input [B, n, d]."""
    spec = task.lm.spec
    runner = task.lm.model.get_submodule(str(spec.head_input))
    extra = {"use_cache": False} if spec.kind == "causal" else {}
    return cast(torch.Tensor, runner(inputs_embeds=x, **extra)[0])


def _target_values(task: _Task, x: torch.Tensor, steps: Sequence[int]) -> torch.Tensor:
    """Explained quantity [B, len(steps)] of ``steps`` for inputs x [B, n, hidden].

    ``x`` may hold only a prefix of the rows, as long as it covers the steps' rows.
    """
    lm = task.lm
    model = cast(Any, lm.model)
    if lm.spec.kind == "classifier":
        logits = model(inputs_embeds=x).logits
        return _scores(task, logits[:, None].expand(-1, len(steps), -1), steps)
    rows = [task.rows[s] for s in steps]
    if lm.spec.kind == "encoder-decoder":
        n_enc = task.n_encoder_rows
        logits = model(
            inputs_embeds=x[:, :n_enc], decoder_inputs_embeds=x[:, n_enc:], use_cache=False
        ).logits
        return _scores(task, logits[:, [r - n_enc for r in rows]], steps)
    return _scores(task, _head(lm, _body(task, x)[:, rows]), steps)


def _gradient_seeds(
    task: _Task, x: torch.Tensor, steps: Sequence[int]
) -> tuple[torch.Tensor, list[int], torch.Tensor]:
    """(output, positions, seeds): the gradient of step ``j``'s explained quantity with respect
    to the inputs x [B, n, hidden] is the vector-Jacobian product of ``output`` with a cotangent
    that is ``seeds[:, j]`` at ``output[:, positions[j]]`` and zero elsewhere.

    For LMs whose head is reached through ``head_input``, the output is the head input
    [B, n, d] and seeds [B, len(steps), d] are the head's gradients, all from one backward pass
    over a detached copy of the predicting rows (the head acts on each row alone), so the
    steps' backward passes start at their rows and never enter the head. Otherwise the output
    is the explained quantity [B, len(steps)] itself, with seeds of ones.
    """
    if task.lm.spec.kind in ("classifier", "encoder-decoder"):
        values = _target_values(task, x, steps)
        return values, list(range(len(steps))), torch.ones_like(values)
    hidden = _body(task, x)
    rows = [task.rows[s] for s in steps]
    picked = hidden[:, rows].detach().requires_grad_(True)
    (head_grads,) = torch.autograd.grad(_scores(task, _head(task.lm, picked), steps).sum(), picked)
    return hidden, rows, head_grads


def _class_index(lm: LM, record: Classification, value: int | str, what: str) -> int:
    labels = list(record.labels)
    if isinstance(value, str):
        if value not in labels:
            raise InvalidArgumentError(f"{what} {value!r} is not a label; labels: {labels}")
        return labels.index(value)
    return check_int(what, value, 0, len(labels) - 1)


def _make_task(
    lm: LM, record: Any, target: str, foil: int | str | None, label: int | str | None
) -> _Task:
    if not isinstance(record, (Generation, MaskedPredictions, Classification)):
        raise InvalidTypeError(
            "attribute needs a Generation, MaskedPredictions or Classification record, got "
            f"{type(record).__name__}"
        )
    spec = lm.spec
    ids = record.token_ids
    embedding = lm.model.get_submodule(spec.embedding)
    check_record_ids(lm, ids.tolist())
    if label is not None and not isinstance(record, Classification):
        raise InvalidArgumentError("label applies to Classification records only")
    device = model_device(lm.model)
    n_enc = 0
    if isinstance(record, Classification):
        if spec.kind != "classifier":
            raise InvalidArgumentError("a Classification record needs a classifier model")
        chosen = int(np.argmax(record.probs)) if label is None else label
        targets = [_class_index(lm, record, chosen, "label")]
        foil_id = -1 if foil is None else _class_index(lm, record, foil, "foil")
        rows, visible, source = [len(ids) - 1], [len(ids)], ids
    elif isinstance(record, MaskedPredictions):
        if spec.kind != "masked":
            raise InvalidArgumentError("a MaskedPredictions record needs a masked LM")
        if record.positions.size == 0:
            raise InvalidArgumentError("the record has no mask positions to explain")
        rows = record.positions.tolist()
        targets = record.top_ids[:, 0].tolist()
        source = ids
        visible = [len(ids)] * len(rows)
        foil_id = -1 if foil is None else watch_ids(lm, [foil])[0]
    else:
        if record.model_kind != spec.kind:
            raise InvalidArgumentError(
                f"record comes from a {record.model_kind} model but {lm.name} is {spec.kind}"
            )
        if record.n_generated == 0:
            raise InvalidArgumentError("the generation has no generated tokens to explain")
        source = ids[:-1]
        rows = list(range(record.n_input_tokens - 1, record.n_tokens - 1))
        targets = ids[record.n_input_tokens :].tolist()
        n_enc = record.n_encoder_tokens
        visible = [r + 1 for r in rows]
        foil_id = -1 if foil is None else watch_ids(lm, [foil])[0]
    with torch.no_grad():
        embeds = embedding(torch.tensor(np.array(source), device=device)[None]).detach()
    return _Task(lm, embeds, n_enc, rows, visible, targets, foil_id, target)


def _baseline(lm: LM, task: _Task, baseline: Any) -> torch.Tensor:
    """Baseline embeddings [1, n_rows, hidden]."""
    embeds = task.embeds
    if isinstance(baseline, str):
        check_choice("baseline", baseline, BASELINES)
        if baseline == "zeros":
            return torch.zeros_like(embeds)
        token_id = getattr(lm.tokenizer, f"{baseline}_token_id", None)
        if token_id is None:
            raise InvalidArgumentError(
                f"baseline={baseline!r}: the tokenizer has no {baseline} token; use 'zeros' or "
                "another token"
            )
        embedding = lm.model.get_submodule(lm.spec.embedding)
        with torch.no_grad():
            row = embedding(torch.tensor([[token_id]], device=embeds.device)).detach()
        return row.expand_as(embeds).clone()
    tensor = torch.as_tensor(baseline, dtype=embeds.dtype, device=embeds.device)
    n_rows, hidden = embeds.shape[1:]
    if tensor.shape == (hidden,):
        return tensor.expand_as(embeds).clone()
    if tensor.shape in ((n_rows, hidden), (1, n_rows, hidden)):
        return tensor.reshape(embeds.shape).clone()
    raise InvalidArgumentError(
        f"baseline tensor has shape {tuple(tensor.shape)}; expected ({hidden},) for every token "
        f"or ({n_rows}, {hidden}) for each input token"
    )


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


def _gauss_legendre(n_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    nodes, weights = np.polynomial.legendre.leggauss(n_steps)
    return torch.tensor((nodes + 1) / 2), torch.tensor(weights / 2)


def _prefix_groups(visible: Sequence[int]) -> list[tuple[int, list[int]]]:
    """Split steps into groups that share one forward pass over a prefix of the inputs.

    ``visible[i]`` is how many input rows step ``i`` sees (non-decreasing). A group ending at
    ``e`` rows with ``k`` steps costs about ``e * (1 + k)`` row passes (one forward, one
    input-gradient backward per step), so the backward passes of early steps skip the rows
    only later steps see. Returns (rows, step indices) per group, minimizing the total by dynamic
    programming over the contiguous splits.
    """
    n = len(visible)
    best = [0.0] + [float("inf")] * n
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j):
            cost = best[i] + visible[j - 1] * (1 + j - i)
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups = []
    j = n
    while j > 0:
        groups.append((visible[j - 1], list(range(cut[j], j))))
        j = cut[j]
    return groups[::-1]


ROWS_PER_PASS = 400
VJP_ROWS = 4000


def _even_batch(n: int, most: int) -> int:
    """Size of the fewest equal batches of at most ``most`` that cover ``n`` items."""
    return math.ceil(n / math.ceil(n / most))


def _weighted_gradients(
    task: _Task, point: torch.Tensor, steps: Sequence[int], weights: torch.Tensor, per_vjp: int
) -> torch.Tensor:
    """Sum over the B points of weights [B, 1, 1] x input gradients -> [len(steps), n, hidden].

    point [B, n, hidden] requires grad; ``per_vjp`` steps share one batched vector-Jacobian
    product.
    """
    output, positions, seeds = _gradient_seeds(task, point, steps)
    out = torch.zeros((len(steps), *point.shape[1:]), dtype=torch.float32, device=point.device)
    for lo in range(0, len(steps), per_vjp):
        hi = min(lo + per_vjp, len(steps))
        cotangents = torch.zeros((hi - lo, *output.shape), dtype=output.dtype, device=output.device)
        for j in range(lo, hi):
            cotangents[j - lo, :, positions[j]] = seeds[:, j]
        (grads,) = torch.autograd.grad(
            output, point, cotangents, retain_graph=hi < len(steps), is_grads_batched=True
        )
        out[lo:hi] = (weights * grads.float()).sum(dim=1)
    return out


def _native(
    task: _Task,
    method: str,
    base: torch.Tensor,
    n_steps: int,
    batch_size: int | None,
    steps: Sequence[int],
    progress: Any,
) -> torch.Tensor:
    """Raw attributions [len(steps), n_rows, hidden] of a gradient method.

    Steps are grouped by :func:`_prefix_groups`; each group runs forward passes over its
    prefix of the inputs for batches of interpolation points (``batch_size`` points, by
    default equal batches of at most ``ROWS_PER_PASS`` token rows), each followed by batched
    vector-Jacobian products of at most about ``VJP_ROWS`` token rows (steps x points x
    rows). On CUDA, out of memory halves the points per pass, then the steps per product.
    """
    x = task.embeds
    if method == "integrated_gradients":
        alphas, weights = _gauss_legendre(n_steps)
    else:
        alphas, weights = torch.ones(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)
    total = torch.zeros((len(steps), *x.shape[1:]), dtype=torch.float32, device=x.device)
    groups = _prefix_groups([task.visible[s] for s in steps])
    bar = tqdm(
        total=len(alphas) * len(groups),
        desc=f"{method} ({len(steps)} tokens)",
        disable=progress,
    )
    step_limit = len(steps)
    for end, members in groups:
        start = 0
        while start < len(alphas):
            size = batch_size or _even_batch(len(alphas), max(1, ROWS_PER_PASS // end))
            a = alphas[start : start + size].to(x.device, x.dtype)[:, None, None]
            w = weights[start : start + size].to(x.device, torch.float32)[:, None, None]
            most = min(step_limit, max(1, VJP_ROWS // (len(a) * end)))
            per_vjp = _even_batch(len(members), most)
            try:
                point = (base + a * (x - base))[:, :end].detach().requires_grad_(True)
                part = _weighted_gradients(task, point, [steps[i] for i in members], w, per_vjp)
            except torch.OutOfMemoryError:
                if x.device.type != "cuda" or (len(a) == 1 and per_vjp == 1):
                    raise
                if len(a) > 1:
                    batch_size = max(1, len(a) // 2)
                else:
                    step_limit = max(1, per_vjp // 2)
                part = None
            if part is None:
                torch.cuda.empty_cache()
                continue
            total[members, :end] += part
            bar.update(len(a))
            start += len(a)
    bar.close()
    if method == "saliency":
        return total.abs()
    return total * (x - base).float()[0]


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch and numpy (captum draws from both); restore both states after."""
    numpy_state = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            np.random.seed(seed)
            yield
    finally:
        np.random.set_state(numpy_state)


def _shap_baselines(task: _Task, base: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """[n, n_rows, hidden]: the baseline plus Gaussian perturbations of it (fixed seed)."""
    weight = cast(torch.Tensor, task.lm.model.get_submodule(task.lm.spec.embedding).weight)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn((n - 1, *base.shape[1:]), generator=generator).to(base)
    return torch.cat([base, base + 0.1 * float(weight.std()) * noise])


class _StepModule(nn.Module):
    """Wraps one prediction as a module for captum methods that hook the model's layers."""

    def __init__(self, model: nn.Module, function: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.model = model
        self.function = function

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.function(x)


def _captum(
    task: _Task,
    method: str,
    base: torch.Tensor,
    n_samples: int,
    seed: int,
    steps: Sequence[int],
    progress: Any,
) -> torch.Tensor:
    """Raw attributions [len(steps), n_rows, hidden] from captum, one prefix at a time."""
    import captum.attr as ca
    from captum._utils.models.linear_model import SkLearnLinearRegression

    x = task.embeds
    out = torch.zeros((len(steps), *x.shape[1:]), dtype=torch.float32, device=x.device)
    for i, step in enumerate(tqdm(steps, desc=method, disable=progress)):
        n = task.visible[step]
        inputs, baseline = x[:, :n].detach().clone(), base[:, :n].detach().clone()

        def forward(z: torch.Tensor, step: int = step) -> torch.Tensor:
            return _target_values(task, z, [step])[:, 0]

        module = _StepModule(task.lm.model, forward)
        mask = torch.arange(n, device=x.device)[None, :, None].expand_as(inputs)
        per_eval = max(1, min(16, n))
        with _seeded(seed, x.device), warnings.catch_warnings():
            # captum warns about hooks and input gradients it handles itself.
            warnings.simplefilter("ignore", UserWarning)
            if method == "deep_lift":
                attr = ca.DeepLift(module).attribute(inputs, baselines=baseline)
            elif method == "deep_lift_shap":
                shap_base = _shap_baselines(task, baseline, max(2, n_samples), seed)
                attr = ca.DeepLiftShap(module).attribute(inputs, baselines=shap_base)
            elif method == "guided_backprop":
                attr = ca.GuidedBackprop(module).attribute(inputs)
            elif method == "deconvolution":
                attr = ca.Deconvolution(module).attribute(inputs)
            elif method == "gradient_shap":
                shap_base = _shap_baselines(task, baseline, max(2, n_samples), seed)
                attr = ca.GradientShap(forward).attribute(
                    inputs, baselines=shap_base, n_samples=n_samples
                )
            elif method == "feature_ablation":
                attr = ca.FeatureAblation(forward).attribute(
                    inputs, baselines=baseline, feature_mask=mask, perturbations_per_eval=per_eval
                )
            elif method == "occlusion":
                attr = ca.Occlusion(forward).attribute(
                    inputs,
                    sliding_window_shapes=(1, x.shape[2]),
                    strides=(1, x.shape[2]),
                    baselines=baseline,
                    perturbations_per_eval=per_eval,
                )
            elif method == "lime":
                # Ordinary least squares: captum's default Lasso zeroes the small effects
                # typical of probabilities.
                attr = ca.Lime(forward, interpretable_model=SkLearnLinearRegression()).attribute(
                    inputs,
                    baselines=baseline,
                    feature_mask=mask,
                    n_samples=n_samples,
                    perturbations_per_eval=per_eval,
                )
            else:
                attr = ca.KernelShap(forward).attribute(
                    inputs,
                    baselines=baseline,
                    feature_mask=mask,
                    n_samples=n_samples,
                    perturbations_per_eval=per_eval,
                )
        out[i, :n] = attr[0].detach().float()
    return out


NATIVE = ("integrated_gradients", "saliency", "grad_x_input")
CAPTUM = (
    "deep_lift",
    "deep_lift_shap",
    "guided_backprop",
    "deconvolution",
    "gradient_shap",
    "feature_ablation",
    "occlusion",
    "lime",
    "kernel_shap",
)


def list_methods() -> list[str]:
    """Attribution methods that work, by canonical name (aliases: see ``ALIASES``)."""
    return [*NATIVE, *CAPTUM]


def resolve_method(method: str) -> str:
    """Canonical method name for ``method`` or one of its aliases, else a clear error."""
    if not isinstance(method, str):
        raise InvalidTypeError(f"method must be a string, got {type(method).__name__}")
    name = ALIASES.get(method.lower(), method.lower())
    if name in UNSOUND:
        raise InvalidArgumentError(
            f"method {method!r} is not offered: {UNSOUND[name]}. Use integrated_gradients, "
            "grad_x_input or feature_ablation instead"
        )
    if name not in list_methods():
        valid = ", ".join(list_methods())
        aliases = ", ".join(f"{k}={v}" for k, v in ALIASES.items())
        raise InvalidArgumentError(
            f"unknown attribution method {method!r}; valid: {valid} (aliases: {aliases})"
        )
    return name


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


def attribute(
    lm: LM,
    gen: Generation | MaskedPredictions | Classification,
    method: str = "integrated_gradients",
    *,
    target: str = "probability",
    foil: int | str | None = None,
    aggregation: str = "l2",
    n_steps: int = 50,
    baseline: Any = "zeros",
    batch_size: int | None = None,
    precision: str = "fp32",
    n_samples: int = 50,
    seed: int = 0,
    progress: bool | None = None,
    label: int | str | None = None,
) -> Attributions:
    """Attribute every generated token (or masked prediction) to the source tokens.

    Parameters
    ----------
    lm : handle from :func:`ecco_core.load`.
    gen : a :class:`Generation` (causal or encoder-decoder), a :class:`MaskedPredictions`
        (each mask's top prediction is explained) or a :class:`Classification` (the class
        ``label``, by default the predicted one, is explained).
    method : one of :func:`list_methods` or an alias (``ig``, ``gradient``, ``dl``, ``dls``,
        ``gb``, ``deconv``, ...).
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
    precision : ``fp32``; ``tf32`` (CUDA) or ``bf16`` record their measured deviation.
    n_samples, seed : samples of the sampling methods (SHAP, LIME) and their random seed.
    progress : show a progress bar (default: only in interactive terminals and notebooks).
    label : for a Classification, the class (index or name) to explain; ``foil`` may then
        name another class.
    """
    name = resolve_method(method)
    target = check_choice("target", target, TARGETS)
    aggregation = check_choice("aggregation", aggregation, AGGREGATIONS)
    precision = check_choice("precision", precision, PRECISIONS)
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
    task = _make_task(lm, gen, target, foil, label)
    base = _baseline(lm, task, baseline)
    disable = None if progress is None else not progress
    all_steps = list(range(len(task.rows)))

    def run(steps: Sequence[int], mode: str) -> np.ndarray:
        with _input_gradients_only(lm.model), _precision(mode, device):
            if name in NATIVE:
                raw = _native(task, name, base, n_steps, batch_size, steps, disable)
            else:
                raw = _captum(task, name, base, n_samples, seed, steps, disable)
        return raw.detach().cpu().numpy()

    raw = run(all_steps, precision)
    scores, values = _aggregate(raw, aggregation, name in TOKEN_LEVEL)
    deviation = 0.0
    if precision != "fp32":
        reference, _ = _aggregate(run([0], "fp32"), aggregation, name in TOKEN_LEVEL)
        deviation = float(np.abs(reference[0] - scores[0]).max())
    with _input_gradients_only(lm.model), torch.no_grad():
        ends = _target_values(task, torch.cat([task.embeds, base]), all_steps).float().cpu()
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
    return Attributions(
        scores=scores,
        values=values,
        token_ids=gen.token_ids,
        tokens=gen.tokens,
        n_input_tokens=gen.n_input_tokens if is_gen else n_tokens,  # type: ignore[union-attr]
        n_encoder_tokens=gen.n_encoder_tokens if is_gen else 0,  # type: ignore[union-attr]
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
