"""Attributions from attention weights: attention rollout and the last layer's attention.

Both are methods of the registry (:data:`.methods.METHODS`) with the signature every method
has, ``(pack, slots, settings) -> raw [steps, n_rows, hidden] per record``: they score
whole tokens (one value repeated over a token's embedding dimensions), each step's row summing
to 1. They read the attention weights of one forward pass over the task's input embeddings
(:func:`ecco_core.attention_capture.capture`), so the explained token, the target, a foil and
the baseline play no part; :func:`ecco_core.attribute` refuses those options for them.

- ``attention_rollout`` (Abnar & Zuidema 2020): :func:`rollout` of every layer
  (encoder-decoder models: :func:`encoder_decoder_rollout`); the row of the state that predicts
  each token.
- ``attention_last_layer``: the last layer's attention averaged over heads, from the row that
  predicts each token (encoder-decoder models: the last decoder layer's cross-attention, so
  only encoder tokens score).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import torch

from ..attention_capture import Request, capture, model_stacks, stack_labels
from ..errors import InvalidArgumentError
from ..inputs import split_stacks
from ..records import Classification
from .packs import Pack
from .targets import Settings, Task


def _residual(layer: np.ndarray) -> np.ndarray:
    """Heads averaged, identity mixed in for the residual, rows renormalised: [n_q, n_q]."""
    mixed = 0.5 * layer.mean(axis=0) + 0.5 * np.eye(layer.shape[-1])
    return cast(np.ndarray, mixed / mixed.sum(axis=-1, keepdims=True))


def rollout(weights: np.ndarray) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema 2020) of self-attention weights.

    Parameters
    ----------
    weights : [n_layers, n_heads, n, n] self-attention of every layer, first to last.

    Returns
    -------
    float64 [n, n]: ``R = Â_L ... Â_2 Â_1`` with ``Â_l = renorm(0.5 * mean_heads(A_l) + 0.5 * I)``;
    row ``i`` is how much of position ``i``'s last-layer state flows from each input token.
    """
    n = weights.shape[-1]
    joint = np.eye(n)
    for layer in np.asarray(weights, dtype=np.float64):
        joint = _residual(layer) @ joint
    return joint


