"""Applying a model's LM head to any hidden states.

The general way runs the model's own forward on a one-token input with the output of
``spec.head_input`` replaced by the hidden states, so every detail of the head (tied weights,
T5's rescale, BART's ``final_logits_bias``, MLM transforms, logit soft-capping) is applied
exactly as the model does. When a numerical check at spec inference shows that the head is
just the output embedding used as a linear map (most decoder-only models), that map is applied
directly, saving the extra forward pass.
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from .capture import analysis_mode, capture_outputs, model_device, replace_output
from .errors import UnsupportedModelError


def head_by_forward(
    model: nn.Module, kind: str, head_input: str, hidden: torch.Tensor, *, grad: bool = False
) -> torch.Tensor:
    """LM head applied through the model's forward: hidden [..., d] -> logits [..., vocab].

    With ``grad=True`` the result is differentiable with respect to ``hidden``.
    """
    shape = hidden.shape
    flat = hidden.reshape(1, -1, shape[-1])
    ids = torch.zeros((1, 1), dtype=torch.long, device=model_device(model))
    extra = {"decoder_input_ids": ids} if kind == "encoder-decoder" else {}
    target = model.get_submodule(head_input)
    with (
        analysis_mode(model),
        torch.inference_mode(not grad),
        replace_output(target, flat),
        capture_outputs([target]) as seen,
    ):
        logits = cast(Any, model)(input_ids=ids, **extra).logits
    if seen[0] is None or logits.shape[1] != flat.shape[1]:
        raise UnsupportedModelError(
            f"the LM head does not read the output of {head_input!r}; pass head_input="
            "'path' naming the module whose output feeds the LM head"
        )
    return logits.reshape(*shape[:-1], logits.shape[-1])


def head_by_linear(model: nn.Module, hidden: torch.Tensor, *, grad: bool = False) -> torch.Tensor:
    """The output embedding as a linear map: hidden [..., d] -> logits [..., vocab]."""
    output = cast(Any, model).get_output_embeddings()
    with torch.inference_mode(not grad):
        return F.linear(hidden, output.weight, getattr(output, "bias", None))


def head_is_linear(model: nn.Module, kind: str, head_input: str) -> bool:
    """Whether the LM head equals the output embedding used as a plain linear map.

    Checked numerically on random hidden states against :func:`head_by_forward`.
    """
    output = cast(Any, model).get_output_embeddings()
    if not isinstance(output, nn.Linear):
        return False
    generator = torch.Generator().manual_seed(0)
    probe = torch.randn(3, output.in_features, generator=generator)
    probe = probe.to(device=output.weight.device, dtype=output.weight.dtype)
    try:
        expected = head_by_forward(model, kind, head_input, probe)
    except UnsupportedModelError:
        return False
    return bool(torch.equal(head_by_linear(model, probe), expected))


def top_k_softmax(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(probs, ids) [..., k] of the k largest softmax entries of logits [..., vocab].

    Uses ``logsumexp`` instead of materializing the full softmax.
    """
    logits = logits.float()
    values, ids = torch.topk(logits, k, dim=-1)
    return torch.exp(values - torch.logsumexp(logits, dim=-1, keepdim=True)), ids
