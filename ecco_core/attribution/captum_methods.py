"""Attribution methods run by captum, one prefix (one prediction) at a time, as Ecco did.

:data:`CAPTUM` is the registry: canonical name -> a function of one :class:`Prefix` returning
captum's raw attributions [1, n, hidden]. :func:`run` applies one of them to every step of
every record, one record after another.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import attrs
import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .packs import Pack, make_pack, target_values
from .targets import Settings, Task


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch and numpy (captum draws from both); restore both states after."""
    numpy_state = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            np.random.seed(seed)
            yield
    finally:
        np.random.set_state(numpy_state)


def shap_baselines(task: Task, base: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """[n, n_rows, hidden]: the baseline plus Gaussian perturbations of it (fixed seed)."""
    weight = cast(torch.Tensor, task.lm.model.get_submodule(task.lm.spec.embedding).weight)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn((n - 1, *base.shape[1:]), generator=generator).to(base)
    return torch.cat([base, base + 0.1 * float(weight.std()) * noise])


class _StepModule(nn.Module):
    """Wraps one prediction as a module for captum methods that hook the model's layers."""

    def __init__(self, model: nn.Module, function: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.model = model
        self.function = function

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.function(x)


@attrs.frozen
class Prefix:
    """One prediction as a captum problem over the ``n`` rows its step sees.

    ``forward`` maps inputs [B, n, hidden] to the explained quantity [B]; ``module`` wraps it
    for methods that hook layers. ``inputs`` and ``baseline`` are [1, n, hidden]; ``mask``
    [1, n, hidden] numbers each row's features by its token, so perturbation methods treat a
    token as one feature.
    """

    task: Task
    forward: Callable[[torch.Tensor], torch.Tensor]
    module: nn.Module
    inputs: torch.Tensor
    baseline: torch.Tensor
    settings: Settings

    @property
    def mask(self) -> torch.Tensor:
        n = self.inputs.shape[1]
        return torch.arange(n, device=self.inputs.device)[None, :, None].expand_as(self.inputs)

    @property
    def per_eval(self) -> int:
        """Perturbations per forward pass of the perturbation methods."""
        return max(1, min(16, self.inputs.shape[1]))

    def shap_baselines(self) -> torch.Tensor:
        n = max(2, self.settings.n_samples)
        return shap_baselines(self.task, self.baseline, n, self.settings.seed)


def _deep_lift(p: Prefix) -> torch.Tensor:
    return _attribute(ca().DeepLift(p.module), p.inputs, baselines=p.baseline)


def _deep_lift_shap(p: Prefix) -> torch.Tensor:
    return _attribute(ca().DeepLiftShap(p.module), p.inputs, baselines=p.shap_baselines())


def _guided_backprop(p: Prefix) -> torch.Tensor:
    return _attribute(ca().GuidedBackprop(p.module), p.inputs)


def _deconvolution(p: Prefix) -> torch.Tensor:
    return _attribute(ca().Deconvolution(p.module), p.inputs)


def _gradient_shap(p: Prefix) -> torch.Tensor:
    return _attribute(
        ca().GradientShap(p.forward),
        p.inputs,
        baselines=p.shap_baselines(),
        n_samples=p.settings.n_samples,
    )


def _feature_ablation(p: Prefix) -> torch.Tensor:
    return _attribute(
        ca().FeatureAblation(p.forward),
        p.inputs,
        baselines=p.baseline,
        feature_mask=p.mask,
        perturbations_per_eval=p.per_eval,
    )


def _occlusion(p: Prefix) -> torch.Tensor:
    hidden = p.inputs.shape[2]
    return _attribute(
        ca().Occlusion(p.forward),
        p.inputs,
        sliding_window_shapes=(1, hidden),
        strides=(1, hidden),
        baselines=p.baseline,
        perturbations_per_eval=p.per_eval,
    )


def _lime(p: Prefix) -> torch.Tensor:
    from captum._utils.models.linear_model import SkLearnLinearRegression

    # Ordinary least squares: captum's default Lasso zeroes the small effects typical of
    # probabilities.
    return _attribute(
        ca().Lime(p.forward, interpretable_model=SkLearnLinearRegression()),
        p.inputs,
        baselines=p.baseline,
        feature_mask=p.mask,
        n_samples=p.settings.n_samples,
        perturbations_per_eval=p.per_eval,
    )


def _kernel_shap(p: Prefix) -> torch.Tensor:
    return _attribute(
        ca().KernelShap(p.forward),
        p.inputs,
        baselines=p.baseline,
        feature_mask=p.mask,
        n_samples=p.settings.n_samples,
        perturbations_per_eval=p.per_eval,
    )


def ca() -> Any:
    """``captum.attr``, imported on first use (it is slow to import)."""
    import captum.attr

    return captum.attr


def _attribute(method: Any, inputs: torch.Tensor, **options: Any) -> torch.Tensor:
    """``method.attribute(inputs, **options)``: captum's attributions [1, n, hidden]."""
    return cast(torch.Tensor, method.attribute(inputs, **options))


CAPTUM: dict[str, Callable[[Prefix], torch.Tensor]] = {
    "deep_lift": _deep_lift,
    "deep_lift_shap": _deep_lift_shap,
    "guided_backprop": _guided_backprop,
    "deconvolution": _deconvolution,
    "gradient_shap": _gradient_shap,
    "feature_ablation": _feature_ablation,
    "occlusion": _occlusion,
    "lime": _lime,
    "kernel_shap": _kernel_shap,
}


def run(name: str, pack: Pack, slots: Sequence[int], settings: Settings) -> list[torch.Tensor]:
    """Raw attributions [its steps among ``slots``, n_rows, hidden] of captum method ``name``
    for each record of the pack, one record and one prefix at a time (zero beyond each step's
    prefix)."""
    return [
        _run_record(name, make_pack([task], [pack.base[i : i + 1, cols]]), slots, settings)
        for i, (task, cols) in enumerate(zip(pack.tasks, pack.columns, strict=True))
    ]


def _run_record(name: str, pack: Pack, slots: Sequence[int], settings: Settings) -> torch.Tensor:
    """:func:`run` of a pack of one record."""
    method = CAPTUM[name]
    task = pack.tasks[0]
    steps = task.steps_of(slots)
    x = pack.embeds
    out = torch.zeros((len(steps), *x.shape[1:]), dtype=torch.float32, device=x.device)
    for i, step in enumerate(tqdm(steps, desc=name, disable=settings.hide_progress)):
        n = task.visible[step]

        def forward(z: torch.Tensor, step: int = step) -> torch.Tensor:
            return target_values(pack, z, [step])[:, 0]

        prefix = Prefix(
            task=task,
            forward=forward,
            module=_StepModule(task.lm.model, forward),
            inputs=x[:, :n].detach().clone(),
            baseline=pack.base[:, :n].detach().clone(),
            settings=settings,
        )
        with _seeded(settings.seed, x.device), warnings.catch_warnings():
            # captum warns about hooks and input gradients it handles itself.
            warnings.simplefilter("ignore", UserWarning)
            attr = method(prefix)
        out[i, :n] = attr[0].detach().float()
    return out
