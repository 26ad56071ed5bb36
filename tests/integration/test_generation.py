from __future__ import annotations

import numpy as np
import pytest
import torch

import ecco_core as ec
from ecco_core.testing import ENCODER_DECODER_FAMILIES, FAMILIES, MASKED_FAMILIES

GENERATING = [f for f in FAMILIES if f not in MASKED_FAMILIES]
PROMPT = "The Eiffel Tower is in the city of"


def _teacher_forced_probs(lm: ec.LM, gen: ec.Generation) -> torch.Tensor:
    """[n_generated, vocab] softmax of the model's logits for each generated step."""
    ids = torch.tensor(gen.token_ids)[None]
    with torch.no_grad():
        if gen.n_encoder_tokens:
            n = gen.n_encoder_tokens
            logits = lm.model(input_ids=ids[:, :n], decoder_input_ids=ids[:, n:]).logits[0]
            rows = logits[: gen.n_generated]
        else:
            logits = lm.model(input_ids=ids).logits[0]
            rows = logits[gen.n_input_tokens - 1 : gen.n_tokens - 1]
    return torch.softmax(rows.float(), -1)


@pytest.mark.parametrize("family", GENERATING)
def test_greedy_matches_model_generate_and_top_k_matches_forward(tiny_lm, family: str) -> None:
    lm = tiny_lm(family)
    gen = ec.generate(lm, PROMPT, max_new_tokens=5, min_new_tokens=5, top_predictions=4)
    enc = lm.tokenizer(PROMPT, return_tensors="pt")
    with torch.no_grad():
        plain = lm.model.generate(
            **enc,
            max_new_tokens=5,
            min_new_tokens=5,
            do_sample=False,
            pad_token_id=lm.tokenizer.pad_token_id,
        )
    start = enc["input_ids"].shape[1] if family not in ENCODER_DECODER_FAMILIES else 1
    np.testing.assert_array_equal(gen.generated_ids, plain[0, start:].numpy())
    assert gen.n_generated == 5 and gen.top_ids.shape == (5, 4)
    probs = _teacher_forced_probs(lm, gen)
    expected, expected_ids = torch.topk(probs, 4)
    np.testing.assert_allclose(gen.top_probs, expected.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(gen.top_ids[:, 0], expected_ids[:, 0].numpy())
    # Greedy: every generated token is the step's top-1 unless a logits processor forced it.
    assert (gen.top_ids[:-1, 0] == gen.generated_ids[:-1]).all()
    assert "".join(gen.tokens[gen.n_input_tokens :]).strip() != "" or gen.text == ""
    assert gen.provenance.function == "generate" and gen.provenance.params["max_new_tokens"] == 5


@pytest.mark.parametrize("family", ["gpt2", "llama", "t5"])
def test_batch_equals_single_prompts(tiny_lm, family: str) -> None:
    lm = tiny_lm(family)
    prompts = ["Hello there", PROMPT]
    batch = ec.generate(lm, prompts, max_new_tokens=4, min_new_tokens=4)
    assert isinstance(batch, tuple) and len(batch) == 2
    for prompt, rec in zip(prompts, batch, strict=True):
        single = ec.generate(lm, prompt, max_new_tokens=4, min_new_tokens=4)
        np.testing.assert_array_equal(rec.token_ids, single.token_ids)
        np.testing.assert_allclose(rec.top_probs, single.top_probs, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("family", ["llama", "bart"])
def test_beam_search_matches_model_generate(tiny_lm, family: str) -> None:
    lm = tiny_lm(family)
    gen = ec.generate(lm, PROMPT, max_new_tokens=4, min_new_tokens=4, num_beams=3)
    enc = lm.tokenizer(PROMPT, return_tensors="pt")
    with torch.no_grad():
        plain = lm.model.generate(
            **enc,
            max_new_tokens=4,
            min_new_tokens=4,
            num_beams=3,
            do_sample=False,
            pad_token_id=lm.tokenizer.pad_token_id,
        )
    start = enc["input_ids"].shape[1] if family == "llama" else 1
    np.testing.assert_array_equal(gen.generated_ids, plain[0, start:].numpy())
    probs = _teacher_forced_probs(lm, gen)
    np.testing.assert_allclose(
        gen.top_probs[:, 0], probs.max(-1).values.numpy(), rtol=1e-4, atol=1e-6
    )


def test_sampling_is_reproducible_and_keeps_global_rng(tiny_lm) -> None:
    lm = tiny_lm("gpt2")
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a = ec.generate(lm, PROMPT, max_new_tokens=6, do_sample=True, seed=7, top_k=50)
    b = ec.generate(lm, PROMPT, max_new_tokens=6, do_sample=True, seed=7, top_k=50)
    assert torch.equal(state, torch.random.get_rng_state())
    assert a == b
    c = ec.generate(lm, PROMPT, max_new_tokens=6, do_sample=True, seed=8, top_k=50)
    assert a.token_ids.tolist() != c.token_ids.tolist()


@pytest.mark.parametrize("family", MASKED_FAMILIES)
def test_predict_masked_matches_forward(tiny_lm, family: str) -> None:
    lm = tiny_lm(family)
    mask = lm.tokenizer.mask_token
    rec = ec.predict_masked(lm, f"She said {mask} would come back, and {mask} were happy.", top_k=3)
    assert len(rec.positions) == 2
    with torch.no_grad():
        logits = lm.model(input_ids=torch.tensor(rec.token_ids)[None]).logits[0]
    expected, ids = torch.topk(torch.softmax(logits[torch.tensor(rec.positions)], -1), 3)
    np.testing.assert_allclose(rec.top_probs, expected.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(rec.top_ids, ids.numpy())
    assert ec.load_record(rec.to_json()) == rec


def test_display_tokens_join_to_text(tiny_lm) -> None:
    for family, expected in [("llama", PROMPT), ("t5", " " + PROMPT)]:
        lm = tiny_lm(family)
        gen = ec.generate(lm, PROMPT, max_new_tokens=1)
        joined = "".join(gen.tokens[: gen.n_encoder_tokens or gen.n_input_tokens])
        assert joined.replace("</s>", "") == expected
        assert any(t.startswith(("Ġ", "▁")) for t in gen.raw_tokens)
        assert not any("Ġ" in t or "▁" in t for t in gen.tokens)
    bert = tiny_lm("bert")
    rec = ec.predict_masked(bert, f"paris is a {bert.tokenizer.mask_token}.")
    special = set(bert.tokenizer.all_special_tokens)
    words = "".join(t for t in rec.tokens if t not in special)
    assert words == " paris is a ." and "##" not in words


def test_bad_generation_input(tiny_lm) -> None:
    lm = tiny_lm("gpt2")
    with pytest.raises(ec.InvalidArgumentError, match="prompt is empty"):
        ec.generate(lm, "   ")
    with pytest.raises(ec.InvalidArgumentError, match="max_new_tokens=0 is out of range"):
        ec.generate(lm, PROMPT, max_new_tokens=0)
    with pytest.raises(ec.InvalidArgumentError, match="exceeds the model's context of 128"):
        ec.generate(lm, "word " * 200)
    with pytest.raises(ec.InvalidTypeError, match="string or a list"):
        ec.generate(lm, 42)  # type: ignore[call-overload]
    with pytest.raises(ec.InvalidArgumentError, match="top_p"):
        ec.generate(lm, PROMPT, do_sample=True, top_p=2.0)
    with pytest.raises(ec.InvalidArgumentError, match="predict_masked"):
        ec.generate(tiny_lm("bert"), PROMPT)
    with pytest.raises(ec.InvalidArgumentError, match="no mask token"):
        ec.predict_masked(tiny_lm("bert"), "no mask here")
    with pytest.raises(ec.InvalidArgumentError, match="masked language model"):
        ec.predict_masked(lm, "x [MASK]")


@pytest.mark.filterwarnings("ignore::ecco_core.errors.ConvergenceWarning")  # IG, few steps
def test_bf16_model_gives_float32_records(tiny_path) -> None:
    lm = ec.load(tiny_path("llama"), dtype=torch.bfloat16)
    assert next(lm.model.parameters()).dtype == torch.bfloat16
    gen = ec.generate(lm, PROMPT, max_new_tokens=3, min_new_tokens=3)
    preds = ec.layer_predictions(lm, gen, gen.n_input_tokens)
    attr = ec.attribute(lm, gen, n_steps=4, progress=False)
    acts = ec.activations(lm, gen)
    assert gen.top_probs.dtype == preds.probs.dtype == attr.scores.dtype == np.float32
    assert acts.values.dtype == np.float32
    np.testing.assert_allclose(attr.scores.sum(1), 1.0, rtol=1e-5)
    assert next(lm.model.parameters()).dtype == torch.bfloat16  # never cast
