"""ec.attribute against captum applied directly to the same model and prefix."""

from __future__ import annotations

import warnings
from typing import Any, cast

import numpy as np
import pytest
import torch
from captum import attr as ca
from captum._utils.models.linear_model import SkLearnLinearRegression
from torch import nn

import ecco_core as ec
from ecco_core.attribution import native
from ecco_core.attribution.attention_methods import ATTENTION
from ecco_core.attribution.captum_methods import shap_baselines
from ecco_core.attribution.native import prefix_groups
from ecco_core.attribution.targets import make_task
from ecco_core.testing import ENCODER_DECODER_FAMILIES, FAMILIES, MASKED_FAMILIES

PROMPT = "The Eiffel Tower is in"
GENERATING = [f for f in FAMILIES if f not in MASKED_FAMILIES]


def _record(lm: ec.LM, family: str) -> Any:
    if family in MASKED_FAMILIES:
        return ec.predict_masked(lm, f"the eiffel {lm.tokenizer.mask_token} is in paris.")
    return ec.generate(lm, PROMPT, max_new_tokens=3, min_new_tokens=3)


class Prefix(nn.Module):
    """Independent forward for one prediction: embeddings of a prefix -> probability [B]."""

    def __init__(self, lm: ec.LM, family: str, record: Any, step: int) -> None:
        super().__init__()
        self.model, self.family, self.record, self.step = lm.model, family, record, step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rec, step = self.record, self.step
        if self.family in MASKED_FAMILIES:
            logits = self.model(inputs_embeds=x).logits[:, int(rec.positions[step])]
            target = int(rec.top_ids[step, 0])
        elif self.family in ENCODER_DECODER_FAMILIES:
            n = rec.n_encoder_tokens
            out = self.model(inputs_embeds=x[:, :n], decoder_inputs_embeds=x[:, n:])
            logits = out.logits[:, -1]
            target = int(rec.token_ids[rec.n_input_tokens + step])
        else:
            logits = self.model(inputs_embeds=x).logits[:, -1]
            target = int(rec.token_ids[rec.n_input_tokens + step])
        return torch.softmax(logits.float(), -1)[:, target]


def _prefix_embeds(lm: ec.LM, record: Any, step: int) -> torch.Tensor:
    if isinstance(record, ec.Generation):
        ids = record.token_ids[: record.n_input_tokens + step]
    else:
        ids = record.token_ids
    with torch.no_grad():
        embedding = cast(Any, lm.model).get_input_embeddings()
        return embedding(torch.tensor(np.array(ids))[None]).detach()


def _captum_direct(method: str, module: Prefix, x: torch.Tensor, task: Any) -> torch.Tensor:
    zeros = torch.zeros_like(x)
    n = x.shape[1]
    mask = torch.arange(n)[None, :, None].expand_as(x)
    per_eval = max(1, min(16, n))
    torch.manual_seed(0)
    np.random.seed(0)
    if method == "integrated_gradients":
        return ca.IntegratedGradients(module).attribute(x, baselines=zeros, n_steps=50)
    if method == "saliency":
        return ca.Saliency(module).attribute(x)
    if method == "grad_x_input":
        return ca.InputXGradient(module).attribute(x)
    if method == "deep_lift":
        return ca.DeepLift(module).attribute(x, baselines=zeros)
    if method == "deep_lift_shap":
        return ca.DeepLiftShap(module).attribute(x, baselines=shap_baselines(task, zeros, 4, 0))
    if method == "guided_backprop":
        return ca.GuidedBackprop(module).attribute(x)
    if method == "deconvolution":
        return ca.Deconvolution(module).attribute(x)
    if method == "gradient_shap":
        return ca.GradientShap(module).attribute(
            x, baselines=shap_baselines(task, zeros, 4, 0), n_samples=4
        )
    if method in ("feature_ablation", "occlusion"):
        return ca.FeatureAblation(module).attribute(
            x, baselines=zeros, feature_mask=mask, perturbations_per_eval=per_eval
        )
    if method == "lime":
        return ca.Lime(module, interpretable_model=SkLearnLinearRegression()).attribute(
            x, baselines=zeros, feature_mask=mask, n_samples=4, perturbations_per_eval=per_eval
        )
    return ca.KernelShap(module).attribute(
        x, baselines=zeros, feature_mask=mask, n_samples=4, perturbations_per_eval=per_eval
    )


