"""Immutable result records.

Every function of the core returns one of these frozen, keyword-only ``attrs`` classes. They
hold numpy arrays (made read-only), token strings as tuples, plain numbers and a
:class:`Provenance`; never a model, tensor or callable. Each class has a ``KIND`` and a
``VERSION`` and is listed in a closed registry that :mod:`ecco_core.serialization` uses to
round-trip it through JSON.

Fields are declared with the helpers below (:func:`array_field`, :func:`tokens_field`, ...):
their metadata drives validation, serialization and the JSON Schema of each kind.
"""

from __future__ import annotations

import os
import types
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import attrs
import numpy as np

from .errors import RecordFormatError

FIELD_KEY = "ecco"
_R = TypeVar("_R")
RECORD_TYPES: dict[str, type[Record]] = {}


FLOAT_DTYPES = ("float16", "float32", "float64")


def _array_converter(dtype: str) -> Callable[[Any], np.ndarray]:
    def convert(value: Any) -> np.ndarray:
        try:
            if dtype == "float":
                array = np.array(value, copy=True)
                if str(array.dtype) not in FLOAT_DTYPES:
                    array = array.astype(np.float32)
            else:
                array = np.array(value, dtype=dtype, copy=True)
        except (TypeError, ValueError) as exc:
            raise RecordFormatError(f"cannot convert {type(value).__name__} to {dtype}") from exc
        array.flags.writeable = False
        return array

    return convert


def _check_array(ndim: int, finite: bool) -> Callable[[Any, attrs.Attribute, np.ndarray], None]:
    def check(_: Any, attribute: attrs.Attribute, value: np.ndarray) -> None:
        if value.ndim != ndim:
            raise RecordFormatError(
                f"{attribute.name} must have {ndim} dimensions, got shape {value.shape}"
            )
        if finite and value.dtype.kind == "f" and not np.isfinite(value).all():
            raise RecordFormatError(f"{attribute.name} contains NaN or infinite values")

    return check


def array_field(dtype: str, ndim: int, *, finite: bool = True) -> Any:
    """A read-only numpy array of ``dtype`` with exactly ``ndim`` dimensions.

    ``dtype="float"`` keeps float16/float32/float64 arrays as they are (others become float32).
    """
    return attrs.field(
        converter=_array_converter(dtype),
        validator=_check_array(ndim, finite),
        eq=attrs.cmp_using(eq=np.array_equal),
        metadata={FIELD_KEY: {"type": "array", "dtype": dtype, "ndim": ndim}},
    )


