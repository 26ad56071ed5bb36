"""Running the model: the body forward and the LM head, shared by every analysis.

:func:`run_body` is the one forward pass that hooks observe (logit lens, neuron activations)
and that attributions differentiate; it skips the LM head where the model allows.
:func:`head_logits` applies the LM head to any hidden states; :func:`predicted_logits` puts
the two together for the rows whose predictions are explained.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import torch

from .capture import analysis_mode
from .errors import InvalidArgumentError
from .head import head_by_forward, head_by_linear
from .loading import LM


def run_body(lm: LM, inputs: Mapping[str, Any], *, grad: bool = False) -> Any:
    """One forward pass, skipping the LM head where possible; returns the runner's output.

    Decoder-only, masked and encoder models run only their stack (``spec.head_input``, or the
    bare model when there is none): the first element of the output is then the LM head's
    input [B, n, hidden]. Encoder-decoder models run whole (output with ``.logits``), or only
    the encoder when ``inputs`` hold no decoder tokens. ``inputs`` are forward arguments
    (``input_ids`` or ``inputs_embeds``, see :func:`ecco_core.inputs.split_stacks`).

    Runs in eval mode, under ``torch.inference_mode()`` unless ``grad`` is true.
    """
    model, spec = lm.model, lm.spec
    runner: Any = model
    extra: dict[str, Any] = {}
    if spec.kind == "encoder-decoder":
        if any(k.startswith("decoder_") for k in inputs):
            extra = {"use_cache": False}
        else:
            runner = cast(Any, model).get_encoder()
    elif spec.head_input is not None:
        runner = model.get_submodule(spec.head_input)
        extra = {"use_cache": False} if spec.kind == "causal" else {}
    with analysis_mode(model), torch.inference_mode(not grad):
        return runner(**inputs, **extra)


def head_logits(lm: LM, hidden: torch.Tensor, *, grad: bool = False) -> torch.Tensor:
    """Apply the model's LM head: hidden [..., hidden_size] -> float32 logits [..., vocab].

    With ``grad=True`` the result is differentiable with respect to ``hidden``.
    """
    spec = lm.spec
    if spec.head_input is None:
        raise InvalidArgumentError(f"{lm.name} has no LM head")
    if spec.head_is_linear:
        logits = head_by_linear(lm.model, hidden, grad=grad)
    else:
        logits = head_by_forward(lm.model, spec.kind, spec.head_input, hidden, grad=grad)
    return logits.float()


def body_states(lm: LM, inputs: Mapping[str, Any], *, grad: bool = False) -> torch.Tensor:
    """The LM head's input [B, n, hidden] of a decoder-only or masked LM."""
    if lm.spec.kind == "encoder-decoder" or lm.spec.head_input is None:
        raise InvalidArgumentError(
            f"{lm.name} is a {lm.spec.kind} model: its head input is not reached by its stack alone"
        )
    return cast(torch.Tensor, run_body(lm, inputs, grad=grad)[0])


def predicted_logits(
    lm: LM, inputs: Mapping[str, Any], rows: torch.Tensor, *, grad: bool = False
) -> torch.Tensor:
    """float32 logits [B, k, vocab] predicted from rows [B, k] (int64) of the output stack:
    element ``b`` reads its own rows ``rows[b]``.

    Classifiers have one prediction for the whole sequence, repeated for every row.
    """
    kind = lm.spec.kind
    if kind == "classifier":
        logits = run_body(lm, inputs, grad=grad).logits
        return cast(torch.Tensor, logits[:, None].expand(-1, rows.shape[1], -1).float())
    batch = torch.arange(rows.shape[0], device=rows.device)[:, None]
    if kind == "encoder-decoder":
        return cast(torch.Tensor, run_body(lm, inputs, grad=grad).logits[batch, rows].float())
    return head_logits(lm, body_states(lm, inputs, grad=grad)[batch, rows], grad=grad)