def _expected_scores(raw: torch.Tensor, token_level: bool) -> np.ndarray:
    values = raw[0].detach().double()
    magnitude = values[:, 0].abs() if token_level else values.norm(dim=-1)
    return (magnitude / magnitude.sum()).numpy()


# Attention methods have no captum counterpart: tests/integration/test_attention.py checks them
# against rollout by hand on every family.
GRADIENT_AND_PERTURBATION = [m for m in ec.list_methods() if m not in ATTENTION]


# Tiny random models put some targets near probability 0, where 50 IG steps may miss the 5%
# completeness tolerance (platform-dependent rounding); the comparison with captum still holds.
@pytest.mark.filterwarnings("ignore::ecco_core.errors.ConvergenceWarning")
@pytest.mark.parametrize("method", GRADIENT_AND_PERTURBATION)
@pytest.mark.parametrize("family", FAMILIES)
def test_method_matches_captum_on_each_prefix(tiny_lm, family: str, method: str) -> None:
    lm = tiny_lm(family)
    record = _record(lm, family)
    result = ec.attribute(lm, record, method, n_samples=4, progress=False)
    task = make_task(lm, record, "probability", None, None)
    n_targets = len(result.target_ids)
    assert result.scores.shape == (n_targets, len(record.token_ids))
    for step in range(n_targets):
        x = _prefix_embeds(lm, record, step)
        module = Prefix(lm, family, record, step)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = _captum_direct(method, module, x, task)
        expected = _expected_scores(
            raw, method in ("feature_ablation", "occlusion", "lime", "kernel_shap")
        )
        n = x.shape[1]
        np.testing.assert_allclose(result.scores[step, :n], expected, rtol=2e-3, atol=2e-5)
        assert (result.scores[step, n:] == 0).all()
        assert (
            result.scores[step].sum() == pytest.approx(1.0, abs=1e-5)
            or result.scores[step].sum() == 0
        )
    assert ec.load_record(result.to_json()) == result


