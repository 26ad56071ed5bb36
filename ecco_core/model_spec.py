"""Where things are inside a Hugging Face model, inferred from its structure.

There is no per-model table. :func:`infer_spec` looks at the loaded module tree:

- kind: ``encoder-decoder`` (``config.is_encoder_decoder``), ``causal`` (an LM head and
  ``can_generate()``), ``masked`` (an LM head that does not generate), ``classifier`` (a
  ``*ForSequenceClassification`` model) or ``encoder`` (no head, e.g. a bare ``BertModel``);
- blocks: in each stack (the base model, or the encoder and the decoder), the ``ModuleList`` of
  identical modules holding the most parameters;
- final norm: the one norm module (class name containing "norm", name not containing "emb")
  among the direct children of the module that owns the blocks or of its ancestors in the stack;
- FFN output projection of each block: the linear layer (``nn.Linear`` or GPT-2's ``Conv1D``)
  that maps back to the hidden size from the widest input, attention layers losing ties. Its
  input is what ecco-core calls the neuron activations;
- head input: the stack whose output feeds the LM head (the base model, or the decoder). The LM
  head itself is applied by running the model's own forward with that output replaced (see
  :func:`ecco_core.forward.head_logits`), so tied weights, T5's ``d_model**-0.5`` rescale, BART's
  ``final_logits_bias`` or MLM transforms are all applied exactly as the model does.

Any part can be given explicitly by module path, e.g.
``infer_spec(model, final_norm="model.norm")`` or ``ec.load(..., spec={"final_norm": ...})``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import attrs
import torch
from torch import nn

from .capture import model_device
from .errors import InvalidArgumentError, UnsupportedModelError
from .head import head_is_linear

KINDS = ("causal", "masked", "encoder-decoder", "encoder", "classifier")


@attrs.frozen(kw_only=True)
class ModelSpec:
    """Paths (as in ``model.get_submodule``) of the parts ecco-core needs.

    Attributes
    ----------
    kind : one of ``causal``, ``masked``, ``encoder-decoder``, ``encoder``, ``classifier``.
    embedding : the input token embedding.
    blocks : the transformer blocks, first to last (the decoder's for encoder-decoder models).
    final_norm : the norm applied after the last block, or ``None`` (post-norm models).
    ffn_out : per block, the FFN output projection; its input holds the neuron activations.
    head_input : the module whose output feeds the LM head, or ``None`` without an LM head.
    head_is_linear : the LM head is exactly the output embedding used as a linear map (checked
        numerically), so it can be applied without running the model.
    encoder_blocks, encoder_final_norm, encoder_ffn_out : the same for the encoder stack of an
        encoder-decoder model (empty / ``None`` otherwise).
    hidden_size : width of the residual stream.
    vocab_size : number of logits of the LM head (0 without one).
    max_positions : longest sequence the model accepts, or ``None`` when unbounded/unknown.
    """

    kind: str
    embedding: str
    blocks: tuple[str, ...]
    final_norm: str | None
    ffn_out: tuple[str, ...]
    head_input: str | None
    head_is_linear: bool = False
    encoder_blocks: tuple[str, ...] = ()
    encoder_final_norm: str | None = None
    encoder_ffn_out: tuple[str, ...] = ()
    hidden_size: int
    vocab_size: int
    max_positions: int | None

    @property
    def n_layers(self) -> int:
        """Number of blocks of the main (decoder) stack."""
        return len(self.blocks)

    def layer_labels(self, stack: str = "decoder") -> tuple[str, ...]:
        """Display labels of the layer rows of ``stack`` (``decoder`` = the main stack)."""
        if stack == "encoder":
            return tuple(f"encoder {i}" for i in range(len(self.encoder_blocks)))
        prefix = "decoder " if self.kind == "encoder-decoder" else "layer "
        return tuple(f"{prefix}{i}" for i in range(len(self.blocks)))


def _paths(model: nn.Module) -> dict[int, str]:
    return {id(module): name for name, module in model.named_modules()}


def _linear_dims(module: nn.Module) -> tuple[int, int] | None:
    """(in_features, out_features) of a linear-like module, else None."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if type(module).__name__ == "Conv1D" and hasattr(module, "nf"):
        shape = cast(torch.Tensor, module.weight).shape
        return int(shape[0]), int(shape[1])
    return None


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _find_blocks(root: nn.Module, paths: dict[int, str], what: str) -> tuple[str, ...]:
    candidates = []
    for module in root.modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        first = type(module[0])
        if all(type(m) is first for m in module) and _n_params(module) > 0:
            candidates.append(module)
    if not candidates:
        raise UnsupportedModelError(
            f"could not find the transformer blocks of {what} (no ModuleList of identical "
            "modules); pass them explicitly, e.g. blocks=('model.layers.0', 'model.layers.1')"
        )
    best = max(candidates, key=_n_params)
    return tuple(paths[id(m)] for m in best)


def _is_norm(name: str, module: nn.Module) -> bool:
    return "norm" in type(module).__name__.lower() and "emb" not in name.lower()


def _find_final_norm(
    model: nn.Module, root_path: str, blocks: tuple[str, ...], paths: dict[int, str]
) -> str | None:
    owner = blocks[0].rsplit(".", 2)[0] if blocks[0].count(".") >= 2 else ""
    parts = owner.split(".") if owner else []
    scopes = [".".join(parts[:i]) for i in range(len(parts), -1, -1)]
    scopes = [s for s in scopes if s.startswith(root_path) or root_path == ""]
    for scope in scopes:
        module = model.get_submodule(scope)
        norms = [
            f"{scope}.{name}" if scope else name
            for name, child in module.named_children()
            if _is_norm(name, child)
        ]
        if len(norms) > 1:
            raise UnsupportedModelError(
                f"several candidate final norms {norms}; pass final_norm='path' (or None)"
            )
        if norms:
            return norms[0]
    return None


def _find_ffn_out(model: nn.Module, block_path: str, hidden_size: int) -> str:
    block = model.get_submodule(block_path)
    best: tuple[int, int, str] | None = None
    for name, module in block.named_modules():
        dims = _linear_dims(module)
        if dims is None or dims[1] != hidden_size:
            continue
        not_attention = int("attn" not in name.lower() and "attention" not in name.lower())
        key = (dims[0], not_attention, f"{block_path}.{name}")
        if best is None or key[:2] > best[:2]:
            best = key
    if best is None:
        raise UnsupportedModelError(
            f"no linear layer mapping to the hidden size {hidden_size} in {block_path}; pass "
            "ffn_out=(one path per block) naming each FFN output projection"
        )
    return best[2]


def _find_head_input(model: nn.Module, kind: str, root_path: str, blocks: tuple[str, ...]) -> str:
    """The outermost module between the stack root and the blocks that runs in a forward pass.

    Some models skip their base model's ``forward`` (OPT's LM calls ``model.decoder``), so the
    candidates are checked with one forward pass on a one-token input.
    """
    owner = blocks[0].rsplit(".", 2)[0] if blocks[0].count(".") >= 2 else ""
    parts = owner.split(".") if owner else []
    candidates = [".".join(parts[:i]) for i in range(len(parts) + 1)]
    candidates = [c for c in candidates if c.startswith(root_path)] or [root_path]
    if len(candidates) == 1:
        return candidates[0]
    ran: list[str] = []
    handles = [
        model.get_submodule(c).register_forward_pre_hook(lambda *_, c=c: ran.append(c))
        for c in candidates
    ]
    try:
        ids = torch.zeros((1, 1), dtype=torch.long, device=model_device(model))
        extra = {"decoder_input_ids": ids} if kind == "encoder-decoder" else {}
        with torch.inference_mode():
            cast(Any, model)(input_ids=ids, **extra)
    finally:
        for handle in handles:
            handle.remove()
    for candidate in candidates:
        if candidate in ran:
            return candidate
    raise UnsupportedModelError(
        f"none of {candidates} runs in a forward pass; pass head_input='path' naming the module "
        "whose output feeds the LM head"
    )


def _max_positions(config: Any) -> int | None:
    for name in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _check_paths(model: nn.Module, name: str, value: Any) -> None:
    values: Iterable[Any] = value if isinstance(value, tuple) else (value,)
    for path in values:
        if path is None:
            continue
        try:
            model.get_submodule(path)
        except AttributeError as exc:
            raise InvalidArgumentError(
                f"spec override {name}={path!r}: the model has no submodule at that path"
            ) from exc


_PATH_FIELDS = ("embedding", "final_norm", "head_input", "encoder_final_norm")
_PATHS_FIELDS = ("blocks", "ffn_out", "encoder_blocks", "encoder_ffn_out")


def _checked_overrides(model: nn.Module, overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides`` with path lists as tuples, after checking names and module paths."""
    valid = {f.name for f in attrs.fields(ModelSpec)}
    unknown = set(overrides) - valid
    if unknown:
        raise InvalidArgumentError(
            f"unknown spec fields {sorted(unknown)}; valid: {', '.join(sorted(valid))}"
        )
    checked = {k: tuple(v) if k in _PATHS_FIELDS else v for k, v in overrides.items()}
    for key, value in checked.items():
        if key in _PATH_FIELDS or key in _PATHS_FIELDS:
            _check_paths(model, key, value)
    return checked


def _infer_kind(model: nn.Module) -> str:
    hf = cast(Any, model)
    output = hf.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        return "encoder-decoder"
    if output is None:
        classifier = type(model).__name__.endswith("ForSequenceClassification")
        return "classifier" if classifier else "encoder"
    can_generate = getattr(hf, "can_generate", lambda: False)
    return "causal" if can_generate() else "masked"


def _infer_embedding(model: nn.Module, paths: dict[int, str]) -> str:
    hf = cast(Any, model)
    embedding = hf.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if embedding is None or id(embedding) not in paths:
        raise UnsupportedModelError(
            "could not find the input embedding; pass embedding='path.to.embedding'"
        )
    return paths[id(embedding)]


def infer_spec(model: nn.Module, **overrides: Any) -> ModelSpec:
    """Infer the :class:`ModelSpec` of a Hugging Face model.

    Parameters
    ----------
    model : a loaded ``transformers`` model (causal LM, masked LM, seq2seq LM or bare encoder).
    **overrides : any :class:`ModelSpec` field, given explicitly; those parts are not inferred.

    Raises
    ------
    UnsupportedModelError
        naming the part that could not be found and the override that supplies it.
    """
    overrides = _checked_overrides(model, overrides)
    paths = _paths(model)
    config = getattr(model, "config", None)
    hf = cast(Any, model)  # a transformers model: get_*_embeddings, get_encoder, ...

    def part(name: str, infer: Any) -> Any:
        return overrides[name] if name in overrides else infer()

    kind = part("kind", lambda: _infer_kind(model))
    if kind not in KINDS:
        raise InvalidArgumentError(f"kind must be one of {KINDS}, got {kind!r}")
    embedding = part("embedding", lambda: _infer_embedding(model, paths))
    hidden_size = part("hidden_size", lambda: int(hf.get_submodule(embedding).weight.shape[1]))

    if kind == "encoder-decoder":
        decoder = hf.get_decoder()
        encoder = hf.get_encoder()
        main_root, enc_root = decoder, encoder
    else:
        main_root = getattr(model, "base_model", model)
        enc_root = None
    main_root_path = paths[id(main_root)]

    blocks = part("blocks", lambda: _find_blocks(main_root, paths, "the model"))
    final_norm = part("final_norm", lambda: _find_final_norm(model, main_root_path, blocks, paths))
    ffn_out = part("ffn_out", lambda: tuple(_find_ffn_out(model, b, hidden_size) for b in blocks))
    head_input = part(
        "head_input",
        lambda: (
            None
            if kind in ("encoder", "classifier")
            else _find_head_input(model, kind, main_root_path, blocks)
        ),
    )

    encoder_blocks: tuple[str, ...] = ()
    encoder_final_norm = None
    encoder_ffn_out: tuple[str, ...] = ()
    if enc_root is not None:
        enc_path = paths[id(enc_root)]
        encoder_blocks = part("encoder_blocks", lambda: _find_blocks(enc_root, paths, "encoder"))
        encoder_final_norm = part(
            "encoder_final_norm",
            lambda: _find_final_norm(model, enc_path, encoder_blocks, paths),
        )
        encoder_ffn_out = part(
            "encoder_ffn_out",
            lambda: tuple(_find_ffn_out(model, b, hidden_size) for b in encoder_blocks),
        )

    def infer_vocab() -> int:
        output = hf.get_output_embeddings() if kind != "encoder" else None
        return int(output.weight.shape[0]) if output is not None else 0

    spec = ModelSpec(
        kind=kind,
        embedding=embedding,
        blocks=blocks,
        final_norm=final_norm,
        ffn_out=ffn_out,
        head_input=head_input,
        head_is_linear=part(
            "head_is_linear",
            lambda: head_input is not None and head_is_linear(model, kind, head_input),
        ),
        encoder_blocks=encoder_blocks,
        encoder_final_norm=encoder_final_norm,
        encoder_ffn_out=encoder_ffn_out,
        hidden_size=hidden_size,
        vocab_size=part("vocab_size", infer_vocab),
        max_positions=part("max_positions", lambda: _max_positions(config)),
    )
    if len(spec.ffn_out) != len(spec.blocks):
        raise InvalidArgumentError(
            f"ffn_out has {len(spec.ffn_out)} paths for {len(spec.blocks)} blocks"
        )
    return spec


def modules(model: nn.Module, paths: Iterable[str]) -> list[nn.Module]:
    """The submodules of ``model`` at ``paths``."""
    return [model.get_submodule(p) for p in paths]