def encoder_decoder_rollout(
    encoder: np.ndarray, decoder: np.ndarray, cross: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Rollout through an encoder-decoder model.

    The encoder is rolled out as in :func:`rollout` (``R_e`` [n_enc, n_enc]). In each decoder
    layer, self-attention acts as in :func:`rollout` on both parts of the decoder's flow; cross
    attention, also residual, then keeps half of the flow and adds half of its (heads-averaged)
    weights routed through the encoder: ``R_de <- 0.5 R_de + 0.5 C R_e``, ``R_dd <- 0.5 R_dd``.
    Rows of ``[R_de, R_dd]`` sum to 1.

    Parameters
    ----------
    encoder : [n_enc_layers, n_heads, n_enc, n_enc] encoder self-attention.
    decoder : [n_dec_layers, n_heads, n_dec, n_dec] decoder self-attention.
    cross : [n_dec_layers, n_heads, n_dec, n_enc] cross-attention.

    Returns
    -------
    (to_encoder float64 [n_dec, n_enc], to_decoder float64 [n_dec, n_dec]).
    """
    to_encoder_tokens = rollout(encoder)
    n_dec, n_enc = cross.shape[-2], cross.shape[-1]
    to_decoder = np.eye(n_dec)
    to_encoder = np.zeros((n_dec, n_enc))
    for self_layer, cross_layer in zip(
        np.asarray(decoder, dtype=np.float64), np.asarray(cross, dtype=np.float64), strict=True
    ):
        mixed = _residual(self_layer)
        to_decoder, to_encoder = mixed @ to_decoder, mixed @ to_encoder
        to_encoder = 0.5 * to_encoder + 0.5 * cross_layer.mean(axis=0) @ to_encoder_tokens
        to_decoder = 0.5 * to_decoder
    return to_encoder, to_decoder


def _weights(task: Task) -> dict[str, np.ndarray]:
    """stack -> float64 [n_layers, n_heads, n_query, n_key] of every layer and head."""
    lm = task.lm
    stacks = model_stacks(lm.spec.kind)
    requests = [Request(s, list(range(len(stack_labels(lm, s)))), None) for s in stacks]
    n_rows, n_enc = task.embeds.shape[1], task.n_encoder_rows
    inputs = split_stacks(task.embeds, n_enc, embeds=True)
    found = capture(lm, inputs, requests, n_rows, n_enc)
    return {s: w.numpy().astype(np.float64) for s, w in found.items()}


def _flow(task: Task, method: str) -> np.ndarray:
    """[n_output_rows, n_rows]: how much each output row draws on each input row."""
    weights = _weights(task)
    if task.lm.spec.kind != "encoder-decoder":
        (main,) = weights.values()
        return rollout(main) if method == "attention_rollout" else main[-1].mean(axis=0)
    n_enc = task.n_encoder_rows
    n_dec = task.embeds.shape[1] - n_enc
    flow = np.zeros((n_dec, n_enc + n_dec))
    if method == "attention_rollout":
        to_enc, to_dec = encoder_decoder_rollout(
            weights["encoder"], weights["decoder"], weights["cross"]
        )
        flow[:, :n_enc], flow[:, n_enc:] = to_enc, to_dec
    else:
        flow[:, :n_enc] = weights["cross"][-1].mean(axis=0)
    return flow


def _run(method: str, task: Task, steps: Sequence[int]) -> torch.Tensor:
    """Raw attributions [len(steps), n_rows, hidden]: each step's scores on every dimension."""
    scores = _flow(task, method)[[task.rows[s] - task.n_encoder_rows for s in steps]]
    sums = scores.sum(axis=1, keepdims=True)
    scores = np.divide(scores, sums, out=np.zeros_like(scores), where=sums > 0)
    hidden = task.embeds.shape[-1]
    raw = torch.from_numpy(scores.astype(np.float32))
    return raw[..., None].expand(-1, -1, hidden).to(task.embeds.device)


def attention_rollout(pack: Pack, slots: Sequence[int], settings: Settings) -> list[torch.Tensor]:
    """Attention rollout from the row predicting each step, one record after another (see
    the module docstring)."""
    return [_run("attention_rollout", t, t.steps_of(slots)) for t in pack.tasks]


def attention_last_layer(
    pack: Pack, slots: Sequence[int], settings: Settings
) -> list[torch.Tensor]:
    """Last-layer attention averaged over heads, one record after another (see the module
    docstring)."""
    return [_run("attention_last_layer", t, t.steps_of(slots)) for t in pack.tasks]


ATTENTION = {
    "attention_rollout": attention_rollout,
    "attention_last_layer": attention_last_layer,
}


def check_options(name: str, record: Any, target: str, foil: Any, baseline: Any) -> None:
    """Refuse what an attention method cannot honour: a Classification record, another
    target, a foil, a baseline (attention weights depend on none of them)."""
    if isinstance(record, Classification):
        raise InvalidArgumentError(
            f"{name} explains a Generation or MaskedPredictions record, not a Classification "
            "(a classifier's prediction has no single row to follow); use ec.attention(lm, "
            "record) to see its attention, or a gradient method such as integrated_gradients"
        )
    unused = []
    if target != "probability":
        unused.append(f"target={target!r}")
    if foil is not None:
        unused.append(f"foil={foil!r}")
    if not (isinstance(baseline, str) and baseline == "zeros"):
        unused.append("a baseline")
    if unused:
        raise InvalidArgumentError(
            f"{name} reads attention weights, which depend on neither the explained token's "
            f"target, a foil nor a baseline: {', '.join(unused)} would have no effect. Leave "
            "them at their defaults, or use a gradient method such as integrated_gradients"
        )
