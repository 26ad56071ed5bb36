"""Names the command-line front ends check before torch is imported.

Importing anything from ``ecco_core`` loads torch (seconds), so the attribution method names
and the floating-point type spellings the core accepts are listed here too; a test checks that
both lists equal the core's (``ecco_core.attribution.METHODS``/``ALIASES`` and
``ecco_core.dtypes.DTYPE_SPELLINGS``).
"""

from __future__ import annotations

METHODS = (
    "integrated_gradients",
    "saliency",
    "grad_x_input",
    "deep_lift",
    "deep_lift_shap",
    "guided_backprop",
    "deconvolution",
    "gradient_shap",
    "feature_ablation",
    "occlusion",
    "lime",
    "kernel_shap",
    "attention_rollout",
    "attention_last_layer",
)
METHOD_ALIASES = {
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
DTYPE_NAMES = (
    "bf16",
    "bfloat16",
    "fp16",
    "float16",
    "half",
    "fp32",
    "float32",
    "float",
    "fp64",
    "float64",
    "double",
)


def resolve_method(name: str, error: type[Exception] = ValueError) -> str:
    """Canonical attribution method for ``name`` or an alias; ``error`` listing the valid ones."""
    canonical = METHOD_ALIASES.get(name.lower(), name.lower())
    if canonical not in METHODS:
        aliases = ", ".join(f"{k}={v}" for k, v in METHOD_ALIASES.items())
        raise error(
            f"unknown attribution method {name!r}; valid: {', '.join(METHODS)} (aliases: {aliases})"
        )
    return canonical


def check_dtype(name: str, option: str, error: type[Exception] = ValueError) -> str:
    """``name`` if the core reads it as a floating-point type (any case, optional ``torch.``)."""
    if name.strip().lower().removeprefix("torch.") not in DTYPE_NAMES:
        valid = ", ".join(repr(n) for n in DTYPE_NAMES)
        raise error(
            f"{option}={name!r} is not a floating-point type ecco-core knows; use one of {valid}"
        )
    return name
