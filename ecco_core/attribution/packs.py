"""Several tasks as one batch, and the explained quantity every method differentiates.

A :class:`Pack` pads the input embeddings of ``R`` tasks (records) on the right into one
batch, as :func:`ecco_core.inputs.pad_batch` pads ids: each record's rows keep their
positions, a causal mask keeps the pads after them out of their rows, and attention masks keep
pads out of bidirectional attention. Encoder-decoder models pad encoder and decoder rows
separately, so a record's decoder rows start at the widest encoder's end.

Step ``j`` of every record shares slot ``j`` of the pack: one vector-Jacobian product with a
cotangent per slot gives every record's gradients at once, since the records of a batch never
mix. A batch of inputs to the model holds whole copies of the pack: element ``b`` is record
``b % R`` (e.g. ``P`` interpolation points x ``R`` records, points first).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np
import torch

from ..forward import predicted_logits
from ..inputs import split_stacks
from ..loading import LM
from .targets import Task


@attrs.frozen
class Pack:
    """Tasks padded together (see the module docstring); a pack of one task has no padding.

    Attributes
    ----------
    tasks : the ``R`` tasks, in order.
    embeds, base : [R, width, hidden] inputs and baselines, zero in padded columns.
    n_encoder_cols : columns read by an encoder-decoder model's encoder (the widest encoder),
        else 0.
    masks : forward arguments ``attention_mask`` (and ``decoder_attention_mask``) [R, columns
        of that stack] where the records' lengths differ, else empty.
    columns : per task, int64 [n_rows] the column holding each of its rows.
    rows : int64 [R, S] the column whose output predicts slot ``j`` of record ``i`` (the
        first output column where record ``i`` has fewer than ``j + 1`` steps); ``S`` is the
        most steps of a record.
    targets : int64 [R, S] explained token (or class) of each slot; valid : bool [R, S].
    visible : [S] columns slot ``j`` needs (non-decreasing: later slots see at least as much).
    """

    tasks: tuple[Task, ...]
    embeds: torch.Tensor
    base: torch.Tensor
    n_encoder_cols: int
    masks: dict[str, torch.Tensor]
    columns: tuple[np.ndarray, ...]
    rows: torch.Tensor
    targets: torch.Tensor
    valid: torch.Tensor
    visible: list[int]

    @property
    def lm(self) -> LM:
        return self.tasks[0].lm

    def unpack(self, out: torch.Tensor, slots: Sequence[int]) -> list[torch.Tensor]:
        """out [len(slots), R, width, hidden] for increasing ``slots`` -> per record
        [len(task.steps_of(slots)), n_rows, hidden]."""
        return [
            out[: len(task.steps_of(slots)), i][:, torch.as_tensor(cols, device=out.device)]
            for i, (task, cols) in enumerate(zip(self.tasks, self.columns, strict=True))
        ]


def _mask(lengths: Sequence[int], width: int, device: torch.device) -> torch.Tensor:
    mask = torch.zeros((len(lengths), width), dtype=torch.long, device=device)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    return mask


def make_pack(tasks: Sequence[Task], bases: Sequence[torch.Tensor]) -> Pack:
    """Pad ``tasks`` (of one model, with their baselines [1, n_rows, hidden]) into a pack."""
    first = tasks[0]
    device, dtype = first.embeds.device, first.embeds.dtype
    n_enc = [t.n_encoder_rows for t in tasks]
    n_dec = [t.embeds.shape[1] - e for t, e in zip(tasks, n_enc, strict=True)]
    w_enc, w_dec = max(n_enc), max(n_dec)
    shape = (len(tasks), w_enc + w_dec, first.embeds.shape[2])
    embeds = torch.zeros(shape, dtype=dtype, device=device)
    base = torch.zeros(shape, dtype=dtype, device=device)
    n_slots = max(len(t.rows) for t in tasks)
    rows = np.full((len(tasks), n_slots), w_enc, dtype=np.int64)
    targets = np.zeros((len(tasks), n_slots), dtype=np.int64)
    valid = np.zeros((len(tasks), n_slots), dtype=bool)
    needs = np.zeros(n_slots, dtype=np.int64)
    columns = []
    for i, task in enumerate(tasks):
        cols = np.concatenate([np.arange(n_enc[i]), w_enc + np.arange(n_dec[i])])
        index = torch.as_tensor(cols, device=device)
        embeds[i, index] = task.embeds[0]
        base[i, index] = bases[i][0].to(dtype)
        k = len(task.rows)
        rows[i, :k] = cols[task.rows]
        targets[i, :k] = task.target_ids
        valid[i, :k] = True
        needs[:k] = np.maximum(needs[:k], cols[np.array(task.visible) - 1] + 1)
        columns.append(cols)
    masks = {}
    if w_enc and min(n_enc) < w_enc:
        masks["attention_mask"] = _mask(n_enc, w_enc, device)
    if min(n_dec) < w_dec:
        masks["decoder_attention_mask" if w_enc else "attention_mask"] = _mask(n_dec, w_dec, device)
    return Pack(
        tasks=tuple(tasks),
        embeds=embeds,
        base=base,
        n_encoder_cols=w_enc,
        masks=masks,
        columns=tuple(columns),
        rows=torch.as_tensor(rows, device=device),
        targets=torch.as_tensor(targets, device=device),
        valid=torch.as_tensor(valid, device=device),
        visible=np.maximum.accumulate(needs).tolist(),
    )


def forward_inputs(pack: Pack, x: torch.Tensor) -> dict[str, Any]:
    """Forward arguments for x [B, end, hidden]: copies of the pack's first ``end`` columns,
    with their attention masks (element ``b`` is record ``b % R``)."""
    inputs = split_stacks(x, pack.n_encoder_cols, embeds=True)
    copies = x.shape[0] // len(pack.tasks)
    for name, mask in pack.masks.items():
        if name == "decoder_attention_mask" or not pack.n_encoder_cols:
            mask = mask[:, : x.shape[1] - pack.n_encoder_cols]
        inputs[name] = mask.repeat(copies, 1)
    return inputs


def per_element(pack: Pack, values: torch.Tensor, n: int, slots: Sequence[int]) -> torch.Tensor:
    """values [R, S] of the pack -> [n, len(slots)] for a batch of ``n`` elements."""
    return values[:, list(slots)].repeat(n // len(pack.tasks), 1)


def scores(pack: Pack, logits: torch.Tensor, slots: Sequence[int]) -> torch.Tensor:
    """logits [B, len(slots), vocab] -> the explained quantity [B, len(slots)] of each slot."""
    logits = logits.float()
    task = pack.tasks[0]
    if task.target == "probability":
        values = torch.softmax(logits, dim=-1)
    elif task.target == "log_probability":
        values = torch.log_softmax(logits, dim=-1)
    else:
        values = logits
    ids = per_element(pack, pack.targets, values.shape[0], slots)
    out = values.gather(-1, ids[..., None])[..., 0]
    if task.foil_id >= 0:
        out = out - values[..., task.foil_id]
    return out


def output_rows(pack: Pack, n: int, slots: Sequence[int]) -> torch.Tensor:
    """int64 [n, len(slots)]: rows of the output stack (an encoder-decoder model's decoder)
    predicting ``slots`` in each of ``n`` batch elements."""
    return per_element(pack, pack.rows, n, slots) - pack.n_encoder_cols


def target_values(
    pack: Pack, x: torch.Tensor, slots: Sequence[int], *, grad: bool = True
) -> torch.Tensor:
    """Explained quantity [B, len(slots)] of ``slots`` for inputs x [B, n, hidden],
    differentiable unless ``grad`` is false.

    ``x`` may hold only the first columns of the pack, as long as they cover the slots' rows.
    """
    rows = output_rows(pack, x.shape[0], slots)
    logits = predicted_logits(pack.lm, forward_inputs(pack, x), rows, grad=grad)
    return scores(pack, logits, slots)
