"""What an attribution explains: the task built from a record, its baseline and its targets.

A :class:`Task` holds the input embeddings of a record's source tokens and, for each step
(generated token, mask or class), the row whose prediction is explained and the explained
token. Methods run on tasks padded together (:mod:`.packs`), which also holds the explained
quantity every method differentiates or perturbs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np
import torch

from ..checks import check_choice, check_int
from ..errors import InvalidArgumentError, InvalidTypeError
from ..inputs import model_inputs, watch_ids
from ..loading import LM
from ..records import Classification, Generation, MaskedPredictions

TARGETS = ("probability", "logit", "log_probability")
BASELINES = ("zeros", "pad", "unk", "mask")


@attrs.frozen
class Task:
    """What to explain: inputs and the predictions to attribute.

    ``embeds`` [1, n_rows, hidden] are the model inputs (encoder rows first for encoder-decoder
    models); row ``r`` is source token column ``r``. Step ``s`` explains ``target_ids[s]``
    predicted from the output at ``rows[s]`` (a column of ``embeds``); it sees rows
    ``[0, visible[s])``.
    """

    lm: LM
    embeds: torch.Tensor
    n_encoder_rows: int
    rows: list[int]
    visible: list[int]
    target_ids: list[int]
    foil_id: int
    target: str

    def steps_of(self, slots: Sequence[int]) -> list[int]:
        """The entries of ``slots`` that are steps of this task."""
        return [s for s in slots if s < len(self.rows)]


@attrs.frozen
class Settings:
    """How a method runs (the options of :func:`ecco_core.attribute` that methods read).

    ``hide_progress`` is tqdm's ``disable``: ``None`` shows a bar only in interactive
    terminals and notebooks.
    """

    n_steps: int
    batch_size: int | None
    n_samples: int
    seed: int
    hide_progress: bool | None


def _class_index(record: Classification, value: int | str, what: str) -> int:
    labels = list(record.labels)
    if isinstance(value, str):
        if value not in labels:
            raise InvalidArgumentError(f"{what} {value!r} is not a label; labels: {labels}")
        return labels.index(value)
    return check_int(what, value, 0, len(labels) - 1)


def make_task(
    lm: LM, record: Any, target: str, foil: int | str | None, label: int | str | None
) -> Task:
    """The :class:`Task` of explaining ``record``'s predictions (see :func:`attribute`)."""
    if not isinstance(record, (Generation, MaskedPredictions, Classification)):
        raise InvalidTypeError(
            "attribute needs a Generation, MaskedPredictions or Classification record, got "
            f"{type(record).__name__}"
        )
    seq = model_inputs(lm, record)
    if label is not None and not isinstance(record, Classification):
        raise InvalidArgumentError("label applies to Classification records only")
    n = len(seq.token_ids)
    n_source = n
    if isinstance(record, Classification):
        chosen = int(np.argmax(record.probs)) if label is None else label
        targets = [_class_index(record, chosen, "label")]
        foil_id = -1 if foil is None else _class_index(record, foil, "foil")
        rows, visible = [n - 1], [n]
    elif isinstance(record, MaskedPredictions):
        if record.positions.size == 0:
            raise InvalidArgumentError("the record has no mask positions to explain")
        rows = record.positions.tolist()
        targets = record.top_ids[:, 0].tolist()
        visible = [n] * len(rows)
        foil_id = -1 if foil is None else watch_ids(lm, [foil])[0]
    else:
        if record.n_generated == 0:
            raise InvalidArgumentError("the generation has no generated tokens to explain")
        # The last token is only predicted, never read.
        n_source = n - 1
        positions = range(seq.n_input_tokens, n)
        rows = [seq.row(p) + seq.n_encoder_tokens for p in positions]
        targets = seq.token_ids[seq.n_input_tokens :].tolist()
        visible = [r + 1 for r in rows]
        foil_id = -1 if foil is None else watch_ids(lm, [foil])[0]
    embedding = lm.model.get_submodule(lm.spec.embedding)
    with torch.no_grad():
        embeds = embedding(seq.ids[:, :n_source]).detach()
    return Task(lm, embeds, seq.n_encoder_tokens, rows, visible, targets, foil_id, target)


def baseline_embeds(lm: LM, task: Task, baseline: Any) -> torch.Tensor:
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