@pytest.mark.filterwarnings("ignore::ecco_core.errors.ConvergenceWarning")
def test_integrated_gradients_delta_targets_and_aggregations(tiny_lm) -> None:
    lm = tiny_lm("llama")
    gen = ec.generate(lm, PROMPT, max_new_tokens=3, min_new_tokens=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        full = ec.attribute(lm, gen, "ig", aggregation="none", target="logit", progress=False)
    # One warning exactly when some step's completeness delta is over 5% of its value.
    flagged = np.abs(full.convergence_delta) > 0.05 * np.abs(full.target_values)
    expected = [ec.ConvergenceWarning] if flagged.any() else []
    assert [w.category for w in caught if issubclass(w.category, ec.EccoWarning)] == expected
    step0 = _prefix_embeds(lm, gen, 0)
    x = step0.clone()

    def logit0(z: torch.Tensor) -> torch.Tensor:
        return lm.model(inputs_embeds=z).logits[:, -1, int(gen.token_ids[gen.n_input_tokens])]

    raw, delta = ca.IntegratedGradients(logit0).attribute(
        x, baselines=torch.zeros_like(x), n_steps=50, return_convergence_delta=True
    )
    n = x.shape[1]
    np.testing.assert_allclose(full.values[0, :n], raw[0].detach().numpy(), rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(
        full.scores[0, :n], raw[0].sum(-1).detach().numpy(), rtol=1e-3, atol=1e-5
    )
    assert full.convergence_delta[0] == pytest.approx(float(delta[0]), abs=1e-4)
    with torch.no_grad():
        assert full.target_values[0] == pytest.approx(float(logit0(x)[0]), rel=1e-4)
    l1 = ec.attribute(lm, gen, "ig", aggregation="l1", progress=False)
    np.testing.assert_allclose(l1.scores.sum(1), 1.0, rtol=1e-5)
    signed = ec.attribute(lm, gen, "ig", aggregation="sum", progress=False)
    assert (signed.scores < 0).any() and signed.values.shape == (0, 0, 0)


def test_contrastive_log_probability_and_baselines(tiny_lm) -> None:
    lm = tiny_lm("gpt2")
    gen = ec.generate(lm, PROMPT, max_new_tokens=2, min_new_tokens=2)
    foil = 7
    res = ec.attribute(
        lm,
        gen,
        "grad_x_input",
        target="log_probability",
        foil=foil,
        aggregation="sum",
        progress=False,
    )
    x = _prefix_embeds(lm, gen, 0)
    target = int(gen.token_ids[gen.n_input_tokens])

    def contrast(z: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(lm.model(inputs_embeds=z).logits[:, -1], -1)
        return logp[:, target] - logp[:, foil]

    raw = ca.InputXGradient(contrast).attribute(x)
    np.testing.assert_allclose(
        res.scores[0, : x.shape[1]], raw[0].sum(-1).detach().numpy(), rtol=1e-3, atol=1e-6
    )
    assert res.foil_id == foil and res.provenance.params["foil"] == foil
    pad = ec.attribute(lm, gen, "ig", baseline="pad", n_steps=8, progress=False)
    vec = ec.attribute(lm, gen, "ig", baseline=torch.zeros(32), n_steps=8, progress=False)
    zero = ec.attribute(lm, gen, "ig", n_steps=8, progress=False)
    np.testing.assert_allclose(vec.scores, zero.scores, rtol=1e-6)
    assert not np.allclose(pad.scores, zero.scores)
    batched = ec.attribute(lm, gen, "ig", n_steps=8, batch_size=3, progress=False)
    np.testing.assert_allclose(batched.scores, zero.scores, rtol=1e-4, atol=1e-7)


@pytest.mark.filterwarnings("ignore::ecco_core.errors.ConvergenceWarning")  # few steps, tiny models
def test_bf16_reports_its_deviation(tiny_lm) -> None:
    lm = tiny_lm("llama")
    gen = ec.generate(lm, PROMPT, max_new_tokens=2, min_new_tokens=2)
    res = ec.attribute(lm, gen, "ig", precision="bf16", n_steps=8, progress=False)
    ref = ec.attribute(lm, gen, "ig", n_steps=8, progress=False)
    assert res.precision == "bf16" and ref.precision_deviation == 0.0
    assert res.precision_deviation == pytest.approx(
        np.abs(res.scores[0] - ref.scores[0]).max(), abs=1e-6
    )


def test_bad_attribution_input(tiny_lm) -> None:
    lm = tiny_lm("gpt2")
    gen = ec.generate(lm, PROMPT, max_new_tokens=2, min_new_tokens=2)
    with pytest.raises(
        ec.InvalidArgumentError, match=r"unknown attribution method 'magic'.*integrated_gradients"
    ):
        ec.attribute(lm, gen, "magic")
    with pytest.raises(ec.InvalidArgumentError, match="convolutional"):
        ec.attribute(lm, gen, "guided_gradcam")
    with pytest.raises(ec.InvalidArgumentError, match="LRP"):
        ec.attribute(lm, gen, "lrp")
    with pytest.raises(ec.InvalidArgumentError, match="not one"):
        ec.attribute(lm, gen, foil="Eiffel Tower")
    with pytest.raises(ec.InvalidArgumentError, match="n_steps=0"):
        ec.attribute(lm, gen, n_steps=0)
    with pytest.raises(ec.InvalidArgumentError, match="baseline tensor has shape"):
        ec.attribute(lm, gen, baseline=torch.zeros(5, 5))
    with pytest.raises(ec.InvalidArgumentError, match="tf32"):
        ec.attribute(lm, gen, precision="tf32")
    with pytest.raises(ec.InvalidArgumentError, match="target="):
        ec.attribute(lm, gen, target="odds")
    big = cast(
        ec.Generation,
        ec.load_record(
            gen.to_json().replace(f'"data": [{gen.token_ids[0]},', '"data": [999999,', 1)
        ),
    )
    with pytest.raises(ec.InvalidArgumentError, match="another model"):
        ec.attribute(lm, big)
    assert "ig" not in ec.list_methods() and "integrated_gradients" in ec.list_methods()
    assert ec.attribute(lm, gen, "dl", progress=False).method == "deep_lift"


@pytest.mark.parametrize("family", ["bert_classifier", "gpt2_classifier"])
def test_sequence_classification_attribution(tiny_lm, family: str) -> None:
    lm = tiny_lm(family)
    assert lm.spec.kind == "classifier"
    rec = ec.classify(lm, "the tower is in paris, and she liked it.")
    assert rec.labels == ("negative", "neutral", "positive")
    with torch.no_grad():
        logits = lm.model(input_ids=torch.tensor(rec.token_ids)[None]).logits[0]
    np.testing.assert_allclose(rec.probs, torch.softmax(logits, -1).numpy(), rtol=1e-5)
    assert ec.load_record(rec.to_json()) == rec
    res = ec.attribute(
        lm,
        rec,
        "ig",
        label="positive",
        foil="negative",
        target="logit",
        aggregation="sum",
        progress=False,
    )
    x = _prefix_embeds(lm, rec, 0)

    def margin(z: torch.Tensor) -> torch.Tensor:
        out = lm.model(inputs_embeds=z).logits
        return out[:, 2] - out[:, 0]

    raw = ca.IntegratedGradients(margin).attribute(x, baselines=torch.zeros_like(x), n_steps=50)
    np.testing.assert_allclose(res.scores[0], raw[0].sum(-1).detach().numpy(), rtol=1e-3, atol=1e-5)
    assert (
        res.target_ids.tolist() == [2]
        and res.foil_id == 0
        and res.target_positions.tolist() == [-1]
    )
    predicted = ec.attribute(lm, rec, "saliency", progress=False)
    assert predicted.target_ids.tolist() == [int(np.argmax(rec.probs))]
    with pytest.raises(ec.InvalidArgumentError, match="not a label"):
        ec.attribute(lm, rec, label="joy")
    acts = ec.activations(lm, "the tower is in paris")
    assert acts.stack == "encoder" and acts.values.shape[0] == 2


@pytest.mark.filterwarnings("ignore::ecco_core.errors.ConvergenceWarning")  # few steps, tiny models
@pytest.mark.parametrize("family", GENERATING)
def test_long_generation_in_prefix_groups_matches_captum(tiny_lm, family: str) -> None:
    lm = tiny_lm(family)
    gen = ec.generate(lm, "The", max_new_tokens=10, min_new_tokens=10)
    task = make_task(lm, gen, "probability", None, None)
    assert len(prefix_groups(task.visible)) >= 2
    result = ec.attribute(lm, gen, "ig", progress=False)
    for step in range(gen.n_generated):
        x = _prefix_embeds(lm, gen, step)
        raw = ca.IntegratedGradients(Prefix(lm, family, gen, step)).attribute(
            x, baselines=torch.zeros_like(x), n_steps=50
        )
        n = x.shape[1]
        expected = _expected_scores(raw, False)
        np.testing.assert_allclose(result.scores[step, :n], expected, rtol=2e-3, atol=2e-5)
        assert (result.scores[step, n:] == 0).all()
    small = ec.attribute(lm, gen, "ig", batch_size=7, progress=False)
    np.testing.assert_allclose(small.scores, result.scores, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(small.convergence_delta, result.convergence_delta, atol=1e-5)


@pytest.mark.filterwarnings("ignore::ecco_core.errors.ConvergenceWarning")  # few steps, tiny models
@pytest.mark.parametrize("family", ["llama", "t5", "bert"])
def test_steps_split_across_products_give_the_same_attributions(
    tiny_lm, family: str, monkeypatch
) -> None:
    lm = tiny_lm(family)
    record = _record(lm, family)
    whole = ec.attribute(lm, record, "ig", n_steps=6, progress=False)
    monkeypatch.setattr(native, "VJP_ROWS", 1)
    split = ec.attribute(lm, record, "ig", n_steps=6, progress=False)
    np.testing.assert_allclose(split.scores, whole.scores, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(split.convergence_delta, whole.convergence_delta, atol=1e-6)


@pytest.mark.filterwarnings("ignore::ecco_core.errors.ConvergenceWarning")
def test_precision_takes_every_dtype_spelling(tiny_lm) -> None:
    lm = tiny_lm("gpt2")
    gen = ec.generate(lm, PROMPT, max_new_tokens=1, min_new_tokens=1)
    runs = [
        ec.attribute(lm, gen, "grad_x_input", precision=p, progress=False)
        for p in ("bf16", "bfloat16", torch.bfloat16)
    ]
    assert {r.precision for r in runs} == {"bf16"}
    np.testing.assert_array_equal(runs[0].scores, runs[2].scores)
    fp32 = ec.attribute(lm, gen, "grad_x_input", precision=torch.float32, progress=False)
    assert fp32.precision == "fp32" and fp32.precision_deviation == 0.0
    with pytest.raises(ec.InvalidArgumentError, match="precision='fp16'"):
        ec.attribute(lm, gen, "grad_x_input", precision="fp16", progress=False)
