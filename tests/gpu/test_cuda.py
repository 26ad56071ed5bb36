"""CPU/GPU agreement (skipped without CUDA)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ecco_core as ec
from ecco_core.attribution import native

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    # These compare devices and precisions on tiny random models, not convergence.
    pytest.mark.filterwarnings("ignore::ecco_core.errors.ConvergenceWarning"),
]


@pytest.mark.parametrize("family", ["llama", "gpt2", "t5", "bert"])
def test_cuda_matches_cpu(tiny_path, family: str) -> None:
    cpu = ec.load(tiny_path(family))
    gpu = ec.load(tiny_path(family), device="cuda")
    assert gpu.device.type == "cuda"
    if family == "bert":
        text = f"paris is the {cpu.tokenizer.mask_token} of france."
        ma, mb = ec.predict_masked(cpu, text), ec.predict_masked(gpu, text)
        np.testing.assert_allclose(ma.top_probs, mb.top_probs, rtol=1e-3, atol=1e-5)
        return
    a = ec.generate(cpu, "The Eiffel Tower is in", max_new_tokens=4, min_new_tokens=4)
    b = ec.generate(gpu, "The Eiffel Tower is in", max_new_tokens=4, min_new_tokens=4)
    assert a.token_ids.tolist() == b.token_ids.tolist()
    np.testing.assert_allclose(a.top_probs, b.top_probs, rtol=1e-3, atol=1e-5)
    np.testing.assert_array_equal(ec.rankings(cpu, a).ranks, ec.rankings(gpu, a).ranks)
    ig_cpu = ec.attribute(cpu, a, progress=False)
    ig_gpu = ec.attribute(gpu, a, progress=False)
    np.testing.assert_allclose(ig_cpu.scores, ig_gpu.scores, rtol=1e-3, atol=1e-4)
    bf16 = ec.attribute(gpu, a, precision="bf16", progress=False)
    assert bf16.precision == "bf16" and bf16.precision_deviation >= 0
    tf32 = ec.attribute(gpu, a, precision="tf32", progress=False)
    assert tf32.precision_deviation < 0.05
    acts_cpu, acts_gpu = ec.activations(cpu, a), ec.activations(gpu, a)
    np.testing.assert_allclose(acts_cpu.values, acts_gpu.values, rtol=1e-3, atol=1e-4)


def test_batched_products_match_one_step_products_on_cuda(tiny_path, monkeypatch) -> None:
    lm = ec.load(tiny_path("llama"), device="cuda")
    gen = ec.generate(lm, "The Eiffel Tower is in", max_new_tokens=6, min_new_tokens=6)
    batched = ec.attribute(lm, gen, progress=False)
    monkeypatch.setattr(native, "VJP_ROWS", 1)
    single = ec.attribute(lm, gen, progress=False)
    np.testing.assert_allclose(batched.scores, single.scores, rtol=1e-4, atol=1e-6)
    assert np.isfinite(ec.attribute(lm, gen, precision="bf16", progress=False).scores).all()


@pytest.mark.parametrize("family", ["llama", "t5", "bert"])
def test_batched_records_match_one_at_a_time_on_cuda(tiny_path, family: str) -> None:
    lm = ec.load(tiny_path(family), device="cuda")
    texts = ["The Eiffel Tower is in", "Paris", "She said that he would come back, and"]
    if family == "bert":
        recs: list = [ec.predict_masked(lm, f"{t} {lm.tokenizer.mask_token}.") for t in texts]
    else:
        recs = list(ec.generate(lm, texts, max_new_tokens=3, min_new_tokens=3))
    for method in ("integrated_gradients", "saliency"):
        batched = ec.attribute(lm, recs, method, progress=False)
        for rec, got in zip(recs, batched, strict=True):
            alone = ec.attribute(lm, rec, method, progress=False)
            np.testing.assert_allclose(got.scores, alone.scores, rtol=1e-3, atol=1e-5)
