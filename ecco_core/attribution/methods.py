"""The registry of attribution methods: canonical name -> function, aliases resolved once.

Every method is a function ``(pack, slots, settings) -> raw attributions`` of each record of
the pack (:mod:`.packs`), ``[its steps among slots, n_rows, hidden]``: the native gradient
engine's (:mod:`.native`, which runs the records of a pack together), one per captum method
(:mod:`.captum_methods`) and the attention methods (:mod:`.attention_methods`), which run
them one after another.
:func:`list_methods` reads :data:`METHODS`.
"""

from __future__ import annotations

import functools

from ..errors import InvalidArgumentError, InvalidTypeError
from . import captum_methods
from .attention_methods import ATTENTION
from .native import NATIVE, Method

METHODS: dict[str, Method] = {
    **NATIVE,
    **{name: functools.partial(captum_methods.run, name) for name in captum_methods.CAPTUM},
    **ATTENTION,
}
ALIASES = {
    "ig": "integrated_gradients",
    "gradient": "saliency",
    "input_x_gradient": "grad_x_input",
    "dl": "deep_lift",
    "dls": "deep_lift_shap",
    "gb": "guided_backprop",
    "deconv": "deconvolution",
    "gs": "gradient_shap",
    "ablation": "feature_ablation",
    "rollout": "attention_rollout",
}
_LRP = (
    "captum's LRP has rules only for linear, convolution, ReLU and pooling layers; "
    "attention, layer norm and GELU/SiLU in transformer blocks have no sound rule there"
)
UNSOUND = {
    "guided_gradcam": (
        "Guided Grad-CAM needs a convolutional layer whose spatial feature maps it weights; "
        "transformer blocks have none, so the result would be meaningless"
    ),
    "layer_relevance_propagation": _LRP,
    "lrp": _LRP,
}
# Methods that score whole tokens (one value repeated over a token's embedding dimensions).
TOKEN_LEVEL = ("feature_ablation", "occlusion", "lime", "kernel_shap", *ATTENTION)


def list_methods() -> list[str]:
    """Attribution methods that work, by canonical name (aliases: see ``ALIASES``)."""
    return list(METHODS)


def resolve_method(method: str) -> str:
    """Canonical method name for ``method`` or one of its aliases, else a clear error."""
    if not isinstance(method, str):
        raise InvalidTypeError(f"method must be a string, got {type(method).__name__}")
    name = ALIASES.get(method.lower(), method.lower())
    if name in UNSOUND:
        raise InvalidArgumentError(
            f"method {method!r} is not offered: {UNSOUND[name]}. Use integrated_gradients, "
            "grad_x_input or feature_ablation instead"
        )
    if name not in METHODS:
        valid = ", ".join(METHODS)
        aliases = ", ".join(f"{k}={v}" for k, v in ALIASES.items())
        raise InvalidArgumentError(
            f"unknown attribution method {method!r}; valid: {valid} (aliases: {aliases})"
        )
    return name
