from __future__ import annotations

from typing import cast

import numpy as np
import pytest
import torch

import ecco_core as ec
from ecco_core.testing import ENCODER_DECODER_FAMILIES, FAMILIES, MASKED_FAMILIES

from . import reference

GENERATING = [f for f in FAMILIES if f not in MASKED_FAMILIES]
PROMPT = "The Eiffel Tower is in the city of"


def _generation(lm: ec.LM) -> ec.Generation:
    return ec.generate(lm, PROMPT, max_new_tokens=4, min_new_tokens=4)


def _reference_lens(family: str, lm: ec.LM, gen: ec.Generation, norm: str) -> torch.Tensor:
    """[n_layers, n_tokens, vocab]: row p holds the prediction OF token p (p-1's hidden state)."""
    ids = torch.tensor(gen.token_ids)[None]
    if family in ENCODER_DECODER_FAMILIES:
        n_enc = gen.n_encoder_tokens
        logits = reference.lens(family, lm.model, ids[:, :n_enc], norm, ids[:, n_enc:])
        pad = torch.zeros(logits.shape[0], n_enc + 1, logits.shape[-1])
        return torch.cat([pad, logits[:, :-1]], dim=1)
    logits = reference.lens(family, lm.model, ids, norm)
    return torch.cat([torch.zeros_like(logits[:, :1]), logits[:, :-1]], dim=1)


@pytest.mark.parametrize("norm", ["final", "none"])
@pytest.mark.parametrize("family", GENERATING)
def test_rankings_and_predictions_match_hidden_states(tiny_lm, family: str, norm: str) -> None:
    lm = tiny_lm(family)
    gen = _generation(lm)
    ref = _reference_lens(family, lm, gen, norm)
    positions = list(range(gen.n_input_tokens, gen.n_tokens))
    targets = torch.tensor(gen.token_ids[positions])
    chosen = ref[:, positions].gather(-1, targets.expand(ref.shape[0], -1)[..., None])
    expected_ranks = (ref[:, positions] > chosen).sum(-1) + 1

    ranks = ec.rankings(lm, gen, norm=norm)
    np.testing.assert_array_equal(ranks.ranks, expected_ranks.numpy())
    np.testing.assert_array_equal(ranks.positions, positions)
    assert ranks.layer_labels[-1].endswith("1")

    preds = ec.layer_predictions(lm, gen, positions, top_k=5, norm=norm)
    assert isinstance(preds, tuple) and len(preds) == len(positions)
    for p, rec in zip(positions, preds, strict=True):
        probs, ids = torch.topk(torch.softmax(ref[:, p], -1), 5)
        np.testing.assert_allclose(rec.probs, probs.numpy(), rtol=1e-4, atol=1e-6)
        np.testing.assert_array_equal(rec.token_ids[:, 0], ids[:, 0].numpy())
        assert rec.target_id == int(gen.token_ids[p])
    # The last layer is the model's own distribution: equal to the generation's top-k.
    np.testing.assert_allclose(preds[0].probs[-1], gen.top_probs[0, :5], rtol=1e-4, atol=1e-6)

    watch = ec.rankings_watch(
        lm, gen, [3, 11, int(gen.token_ids[positions[0]])], positions[0], norm=norm
    )
    row = ref[:, positions[0]]
    expected = (row[:, None, :] > row[:, [3, 11, int(gen.token_ids[positions[0]])], None]).sum(
        -1
    ) + 1
    np.testing.assert_array_equal(watch.ranks, expected.numpy())
    np.testing.assert_array_equal(watch.ranks[:, 2], ranks.ranks[:, 0])


def test_one_position_gives_one_record_and_prompt_positions_work(tiny_lm) -> None:
    lm = tiny_lm("gpt2")
    gen = _generation(lm)
    rec = ec.layer_predictions(lm, gen, 1)
    assert isinstance(rec, ec.LayerPredictions) and rec.position == 1
    assert rec.target_token == gen.tokens[1]


