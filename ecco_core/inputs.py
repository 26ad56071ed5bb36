"""From a record or a text to model inputs: the one place where tokens become tensors.

:func:`model_inputs` checks a record against the model (kind, vocabulary) and returns a
frozen :class:`ModelInputs`: the sequence's token ids, how they split between an
encoder-decoder model's encoder and decoder, and which hidden-state row predicts which
position. :func:`split_stacks` is the only code that splits a sequence (of ids, or of
embeddings) into encoder and decoder inputs; the logit lens, neuron activations and
attributions all go through it.

Batches: :func:`pad_batch` runs several sequences together. A batch holds one
:class:`ModelInputs` per record plus the padded tensors and their attention masks. Teacher-forced
passes (logit lens, activations) pad on the right: each record's real tokens keep positions
``0..n-1`` (learned and rotary position embeddings, ALiBi and T5's relative buckets all see
what they see alone), a causal mask keeps the pads after them out of their rows, and the mask
keeps them out of bidirectional attention. So each record's rows are its own
(:meth:`ModelInputs.row`), with no shift. Encoder-decoder models pad encoder and decoder tokens
separately. (Generation pads on the left, as ``model.generate`` needs; see
:mod:`ecco_core.generation`.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np
import torch

from .capture import model_device
from .checks import check_int
from .errors import InvalidArgumentError, InvalidTypeError
from .loading import LM, check_record_ids
from .records import Classification, Generation, MaskedPredictions
from .tokens import display_tokens

Source = str | Generation | MaskedPredictions | Classification
STACKS = ("decoder", "encoder")


def encode_text(lm: LM, text: str) -> list[int]:
    """Token ids of ``text`` (with the tokenizer's special tokens), within the model's limit."""
    ids = list(lm.tokenizer(text, add_special_tokens=True)["input_ids"])
    if lm.spec.max_positions is not None and len(ids) > lm.spec.max_positions:
        raise InvalidArgumentError(
            f"text of {len(ids)} tokens exceeds the model's limit of {lm.spec.max_positions}"
        )
    return ids


def watch_ids(lm: LM, watch: Sequence[int | str]) -> list[int]:
    """Token ids of ``watch`` entries (ids, or strings that must be exactly one token)."""
    if isinstance(watch, (str, int)) or not len(watch):
        raise InvalidArgumentError("watch must be a non-empty list of token ids or strings")
    ids = []
    for item in watch:
        if isinstance(item, str):
            encoded = lm.tokenizer(item, add_special_tokens=False)["input_ids"]
            if len(encoded) != 1:
                pieces = lm.tokenizer.convert_ids_to_tokens(encoded)
                raise InvalidArgumentError(
                    f"watch token {item!r} is {len(encoded)} tokens {pieces}, not one; "
                    "watch a single token (mind the leading space: ' London')"
                )
            ids.append(int(encoded[0]))
        else:
            ids.append(check_int("watch token id", item, 0, lm.spec.vocab_size - 1))
    return ids


def pad_id(lm: LM) -> int:
    """The id written in padded places (the tokenizer's pad, else end-of-sequence, else 0)."""
    tok = lm.tokenizer
    for value in (
        tok.pad_token_id,
        tok.eos_token_id,
        getattr(lm.model.config, "pad_token_id", None),
    ):
        if isinstance(value, int):
            return value
    return 0


def split_stacks(x: torch.Tensor, n_encoder: int, *, embeds: bool = False) -> dict[str, Any]:
    """Keyword arguments of the model's forward for a sequence x [B, n] of ids (or
    [B, n, hidden] of embeddings with ``embeds=True``).

    The first ``n_encoder`` entries go to the encoder, the rest to the decoder; with
    ``n_encoder`` 0 (not an encoder-decoder model) or ``n_encoder >= n`` (no decoder tokens)
    the whole sequence is the (encoder) input.
    """
    name = "inputs_embeds" if embeds else "input_ids"
    if n_encoder <= 0 or n_encoder >= x.shape[1]:
        return {name: x}
    return {name: x[:, :n_encoder], f"decoder_{name}": x[:, n_encoder:]}


@attrs.frozen(kw_only=True)
class ModelInputs:
    """One sequence as model inputs (a batch of one).

    Attributes
    ----------
    ids : int64 tensor [1, n_tokens] every token id, on the model's device (encoder tokens
        first for encoder-decoder models).
    token_ids : int64 [n_tokens] the same ids as numpy.
    tokens : display strings [n_tokens].
    n_input_tokens : tokens not generated (all of them for a text or a masked record).
    n_encoder_tokens : leading tokens that feed an encoder-decoder model's encoder, else 0.
    row_offset : the hidden state of the output stack at row ``p - row_offset`` predicts the
        token at position ``p`` (1 for causal models, ``n_encoder_tokens + 1`` for
        encoder-decoder generations, 0 for masked and encoder models).
    """

    ids: torch.Tensor
    token_ids: np.ndarray
    tokens: tuple[str, ...]
    n_input_tokens: int
    n_encoder_tokens: int
    row_offset: int

    @property
    def inputs(self) -> dict[str, Any]:
        """Keyword arguments of the model's forward (see :func:`split_stacks`)."""
        return split_stacks(self.ids, self.n_encoder_tokens)

    @property
    def first_position(self) -> int:
        """The first position that a hidden-state row predicts."""
        return self.row_offset

    def row(self, position: int) -> int:
        """Row of the output stack's hidden states that predicts ``position``."""
        return int(position) - self.row_offset

    def stack(self, stack: str) -> tuple[dict[str, Any], np.ndarray, int]:
        """What running ``stack`` (``encoder`` or ``decoder``) needs and sees: (forward
        arguments, token ids [n] the stack reads, how many of those are input tokens).

        The encoder of an encoder-decoder model runs alone; any other stack runs with the
        whole sequence.
        """
        n_enc = self.n_encoder_tokens
        if not n_enc:
            return self.inputs, self.token_ids, self.n_input_tokens
        if stack == "encoder":
            return {"input_ids": self.ids[:, :n_enc]}, self.token_ids[:n_enc], n_enc
        if n_enc >= self.ids.shape[1]:
            raise InvalidArgumentError(
                "decoder activations need a decoder sequence: pass a Generation, or stack='encoder'"
            )
        return self.inputs, self.token_ids[n_enc:], self.n_input_tokens - n_enc


def _check_kind(lm: LM, source: Any) -> None:
    kind = lm.spec.kind
    if isinstance(source, Generation) and source.model_kind != kind:
        raise InvalidArgumentError(
            f"record comes from a {source.model_kind} model but {lm.name} is {kind}"
        )
    if isinstance(source, MaskedPredictions) and kind != "masked":
        raise InvalidArgumentError("a MaskedPredictions record needs a masked LM")
    if isinstance(source, Classification) and kind != "classifier":
        raise InvalidArgumentError("a Classification record needs a classifier model")


def model_inputs(lm: LM, source: Source) -> ModelInputs:
    """Check ``source`` (a text or a record) against ``lm`` and turn it into model inputs.

    A text is encoded with the tokenizer's special tokens; for an encoder-decoder model it is
    the encoder's input (no decoder tokens). A record must come from a model of the same kind
    and vocabulary.
    """
    if isinstance(source, str):
        if not source.strip():
            raise InvalidArgumentError("text is empty")
        ids = encode_text(lm, source)
        tokens = tuple(display_tokens(lm.tokenizer, ids)[1])
        n_input, n_enc = len(ids), len(ids) if lm.spec.kind == "encoder-decoder" else 0
    elif isinstance(source, (Generation, MaskedPredictions, Classification)):
        _check_kind(lm, source)
        ids = source.token_ids.tolist()
        check_record_ids(lm, ids)
        tokens = tuple(source.tokens)
        n_input = source.n_input_tokens if isinstance(source, Generation) else len(ids)
        n_enc = source.n_encoder_tokens if isinstance(source, Generation) else 0
    else:
        raise InvalidTypeError(
            "expected a text, a Generation, MaskedPredictions or Classification record, got "
            f"{type(source).__name__}"
        )
    generated = lm.spec.kind in ("causal", "encoder-decoder") and not isinstance(source, str)
    causal_text = isinstance(source, str) and lm.spec.kind == "causal"
    row_offset = n_enc + 1 if generated or causal_text else 0
    tensor = torch.tensor([ids], dtype=torch.long, device=model_device(lm.model))
    return ModelInputs(
        ids=tensor,
        token_ids=np.array(ids, dtype=np.int64),
        tokens=tokens,
        n_input_tokens=n_input,
        n_encoder_tokens=n_enc,
        row_offset=row_offset,
    )


def chunks(n: int, batch_size: int | None) -> list[range]:
    """Indices ``0..n-1`` in consecutive batches of at most ``batch_size`` (None: one batch)."""
    size = n if batch_size is None else batch_size
    return [range(start, min(start + size, n)) for start in range(0, n, max(1, size))]


def _pad_right(
    rows: Sequence[torch.Tensor], pad: int, prefix: str
) -> tuple[dict[str, Any], list[int]]:
    """Forward arguments for 1-d id tensors padded on the right: ``{prefix}input_ids`` [B, width]
    and, when some row is shorter than the widest, ``{prefix}attention_mask`` [B, width]."""
    lengths = [int(row.shape[0]) for row in rows]
    width = max(lengths)
    if min(lengths) == width:
        return {f"{prefix}input_ids": torch.stack(list(rows))}, lengths
    ids = torch.full((len(rows), width), pad, dtype=torch.long, device=rows[0].device)
    mask = torch.zeros((len(rows), width), dtype=torch.long, device=rows[0].device)
    for i, row in enumerate(rows):
        ids[i, : lengths[i]] = row
        mask[i, : lengths[i]] = 1
    return {f"{prefix}input_ids": ids, f"{prefix}attention_mask": mask}, lengths


@attrs.frozen(kw_only=True)
class Batch:
    """Several sequences as one right-padded batch (see the module docstring).

    Attributes
    ----------
    members : one :class:`ModelInputs` per record, in order.
    inputs : keyword arguments of the model's forward: ``input_ids`` [B, width] (and
        ``decoder_input_ids`` [B, decoder width] for an encoder-decoder model's decoder), with an
        ``attention_mask`` (``decoder_attention_mask``) [B, width] where rows differ in length.
    lengths : [B] real tokens of each record in the stack whose outputs are read (the
        decoder of an encoder-decoder model unless ``stack="encoder"``); row ``r`` of record
        ``b``'s outputs is at ``[b, r]`` for ``r < lengths[b]``.
    """

    members: tuple[ModelInputs, ...]
    inputs: dict[str, Any]
    lengths: tuple[int, ...]


def pad_batch(lm: LM, members: Sequence[ModelInputs], stack: str | None = None) -> Batch:
    """Pad ``members`` (inputs of one model) together on the right.

    ``stack="encoder"`` keeps only an encoder-decoder model's encoder tokens (as
    :meth:`ModelInputs.stack`); otherwise every member of an encoder-decoder model must have
    decoder tokens, or none may (a text: the encoder runs alone).
    """
    if not members:
        raise InvalidArgumentError("no inputs to batch")
    pad = pad_id(lm)
    n_enc = [m.n_encoder_tokens for m in members]
    if not any(n_enc):
        inputs, lengths = _pad_right([m.ids[0] for m in members], pad, "")
        return Batch(members=tuple(members), inputs=inputs, lengths=tuple(lengths))
    encoder = [m.ids[0, : m.n_encoder_tokens] for m in members]
    inputs, lengths = _pad_right(encoder, pad, "")
    decoder = [m.ids[0, m.n_encoder_tokens :] for m in members]
    has_decoder = [len(d) > 0 for d in decoder]
    if stack != "encoder" and any(has_decoder):
        if not all(has_decoder):
            raise InvalidArgumentError(
                "a batch mixes texts and generations of an encoder-decoder model; "
                "pass one kind, or stack='encoder'"
            )
        decoder_inputs, lengths = _pad_right(decoder, pad, "decoder_")
        inputs.update(decoder_inputs)
    return Batch(members=tuple(members), inputs=inputs, lengths=tuple(lengths))
