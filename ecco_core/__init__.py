"""ecco-core: explain transformer language models.

Pure functions turn a model and a prompt into immutable, serializable records::

    import ecco_core as ec
    lm = ec.load()                                   # embedded SmolLM2-135M-Instruct
    ec.list_models()                                 # short names: "smollm2", "minilm"
    gen = ec.generate(lm, "The Eiffel Tower is in the city of")
    ranks = ec.rankings(lm, gen)                     # ranks[layer, step]
    preds = ec.layer_predictions(lm, gen, gen.n_input_tokens)
    acts = ec.activations(lm, gen)                   # values[layer, neuron, position]
    nmf = ec.factorize(acts, n_components=8, lm=lm)  # token and neuron factors
    attr = ec.attribute(lm, gen)                     # scores[generated token, source token]
    ec.load_record(gen.to_json()) == gen
    tables = ec.to_tables([gen, ranks, attr])     # pyarrow tables: generations, rankings, ...

The core never imports IPython, anywidget or altair; the front ends live in ``ecco_adapters``.
"""

from .attention import attention
from .attribution import attribute, list_methods
from .errors import (
    ConvergenceWarning,
    EccoError,
    EccoWarning,
    InvalidArgumentError,
    InvalidTypeError,
    ModelLoadError,
    RecordFormatError,
    UnsupportedModelError,
)
from .examples import factor_codes, top_examples
from .factorization import factorize, promoted_tokens
from .generation import classify, generate, predict_masked
from .lens import cache as lens_cache
from .lens import layer_predictions, rankings, rankings_watch
from .loading import DEFAULT_MODEL_ID, LM, EmbeddedModel, library_version, list_models, load
from .model_spec import ModelSpec, infer_spec
from .neurons import activations
from .records import (
    Activations,
    Attention,
    Attributions,
    Classification,
    Factorization,
    Generation,
    LayerPredictions,
    MaskedPredictions,
    Provenance,
    Rankings,
    RankingsWatch,
    list_record_kinds,
)
from .serialization import json_schema, load_record, load_records
from .similarity import similarity
from .tables import to_tables

__version__ = library_version()

__all__ = [
    "DEFAULT_MODEL_ID",
    "LM",
    "Activations",
    "Attention",
    "Attributions",
    "Classification",
    "ConvergenceWarning",
    "EccoError",
    "EccoWarning",
    "EmbeddedModel",
    "Factorization",
    "Generation",
    "InvalidArgumentError",
    "InvalidTypeError",
    "LayerPredictions",
    "MaskedPredictions",
    "ModelLoadError",
    "ModelSpec",
    "Provenance",
    "Rankings",
    "RankingsWatch",
    "RecordFormatError",
    "UnsupportedModelError",
    "__version__",
    "activations",
    "attention",
    "attribute",
    "classify",
    "factor_codes",
    "factorize",
    "generate",
    "infer_spec",
    "json_schema",
    "layer_predictions",
    "lens_cache",
    "list_methods",
    "list_models",
    "list_record_kinds",
    "load",
    "load_record",
    "load_records",
    "predict_masked",
    "promoted_tokens",
    "rankings",
    "rankings_watch",
    "similarity",
    "to_tables",
    "top_examples",
]
