"""From a record or a text to model inputs: the one place where tokens become tensors.

:func:`model_inputs` checks a record against the model (kind, vocabulary) and returns a
frozen :class:`ModelInputs`: the sequence's token ids, how they split between an
encoder-decoder model's encoder and decoder, and which hidden-state row predicts which
position. :func:`split_stacks` is the only code that splits a sequence (of ids, or of
embeddings) into encoder and decoder inputs; the logit lens, neuron activations and
attributions all go through it.

Shape for batching: every tensor here has a leading batch dimension (of 1 today). A batch of
records would hold one :class:`ModelInputs` per record plus the padded tensors and an
``attention_mask``; each record's rows then shift by its padding (left padding for causal
models), which :meth:`ModelInputs.row` is the one place to account for.
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