def _to_str_tuple(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        raise RecordFormatError("expected a sequence of strings, got one string")
    return tuple(str(v) for v in value)


def _to_str_table(value: Any) -> tuple[tuple[str, ...], ...]:
    return tuple(_to_str_tuple(row) for row in value)


def tokens_field() -> Any:
    """A tuple of strings (one per token, layer, ...)."""
    return attrs.field(converter=_to_str_tuple, metadata={FIELD_KEY: {"type": "strings"}})


def token_table_field() -> Any:
    """A tuple of tuples of strings (e.g. the top-k token strings of each step)."""
    return attrs.field(converter=_to_str_table, metadata={FIELD_KEY: {"type": "string_table"}})


def _scalar_field(kind: str, py_type: type) -> Any:
    def check(_: Any, attribute: attrs.Attribute, value: Any) -> None:
        if not isinstance(value, py_type) or (py_type is int and isinstance(value, bool)):
            raise RecordFormatError(f"{attribute.name} must be {kind}, got {type(value).__name__}")

    return attrs.field(validator=check, metadata={FIELD_KEY: {"type": kind}})


def int_field() -> Any:
    """A Python int."""
    return _scalar_field("integer", int)


def str_field() -> Any:
    """A Python str."""
    return _scalar_field("string", str)


def float_field() -> Any:
    """A finite Python float."""

    def check(_: Any, attribute: attrs.Attribute, value: Any) -> None:
        if not isinstance(value, float) or not np.isfinite(value):
            raise RecordFormatError(f"{attribute.name} must be a finite float, got {value!r}")

    return attrs.field(
        converter=lambda v: float(v) if isinstance(v, (int, float, np.number)) else v,
        validator=check,
        metadata={FIELD_KEY: {"type": "number"}},
    )


def _freeze_json(value: Any) -> Any:
    if isinstance(value, Mapping):
        return types.MappingProxyType({str(k): _freeze_json(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze_json(v) for v in value)
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise RecordFormatError(
        f"provenance parameters must be JSON values, got {type(value).__name__}"
    )


def thaw_json(value: Any) -> Any:
    """Turn a frozen JSON value (mapping proxies, tuples) back into dicts and lists."""
    if isinstance(value, Mapping):
        return {k: thaw_json(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw_json(v) for v in value]
    return value


class Record:
    """Behaviour shared by every record class (serialization helpers)."""

    KIND: ClassVar[str]
    VERSION: ClassVar[int]

    def to_json(self, indent: int | None = None) -> str:
        """Serialize to a JSON string in the versioned envelope ``{kind, version, data}``."""
        from .serialization import dumps

        return dumps(self, indent=indent)

    def to_dict(self) -> dict[str, Any]:
        """The envelope as plain Python data (what :meth:`to_json` writes)."""
        from .serialization import to_envelope

        return to_envelope(self)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_json` to ``path`` atomically (temporary file, then rename); returns
        the path written."""
        from .serialization import save

        return save(self, path)

    def __hash__(self) -> int:
        """A hash of the content, consistent with ``==`` (arrays compared by value)."""
        return hash(_content_key(self))

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        """Rich display for notebooks by the active renderer (see :mod:`ecco_core.display`)."""
        from .display import mimebundle

        return mimebundle(self, include, exclude)


def _content_key(value: Any) -> Any:
    """A hashable stand-in for a field value: equal values (``==`` of records) give equal keys.

    Float arrays compare by value whatever their float dtype, and ``-0.0 == 0.0``: they are
    keyed by their float64 bytes plus 0.0 (which turns -0.0 into 0.0).
    """
    if isinstance(value, Record):
        fields = attrs.fields(type(value))  # type: ignore[arg-type]
        return (value.KIND, tuple(_content_key(getattr(value, f.name)) for f in fields))
    if isinstance(value, np.ndarray):
        data = value.astype(np.float64) + 0.0 if value.dtype.kind == "f" else value
        return (value.shape, np.ascontiguousarray(data).tobytes())
    if isinstance(value, Mapping):
        return tuple(sorted((k, _content_key(v)) for k, v in value.items()))
    if isinstance(value, tuple):
        return tuple(_content_key(v) for v in value)
    return value


def register(cls: type[_R]) -> type[_R]:
    """Class decorator: list a record class in the closed registry under its ``KIND``.

    It also restores :meth:`Record.__hash__` (attrs replaces it with a field-tuple hash, which
    fails on numpy arrays), so records are hashable by content.
    """
    kind = cls.KIND  # type: ignore[attr-defined]
    if kind in RECORD_TYPES:
        raise RuntimeError(f"record kind {kind!r} registered twice")
    RECORD_TYPES[kind] = cls  # type: ignore[assignment]
    cls.__hash__ = Record.__hash__  # type: ignore[method-assign,assignment]
    return cls


def list_record_kinds() -> list[str]:
    """The kinds that :func:`ecco_core.load_record` accepts."""
    return sorted(RECORD_TYPES)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise RecordFormatError(message)


@register
@attrs.frozen(kw_only=True)
class Provenance(Record):
    """Where a record came from.

    Attributes
    ----------
    model : name or path of the model (``config.name_or_path``).
    revision : commit hash of the model files when known, else ``""``.
    library_version, transformers_version, torch_version : versions that computed it.
    function : the ecco-core function that made the record.
    params : the parameters of that call (JSON values, read-only mapping).
    """

    KIND: ClassVar[str] = "Provenance"
    VERSION: ClassVar[int] = 1

    model: str = str_field()
    revision: str = str_field()
    library_version: str = str_field()
    transformers_version: str = str_field()
    torch_version: str = str_field()
    function: str = str_field()
    params: Mapping[str, Any] = attrs.field(
        converter=_freeze_json, factory=dict, metadata={FIELD_KEY: {"type": "json_object"}}
    )


def provenance_field() -> Any:
    """A nested :class:`Provenance`."""

    def check(_: Any, attribute: attrs.Attribute, value: Any) -> None:
        if not isinstance(value, Provenance):
            raise RecordFormatError(f"{attribute.name} must be a Provenance record")

    return attrs.field(
        validator=check, metadata={FIELD_KEY: {"type": "record", "kind": "Provenance"}}
    )


def _check_top_k(
    top_ids: np.ndarray, top_probs: np.ndarray, top_tokens: Sequence[Sequence[str]], rows: int
) -> None:
    _require(
        top_ids.shape == top_probs.shape and top_ids.shape[0] == rows,
        f"top_ids {top_ids.shape} and top_probs {top_probs.shape} must both have {rows} rows",
    )
    _require(
        len(top_tokens) == rows and all(len(r) == top_ids.shape[1] for r in top_tokens),
        f"top_tokens must be {rows} rows of {top_ids.shape[1] if top_ids.ndim == 2 else '?'}",
    )
    _require(
        bool(((top_probs >= 0) & (top_probs <= 1 + 1e-5)).all()), "top_probs must lie in [0, 1]"
    )


@register
@attrs.frozen(kw_only=True)
class Generation(Record):
    """A prompt and its continuation, with the model's top-k predictions at each step.

    Attributes
    ----------
    token_ids : int64 [n_tokens] prompt then generated ids. For encoder-decoder models the
        encoder input comes first, then the decoder sequence (starting with its start token).
    tokens : display strings [n_tokens] (byte-level markers turned into readable text).
    raw_tokens : the tokenizer's own token strings [n_tokens].
    n_input_tokens : tokens not generated (prompt; for encoder-decoder: encoder input plus the
        decoder start token). The first generated token is at index ``n_input_tokens``.
    n_encoder_tokens : encoder input length for encoder-decoder models, else 0.
    top_ids : int64 [n_generated, k] the k most probable next tokens at each generated step.
    top_probs : float32 [n_generated, k] their probabilities (softmax of the raw logits).
    top_tokens : display strings [n_generated][k] of ``top_ids``.
    prompt : the prompt text; text : the generated text (decoded continuation).
    model_kind : ``causal`` or ``encoder-decoder``.
    """

    KIND: ClassVar[str] = "Generation"
    VERSION: ClassVar[int] = 1

    token_ids: np.ndarray = array_field("int64", 1)
    tokens: Sequence[str] = tokens_field()
    raw_tokens: Sequence[str] = tokens_field()
    n_input_tokens: int = int_field()
    n_encoder_tokens: int = int_field()
    top_ids: np.ndarray = array_field("int64", 2)
    top_probs: np.ndarray = array_field("float32", 2)
    top_tokens: Sequence[Sequence[str]] = token_table_field()
    prompt: str = str_field()
    text: str = str_field()
    model_kind: str = str_field()
    provenance: Provenance = provenance_field()

    def __attrs_post_init__(self) -> None:
        n = self.token_ids.shape[0]
        _require(
            len(self.tokens) == n and len(self.raw_tokens) == n,
            f"tokens ({len(self.tokens)}) and raw_tokens ({len(self.raw_tokens)}) "
            f"must match token_ids ({n})",
        )
        _require(
            0 <= self.n_encoder_tokens < self.n_input_tokens <= n,
            f"need 0 <= n_encoder_tokens ({self.n_encoder_tokens}) < n_input_tokens "
            f"({self.n_input_tokens}) <= n_tokens ({n})",
        )
        _check_top_k(self.top_ids, self.top_probs, self.top_tokens, self.n_generated)

    @property
    def n_tokens(self) -> int:
        """Length of the full sequence."""
        return int(self.token_ids.shape[0])

    @property
    def n_generated(self) -> int:
        """Number of generated tokens."""
        return self.n_tokens - self.n_input_tokens

    @property
    def generated_ids(self) -> np.ndarray:
        """int64 [n_generated] the generated token ids."""
        return self.token_ids[self.n_input_tokens :]


@register
@attrs.frozen(kw_only=True)
class MaskedPredictions(Record):
    """Top-k fillers of each mask token of a text (masked language models).

    Attributes
    ----------
    token_ids : int64 [n_tokens] the tokenized text, masks included.
    tokens, raw_tokens : display and original token strings [n_tokens].
    positions : int64 [n_masks] indices of the mask tokens.
    top_ids : int64 [n_masks, k]; top_probs : float32 [n_masks, k]; top_tokens [n_masks][k].
    text : the input text.
    """

    KIND: ClassVar[str] = "MaskedPredictions"
    VERSION: ClassVar[int] = 1

    token_ids: np.ndarray = array_field("int64", 1)
    tokens: Sequence[str] = tokens_field()
    raw_tokens: Sequence[str] = tokens_field()
    positions: np.ndarray = array_field("int64", 1)
    top_ids: np.ndarray = array_field("int64", 2)
    top_probs: np.ndarray = array_field("float32", 2)
    top_tokens: Sequence[Sequence[str]] = token_table_field()
    text: str = str_field()
    provenance: Provenance = provenance_field()

    def __attrs_post_init__(self) -> None:
        n = self.token_ids.shape[0]
        _require(len(self.tokens) == n and len(self.raw_tokens) == n, "tokens must match ids")
        _require(
            bool(((self.positions >= 0) & (self.positions < n)).all()),
            f"positions must lie in [0, {n})",
        )
        _check_top_k(self.top_ids, self.top_probs, self.top_tokens, self.positions.shape[0])


def _check_layers(labels: Sequence[str], n_layers: int, norm: str) -> None:
    _require(len(labels) == n_layers, f"{len(labels)} layer labels for {n_layers} layers")
    _require(norm in ("final", "none"), f"norm must be 'final' or 'none', got {norm!r}")


@register
@attrs.frozen(kw_only=True)
class Rankings(Record):
    """Rank (1 = most probable) of each generated token at the output of every layer.

    Attributes
    ----------
    ranks : int64 [n_layers, n_generated] rank of the token actually produced.
    positions : int64 [n_generated] absolute index of each predicted token.
    token_ids : int64 [n_generated] the tokens ranked; tokens : their display strings.
    sequence_tokens : display strings [n_tokens] of the whole sequence (context for views).
    layer_labels : [n_layers] names of the layer rows (block outputs, first to last).
    norm : ``final`` (final norm applied to every layer) or ``none`` (Ecco's projection).
    """

    KIND: ClassVar[str] = "Rankings"
    VERSION: ClassVar[int] = 1

    ranks: np.ndarray = array_field("int64", 2)
    positions: np.ndarray = array_field("int64", 1)
    token_ids: np.ndarray = array_field("int64", 1)
    tokens: Sequence[str] = tokens_field()
    sequence_tokens: Sequence[str] = tokens_field()
    layer_labels: Sequence[str] = tokens_field()
    norm: str = str_field()
    provenance: Provenance = provenance_field()

    def __attrs_post_init__(self) -> None:
        n_layers, n_gen = self.ranks.shape
        _check_layers(self.layer_labels, n_layers, self.norm)
        _require(
            self.positions.shape == (n_gen,) == self.token_ids.shape and len(self.tokens) == n_gen,
            f"positions, token_ids and tokens must have {n_gen} entries",
        )
        _require(bool((self.ranks >= 1).all()), "ranks start at 1")


@register
@attrs.frozen(kw_only=True)
class LayerPredictions(Record):
    """The top-k tokens of every layer's logit-lens distribution at one position.

    Attributes
    ----------
    position : absolute index of the predicted token.
    token_ids : int64 [n_layers, k]; probs : float32 [n_layers, k]; tokens : [n_layers][k].
    target_id : the token actually at ``position`` (-1 past the end); target_token its text.
    sequence_tokens : display strings [n_tokens] of the whole sequence.
    layer_labels : [n_layers]; norm : ``final`` or ``none``.
    """

    KIND: ClassVar[str] = "LayerPredictions"
    VERSION: ClassVar[int] = 1

    position: int = int_field()
    token_ids: np.ndarray = array_field("int64", 2)
    probs: np.ndarray = array_field("float32", 2)
    tokens: Sequence[Sequence[str]] = token_table_field()
    target_id: int = int_field()
    target_token: str = str_field()
    sequence_tokens: Sequence[str] = tokens_field()
    layer_labels: Sequence[str] = tokens_field()
    norm: str = str_field()
    provenance: Provenance = provenance_field()

    def __attrs_post_init__(self) -> None:
        _check_top_k(self.token_ids, self.probs, self.tokens, len(self.layer_labels))
        _check_layers(self.layer_labels, self.token_ids.shape[0], self.norm)


@register
@attrs.frozen(kw_only=True)
class RankingsWatch(Record):
    """Ranks of chosen tokens at every layer, at one position.

    Attributes
    ----------
    position : absolute index of the predicted token.
    ranks : int64 [n_layers, n_watch]; watch_ids : int64 [n_watch]; watch_tokens : [n_watch].
    sequence_tokens : display strings [n_tokens] of the whole sequence.
    layer_labels : [n_layers]; norm : ``final`` or ``none``.
    """

    KIND: ClassVar[str] = "RankingsWatch"
    VERSION: ClassVar[int] = 1

    position: int = int_field()
    ranks: np.ndarray = array_field("int64", 2)
    watch_ids: np.ndarray = array_field("int64", 1)
    watch_tokens: Sequence[str] = tokens_field()
    sequence_tokens: Sequence[str] = tokens_field()
    layer_labels: Sequence[str] = tokens_field()
    norm: str = str_field()
    provenance: Provenance = provenance_field()

    def __attrs_post_init__(self) -> None:
        n_layers, n_watch = self.ranks.shape
        _check_layers(self.layer_labels, n_layers, self.norm)
        _require(
            self.watch_ids.shape == (n_watch,) and len(self.watch_tokens) == n_watch,
            f"watch_ids and watch_tokens must have {n_watch} entries",
        )
        _require(bool((self.ranks >= 1).all()), "ranks start at 1")


@register
@attrs.frozen(kw_only=True)
class Activations(Record):
    """FFN neuron activations of one text at every position.

    Attributes
    ----------
    values : float [n_layers, n_neurons, n_positions] the input of each selected block's FFN
        output projection (float32 unless captured in float16/float64).
    layers : int64 [n_layers] block index of each row, increasing.
    layer_labels : [n_layers] display labels ("layer 3", "encoder 0", "decoder 1").
    stack : ``decoder`` (decoder-only models, or the decoder of an encoder-decoder model) or
        ``encoder`` (masked/encoder models, or the encoder of an encoder-decoder model).
    token_ids : int64 [n_positions]; tokens : display strings [n_positions].
    n_input_tokens : positions that were input (prompt) rather than generated.
    """

    KIND: ClassVar[str] = "Activations"
    VERSION: ClassVar[int] = 1

    values: np.ndarray = array_field("float", 3)
    layers: np.ndarray = array_field("int64", 1)
    layer_labels: Sequence[str] = tokens_field()
    stack: str = str_field()
    token_ids: np.ndarray = array_field("int64", 1)
    tokens: Sequence[str] = tokens_field()
    n_input_tokens: int = int_field()
    provenance: Provenance = provenance_field()

    def __attrs_post_init__(self) -> None:
        n_layers, _, n_positions = self.values.shape
        _require(
            self.layers.shape == (n_layers,) and len(self.layer_labels) == n_layers,
            f"layers and layer_labels must have {n_layers} entries",
        )
        _require(bool((np.diff(self.layers) > 0).all()), "layers must be increasing")
        _require(
            self.token_ids.shape == (n_positions,) and len(self.tokens) == n_positions,
            f"token_ids and tokens must have {n_positions} entries (one per position)",
        )
        _require(0 <= self.n_input_tokens <= n_positions, "n_input_tokens out of range")
        _require(self.stack in ("decoder", "encoder"), f"unknown stack {self.stack!r}")


@register
@attrs.frozen(kw_only=True)
class Factorization(Record):
    """Non-negative matrix factorization of neuron activations: tokens x factors x neurons.

    ``activations[positions, neurons] ≈ token_factors.T @ neuron_factors`` after clipping
    negative activations to zero.

    Attributes
    ----------
    token_factors : float32 [n_components, n_positions] how much each factor fires at each
        position (positions of all factorized texts, concatenated).
    neuron_factors : float32 [n_components, n_neurons] each factor's neuron loadings.
    neuron_layers, neuron_indices : int64 [n_neurons] block index and index within the block of
        each neuron column.
    tokens : display strings [n_positions]; token_ids : int64 [n_positions].
    text_index : int64 [n_positions] which input record each position came from.
    layer_labels : [n_selected_layers] labels of the factorized layers.
    reconstruction_error : Frobenius norm of the residual.
    promoted_ids : int64 [n_components, k] tokens each factor's direction promotes through the
        unembedding (k = 0 when no model was given or it has no LM head);
        promoted_tokens : their display strings [n_components][k].
    """

    KIND: ClassVar[str] = "Factorization"
    VERSION: ClassVar[int] = 1

    token_factors: np.ndarray = array_field("float32", 2)
    neuron_factors: np.ndarray = array_field("float32", 2)
    neuron_layers: np.ndarray = array_field("int64", 1)
    neuron_indices: np.ndarray = array_field("int64", 1)
    token_ids: np.ndarray = array_field("int64", 1)
    tokens: Sequence[str] = tokens_field()
    text_index: np.ndarray = array_field("int64", 1)
    layer_labels: Sequence[str] = tokens_field()
    reconstruction_error: float = float_field()
    promoted_ids: np.ndarray = array_field("int64", 2)
    promoted_tokens: Sequence[Sequence[str]] = token_table_field()
    provenance: Provenance = provenance_field()

    def __attrs_post_init__(self) -> None:
        k, n_positions = self.token_factors.shape
        _require(
            self.neuron_factors.shape[0] == k and self.promoted_ids.shape[0] == k,
            f"neuron_factors and promoted_ids must have {k} rows (one per component)",
        )
        n_neurons = self.neuron_factors.shape[1]
        _require(
            self.neuron_layers.shape == (n_neurons,) == self.neuron_indices.shape,
            f"neuron_layers and neuron_indices must have {n_neurons} entries",
        )
        _require(
            self.token_ids.shape == (n_positions,) == self.text_index.shape
            and len(self.tokens) == n_positions,
            f"token_ids, tokens and text_index must have {n_positions} entries",
        )
        _require(
            len(self.promoted_tokens) == k
            and all(len(r) == self.promoted_ids.shape[1] for r in self.promoted_tokens),
            "promoted_tokens must match promoted_ids",
        )
        _require(
            bool((self.token_factors >= 0).all() and (self.neuron_factors >= 0).all()),
            "NMF factors are non-negative",
        )

    @property
    def n_components(self) -> int:
        """Number of factors."""
        return int(self.token_factors.shape[0])


@register
@attrs.frozen(kw_only=True)
class Classification(Record):
    """Class probabilities of a sequence-classification model for one text.

    Attributes
    ----------
    token_ids : int64 [n_tokens]; tokens, raw_tokens : display and original strings [n_tokens].
    labels : [n_labels] class names; probs : float32 [n_labels] softmax of the class logits.
    text : the input text.
    """

    KIND: ClassVar[str] = "Classification"
    VERSION: ClassVar[int] = 1

    token_ids: np.ndarray = array_field("int64", 1)
    tokens: Sequence[str] = tokens_field()
    raw_tokens: Sequence[str] = tokens_field()
    labels: Sequence[str] = tokens_field()
    probs: np.ndarray = array_field("float32", 1)
    text: str = str_field()
    provenance: Provenance = provenance_field()

    def __attrs_post_init__(self) -> None:
        n = self.token_ids.shape[0]
        _require(len(self.tokens) == n and len(self.raw_tokens) == n, "tokens must match ids")
        _require(self.probs.shape == (len(self.labels),), "probs must have one entry per label")
        _require(bool(((self.probs >= 0) & (self.probs <= 1 + 1e-5)).all()), "probs in [0, 1]")


@register
@attrs.frozen(kw_only=True)
class Attributions(Record):
    """How much each source token contributed to each predicted token.

    Attributes
    ----------
    scores : float32 [n_targets, n_tokens] one score per predicted token and source token;
        zero beyond each prediction's prefix (for ``l2``/``l1`` aggregation each row sums to 1).
    values : float32 [n_targets, n_tokens, hidden] per-embedding-dimension attributions with
        ``aggregation="none"``; shape [0, 0, 0] otherwise.
    token_ids : int64 [n_tokens]; tokens : display strings [n_tokens] (for encoder-decoder
        models: encoder tokens, then decoder tokens).
    n_input_tokens, n_encoder_tokens : as in :class:`Generation` (masked LMs: n_tokens and 0).
    target_positions : int64 [n_targets] absolute index of each predicted token (-1 for a
        class of a sequence classifier).
    target_ids : int64 [n_targets] the tokens (or class indices) explained; foil_id : the
        contrast token (or class) or -1.
    target_values : float32 [n_targets] the explained quantity at the real input (probability,
        logit or log-probability; minus the foil's with a foil).
    convergence_delta : float32 [n_targets] integrated gradients' completeness gap
        ``sum(raw attributions) - (f(input) - f(baseline))``; shape [0] for other methods.
    method, target, aggregation, baseline : the options used.
    precision : ``fp32``, ``tf32`` or ``bf16``; precision_deviation : largest absolute
        difference of normalized scores from an fp32 run on a sample (0 for fp32).
    """

    KIND: ClassVar[str] = "Attributions"
    VERSION: ClassVar[int] = 1

    scores: np.ndarray = array_field("float32", 2)
    values: np.ndarray = array_field("float32", 3)
    token_ids: np.ndarray = array_field("int64", 1)
    tokens: Sequence[str] = tokens_field()
    n_input_tokens: int = int_field()
    n_encoder_tokens: int = int_field()
    target_positions: np.ndarray = array_field("int64", 1)
    target_ids: np.ndarray = array_field("int64", 1)
    foil_id: int = int_field()
    target_values: np.ndarray = array_field("float32", 1)
    convergence_delta: np.ndarray = array_field("float32", 1)
    method: str = str_field()
    target: str = str_field()
    aggregation: str = str_field()
    baseline: str = str_field()
    precision: str = str_field()
    precision_deviation: float = float_field()
    provenance: Provenance = provenance_field()

    def __attrs_post_init__(self) -> None:
        n_targets, n_tokens = self.scores.shape
        _require(
            self.token_ids.shape == (n_tokens,) and len(self.tokens) == n_tokens,
            f"token_ids and tokens must have {n_tokens} entries",
        )
        for name in ("target_positions", "target_ids", "target_values"):
            _require(
                getattr(self, name).shape == (n_targets,), f"{name} must have {n_targets} entries"
            )
        _require(
            self.convergence_delta.shape in ((0,), (n_targets,)),
            f"convergence_delta must have 0 or {n_targets} entries",
        )
        _require(
            self.values.shape[:2] in ((0, 0), (n_targets, n_tokens)),
            f"values must be empty or [{n_targets}, {n_tokens}, hidden]",
        )
        _require(
            bool(((self.target_positions >= -1) & (self.target_positions < n_tokens)).all()),
            "target_positions must index tokens (or be -1)",
        )


ATTENTION_STACKS = ("encoder", "decoder", "cross")


@register
@attrs.frozen(kw_only=True)
class Attention(Record):
    """Attention weights of chosen layers and heads over one sequence.

    ``weights[l, h, i, j]`` is how much query ``i`` attends to key ``j`` in head ``heads[h]`` of
    block ``layers[l]``: the softmax of scaled query-key products plus mask and position bias,
    as the model's eager attention computes it. Each row sums to 1; masked keys are 0.

    Attributes
    ----------
    weights : float [n_layers, n_heads, n_query, n_key] (float32, or float16 when asked).
    layers : int64 [n_layers] block index of each row, increasing.
    heads : int64 [n_heads] head index of each column, increasing.
    n_model_heads : heads per layer in the model (``heads`` selects among them).
    layer_labels : [n_layers] display labels ("layer 3", "encoder 0", "decoder 1").
    stack : ``encoder`` (self-attention of an encoder), ``decoder`` (self-attention of a
        decoder, causal) or ``cross`` (decoder queries over encoder keys).
    token_ids : int64 [n_tokens] the whole sequence (encoder-decoder: encoder, then decoder).
    tokens : display strings [n_tokens] of ``token_ids``.
    n_input_tokens : tokens that were input rather than generated (as in :class:`Generation`).
    query_start, key_start : index in ``tokens`` of the first query and of the first key.
    query_tokens : [n_query] ``tokens[query_start:query_start + n_query]``.
    key_tokens : [n_key] ``tokens[key_start:key_start + n_key]``.
    """

    KIND: ClassVar[str] = "Attention"
    VERSION: ClassVar[int] = 1

    weights: np.ndarray = array_field("float", 4)
    layers: np.ndarray = array_field("int64", 1)
    heads: np.ndarray = array_field("int64", 1)
    n_model_heads: int = int_field()
    layer_labels: Sequence[str] = tokens_field()
    stack: str = str_field()
    token_ids: np.ndarray = array_field("int64", 1)
    tokens: Sequence[str] = tokens_field()
    n_input_tokens: int = int_field()
    query_start: int = int_field()
    key_start: int = int_field()
    query_tokens: Sequence[str] = tokens_field()
    key_tokens: Sequence[str] = tokens_field()
    provenance: Provenance = provenance_field()

    def __attrs_post_init__(self) -> None:
        n_layers, n_heads, n_query, n_key = self.weights.shape
        _require(self.stack in ATTENTION_STACKS, f"stack must be one of {ATTENTION_STACKS}")
        _require(
            self.layers.shape == (n_layers,) and len(self.layer_labels) == n_layers,
            f"layers and layer_labels must have {n_layers} entries",
        )
        _require(bool((np.diff(self.layers) > 0).all()), "layers must be increasing")
        _require(self.heads.shape == (n_heads,), f"heads must have {n_heads} entries")
        _require(bool((np.diff(self.heads) > 0).all()), "heads must be increasing")
        _require(
            bool(((self.heads >= 0) & (self.heads < self.n_model_heads)).all()),
            f"heads must lie in [0, n_model_heads={self.n_model_heads})",
        )
        n = self.token_ids.shape[0]
        _require(len(self.tokens) == n, f"tokens must have {n} entries (one per token id)")
        _require(0 <= self.n_input_tokens <= n, "n_input_tokens out of range")
        for name, start, count, shown in (
            ("query", self.query_start, n_query, self.query_tokens),
            ("key", self.key_start, n_key, self.key_tokens),
        ):
            _require(
                start >= 0
                and start + count <= n
                and tuple(shown) == tuple(self.tokens[start : start + count]),
                f"{name}_tokens must be tokens[{name}_start:{name}_start + {count}]",
            )
        weights = self.weights.astype(np.float64)
        tolerance = 1e-2 if self.weights.dtype == np.float16 else 1e-4
        _require(bool((weights >= 0).all()), "attention weights must be non-negative")
        _require(
            bool(np.allclose(weights.sum(axis=-1), 1.0, atol=tolerance * max(1, n_key) ** 0.5)),
            "each row of attention weights must sum to 1",
        )