@pytest.mark.parametrize("family", MASKED_FAMILIES)
def test_masked_layer_predictions(tiny_lm, family: str) -> None:
    lm = tiny_lm(family)
    masked = ec.predict_masked(lm, f"The Eiffel {lm.tokenizer.mask_token} is in Paris.")
    p = int(masked.positions[0])
    ref = reference.lens(family, lm.model, torch.tensor(masked.token_ids)[None], "final")
    rec = ec.layer_predictions(lm, masked, p, top_k=3)
    probs, _ = torch.topk(torch.softmax(ref[:, p], -1), 3)
    np.testing.assert_allclose(rec.probs, probs.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(rec.probs[-1], masked.top_probs[0, :3], rtol=1e-4, atol=1e-6)


def test_bad_lens_input(tiny_lm) -> None:
    lm = tiny_lm("gpt2")
    gen = _generation(lm)
    with pytest.raises(ec.InvalidArgumentError, match=r"norm='both'.*'final', 'none'"):
        ec.rankings(lm, gen, norm="both")
    with pytest.raises(ec.InvalidArgumentError, match=f"valid: 1 to {gen.n_tokens - 1}"):
        ec.layer_predictions(lm, gen, gen.n_tokens)
    with pytest.raises(ec.InvalidArgumentError, match="valid: 1 to"):
        ec.layer_predictions(lm, gen, 0)
    with pytest.raises(ec.InvalidArgumentError, match="not one"):
        ec.rankings_watch(lm, gen, ["Eiffel Tower"], gen.n_input_tokens)
    with pytest.raises(ec.InvalidArgumentError, match="top_k"):
        ec.layer_predictions(lm, gen, 3, top_k=0)
    other = tiny_lm("t5")
    with pytest.raises(ec.InvalidArgumentError, match=r"another model|causal model"):
        ec.rankings(other, gen)
    big = cast(
        ec.Generation,
        ec.load_record(
            gen.to_json().replace(f'"data": [{gen.token_ids[0]},', '"data": [999999,', 1)
        ),
    )
    with pytest.raises(ec.InvalidArgumentError, match="another model"):
        ec.rankings(lm, big)


def test_cache_follows_weight_changes_and_sequences(tiny_lm) -> None:
    lm = tiny_lm("llama")
    gen = _generation(lm)
    other = ec.generate(lm, "Heathrow airport is", max_new_tokens=3, min_new_tokens=3)
    with ec.lens_cache():
        first = ec.layer_predictions(lm, gen, gen.n_input_tokens)
        assert (
            ec.layer_predictions(lm, other, other.n_input_tokens).probs.tolist()
            != first.probs.tolist()
        )
        weight = lm.model.get_submodule(lm.spec.ffn_out[0]).weight
        saved = weight.detach().clone()
        try:
            with torch.no_grad():
                weight.mul_(3.0)
            changed = ec.layer_predictions(lm, gen, gen.n_input_tokens)
            with ec.lens_cache():  # a nested scope shares the outer store
                again = ec.layer_predictions(lm, gen, gen.n_input_tokens)
        finally:
            with torch.no_grad():
                weight.copy_(saved)
        back = ec.layer_predictions(lm, gen, gen.n_input_tokens)
    with torch.no_grad():
        weight.mul_(3.0)
    try:
        fresh = ec.layer_predictions(lm, gen, gen.n_input_tokens)
    finally:
        with torch.no_grad():
            weight.copy_(saved)
    np.testing.assert_array_equal(changed.probs, fresh.probs)
    np.testing.assert_array_equal(again.probs, fresh.probs)
    assert not np.array_equal(changed.probs, first.probs)
    np.testing.assert_array_equal(back.probs, first.probs)
    np.testing.assert_array_equal(
        ec.layer_predictions(lm, gen, gen.n_input_tokens).probs, first.probs
    )


def test_handles_with_different_specs_never_share_cached_work(tiny_lm) -> None:
    # Two handles on one model: the second without a final norm (Ecco's raw projection of
    # every layer). Before the cache was keyed on the spec, the second handle got the first
    # one's probabilities inside a shared scope (off by 7e-4 on this model).
    lm = tiny_lm("llama")
    raw = ec.load(lm.model, lm.tokenizer, spec={"final_norm": None})
    gen = _generation(lm)
    p = gen.n_input_tokens
    with ec.lens_cache():
        normed = ec.layer_predictions(lm, gen, p, top_k=20)
        unnormed = ec.layer_predictions(raw, gen, p, top_k=20)
        unnormed_ranks = ec.rankings(raw, gen)
    np.testing.assert_array_equal(unnormed.probs, ec.layer_predictions(raw, gen, p, top_k=20).probs)
    np.testing.assert_array_equal(unnormed_ranks.ranks, ec.rankings(raw, gen).ranks)
    # Intermediate layers as in Ecco's projection without the final norm; the last layer is
    # projected unnormed too, unlike the model's own output.
    ref = reference.lens("llama", lm.model, torch.tensor(gen.token_ids)[None], "none")
    expected = torch.softmax(ref[:-1, p - 1], -1).topk(20).values
    np.testing.assert_allclose(unnormed.probs[:-1], expected.numpy(), rtol=1e-4, atol=1e-6)
    assert not np.allclose(unnormed.probs[-1], normed.probs[-1], rtol=1e-4, atol=1e-6)


def test_nothing_is_kept_outside_a_cache_scope(tiny_lm) -> None:
    from ecco_core import lens

    lm = tiny_lm("gpt2")
    gen = _generation(lm)
    ec.layer_predictions(lm, gen, gen.n_input_tokens)
    assert lens._SCOPE.get() is None
    with ec.lens_cache():
        ec.layer_predictions(lm, gen, gen.n_input_tokens)
        store = lens._SCOPE.get()
        assert store is not None and set(store) == {"states", "logits"}
    assert lens._SCOPE.get() is None and store == {}
