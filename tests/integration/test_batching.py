"""Batched calls equal one-at-a-time calls, on every tiny family, ragged lengths, batch sizes
1, 3 and 16 (several batches, a partial last batch, everything in one batch); attributions
also on the classifiers and with the default batches."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import ecco_core as ec
from ecco_core.testing import CLASSIFIER_FAMILIES, FAMILIES, MASKED_FAMILIES

GENERATING = [f for f in FAMILIES if f not in MASKED_FAMILIES]
PROMPTS = (
    "The Eiffel Tower is in the city of",
    "Paris",
    "She said that he would come back, and they were happy; it was late, but we",
    "Heathrow airport is",
    "it was late",
)
BATCH_SIZES = (1, 3, 16)
RTOL = 1e-5  # relative, for probabilities
ATOL = 1e-7


def _generations(lm: ec.LM) -> list[ec.Generation]:
    """One generation per prompt, one at a time, with 2 to 4 new tokens (ragged both ways)."""
    return [
        ec.generate(lm, text, max_new_tokens=2 + i % 3, min_new_tokens=2 + i % 3)
        for i, text in enumerate(PROMPTS)
    ]


def _masked(lm: ec.LM) -> list[ec.MaskedPredictions]:
    mask = lm.tokenizer.mask_token
    texts = [f"the tower is in the city of {mask}.", f"{mask} is late", f"she said {mask}"]
    texts += [f"it was late, but we waited and {mask} came back happy"]
    return [ec.predict_masked(lm, text) for text in texts]


_MADE: dict[str, list] = {}


def _records(tiny_lm, family: str) -> tuple[ec.LM, list]:
    """The model and its records (made once per family: generations or masked predictions)."""
    lm = tiny_lm(family)
    if family not in _MADE:
        _MADE[family] = _masked(lm) if family in MASKED_FAMILIES else _generations(lm)
    return lm, _MADE[family]


def _first_positions(recs: list) -> list[int]:
    return [r.n_input_tokens if isinstance(r, ec.Generation) else int(r.positions[0]) for r in recs]


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("family", GENERATING)
def test_rankings_batched_equal_one_at_a_time(tiny_lm, family: str, batch_size: int) -> None:
    lm, gens = _records(tiny_lm, family)
    batched = ec.rankings(lm, gens, batch_size=batch_size)
    assert isinstance(batched, tuple) and len(batched) == len(gens)
    for gen, rec in zip(gens, batched, strict=True):
        alone = ec.rankings(lm, gen)
        assert rec.ranks.shape == (lm.spec.n_layers, gen.n_generated)
        np.testing.assert_array_equal(rec.ranks, alone.ranks)
        np.testing.assert_array_equal(rec.positions, alone.positions)
        assert rec.tokens == alone.tokens and rec.sequence_tokens == alone.sequence_tokens


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("family", FAMILIES)
def test_layer_predictions_batched_equal_one_at_a_time(
    tiny_lm, family: str, batch_size: int
) -> None:
    lm, recs = _records(tiny_lm, family)
    firsts = _first_positions(recs)
    # One entry per record: every predicted position of the even records, one of the others.
    positions = [
        list(range(first, len(r.token_ids))) if i % 2 == 0 else first
        for i, (r, first) in enumerate(zip(recs, firsts, strict=True))
    ]
    batched = ec.layer_predictions(lm, recs, positions, top_k=5, batch_size=batch_size)
    assert len(batched) == len(recs)
    for rec, asked, got in zip(recs, positions, batched, strict=True):
        alone = ec.layer_predictions(lm, rec, asked, top_k=5)
        # A record for a position, a tuple of records for a list of positions.
        assert isinstance(got, ec.LayerPredictions) == isinstance(asked, int)
        got_all = got if isinstance(got, tuple) else (got,)
        alone_all = alone if isinstance(alone, tuple) else (alone,)
        assert len(got_all) == len(alone_all) == (1 if isinstance(asked, int) else len(asked))
        for g, a in zip(got_all, alone_all, strict=True):
            assert g.position == a.position and g.target_id == a.target_id
            np.testing.assert_allclose(g.probs, a.probs, rtol=RTOL, atol=ATOL)
            np.testing.assert_array_equal(g.token_ids[:, 0], a.token_ids[:, 0])


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("family", FAMILIES)
def test_rankings_watch_batched_equal_one_at_a_time(tiny_lm, family: str, batch_size: int) -> None:
    lm, recs = _records(tiny_lm, family)
    firsts = _first_positions(recs)
    watch = [3, 11, 20]
    batched = ec.rankings_watch(lm, recs, watch, firsts, batch_size=batch_size)
    assert len(batched) == len(recs)
    for rec, p, got in zip(recs, firsts, batched, strict=True):
        alone = ec.rankings_watch(lm, rec, watch, p)
        assert got.position == p
        np.testing.assert_array_equal(got.ranks, alone.ranks)


def test_batched_lens_arguments_are_checked(tiny_lm) -> None:
    lm, gens = _records(tiny_lm, "gpt2")
    with pytest.raises(ec.InvalidArgumentError, match="one entry per record"):
        ec.layer_predictions(lm, gens, [1, 2])
    with pytest.raises(ec.InvalidArgumentError, match="empty"):
        ec.rankings(lm, [])
    with pytest.raises(ec.InvalidArgumentError, match="batch_size"):
        ec.rankings(lm, gens, batch_size=0)
    with pytest.raises(ec.InvalidArgumentError, match="not a list"):
        ec.rankings_watch(lm, gens, [3], [[5, 6]] * len(gens))  # type: ignore[list-item]
    # One position for every record.
    same = ec.layer_predictions(lm, gens, 2)
    assert [r.position for r in same] == [2] * len(gens)


def test_cache_reuses_a_batch_and_keeps_records_apart(tiny_lm) -> None:
    lm, gens = _records(tiny_lm, "llama")
    block = lm.model.get_submodule(lm.spec.blocks[0])
    passes = []
    handle = block.register_forward_hook(lambda *_: passes.append(1))
    positions = [g.n_input_tokens for g in gens]
    try:
        with ec.lens_cache():
            ranks = ec.rankings(lm, gens)
            watch = ec.rankings_watch(lm, gens, [3], positions)
            preds = ec.layer_predictions(lm, gens, positions, top_k=3)
            assert len(passes) == 1  # one forward pass serves the batch's three calls
            alone = ec.rankings(lm, gens[1])  # a batch of one: its own pass
            assert len(passes) == 2
    finally:
        handle.remove()
    for r, o in zip(ranks, ec.rankings(lm, gens), strict=True):
        np.testing.assert_array_equal(r.ranks, o.ranks)
    for g, p, w, pred in zip(gens, positions, watch, preds, strict=True):
        np.testing.assert_array_equal(w.ranks, ec.rankings_watch(lm, g, [3], p).ranks)
        expected = ec.layer_predictions(lm, g, p, top_k=3).probs
        np.testing.assert_allclose(pred.probs, expected, rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(alone.ranks, ec.rankings(lm, gens[1]).ranks)


def _activation_inputs(lm: ec.LM, family: str) -> list:
    """Texts and records mixed (for an encoder-decoder model: texts read the encoder,
    generations the decoder, so both stacks run in one call)."""
    if family in MASKED_FAMILIES:
        return [*PROMPTS[:2], *_masked(lm), PROMPTS[2]]
    _, gens = _records(lambda _: lm, family)
    return [PROMPTS[0], gens[1], gens[2], PROMPTS[3], gens[4], PROMPTS[1]]


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("family", FAMILIES)
def test_activations_batched_equal_one_at_a_time(tiny_lm, family: str, batch_size: int) -> None:
    lm = tiny_lm(family)
    inputs = _activation_inputs(lm, family)
    batched = ec.activations(lm, inputs, layers=[0, -1], batch_size=batch_size)
    assert len(batched) == len(inputs)
    for source, got in zip(inputs, batched, strict=True):
        alone = ec.activations(lm, source, layers=[0, -1])
        assert got.stack == alone.stack and got.tokens == alone.tokens
        assert got.values.shape == alone.values.shape
        np.testing.assert_allclose(got.values, alone.values, rtol=RTOL, atol=1e-5)


def test_activations_of_both_stacks_in_one_batch(tiny_lm) -> None:
    lm, gens = _records(tiny_lm, "t5")
    encoder = ec.activations(lm, gens, stack="encoder", batch_size=3)
    decoder = ec.activations(lm, gens, stack="decoder", batch_size=3)
    for gen, enc, dec in zip(gens, encoder, decoder, strict=True):
        assert enc.values.shape[-1] == gen.n_encoder_tokens
        assert dec.values.shape[-1] == gen.n_tokens - gen.n_encoder_tokens
        np.testing.assert_allclose(
            enc.values, ec.activations(lm, gen, stack="encoder").values, rtol=RTOL, atol=1e-5
        )
    with pytest.raises(ec.InvalidArgumentError, match="batch_size"):
        ec.activations(lm, gens, batch_size=0)


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("family", GENERATING)
def test_generate_batched_equals_one_at_a_time(tiny_lm, family: str, batch_size: int) -> None:
    lm = tiny_lm(family)
    batched = ec.generate(
        lm, list(PROMPTS), max_new_tokens=4, min_new_tokens=4, batch_size=batch_size
    )
    assert len(batched) == len(PROMPTS)
    for text, got in zip(PROMPTS, batched, strict=True):
        alone = ec.generate(lm, text, max_new_tokens=4, min_new_tokens=4)
        np.testing.assert_array_equal(got.token_ids, alone.token_ids)
        assert got.n_input_tokens == alone.n_input_tokens
        np.testing.assert_allclose(got.top_probs, alone.top_probs, rtol=RTOL, atol=ATOL)
        np.testing.assert_array_equal(got.top_ids[:, 0], alone.top_ids[:, 0])


ATTRIBUTED = (*FAMILIES, *CLASSIFIER_FAMILIES)
NATIVE_METHODS = ("integrated_gradients", "saliency", "grad_x_input")
_ALONE: dict[tuple[str, str], list] = {}


def _explained(tiny_lm, family: str) -> tuple[ec.LM, list]:
    """Records to attribute: ragged, with repeats (equal lengths, so classifiers pack too)."""
    if family in CLASSIFIER_FAMILIES:
        lm = tiny_lm(family)
        return lm, [ec.classify(lm, PROMPTS[i]) for i in (0, 1, 2, 1, 3, 1)]
    lm, recs = _records(tiny_lm, family)
    return lm, [*recs, recs[1]]


def _attribute(lm: ec.LM, recs, method: str, batch_size: int | None):
    return ec.attribute(
        lm, recs, method, n_steps=5, aggregation="none", batch_size=batch_size, progress=False
    )


def _widest_pass(lm: ec.LM, run) -> int:
    """The most sequences one differentiated forward pass of the model's first block held
    during ``run()``."""
    block = lm.model.get_submodule(lm.spec.blocks[0])
    sizes: list[int] = []

    def hook(_module, args, kwargs) -> None:
        hidden = args[0] if args else next(iter(kwargs.values()))
        if torch.is_grad_enabled():
            sizes.append(int(hidden.shape[0]))

    handle = block.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        run()
    finally:
        handle.remove()
    return max(sizes)


@pytest.mark.filterwarnings("ignore::ecco_core.errors.ConvergenceWarning")  # compares engines
@pytest.mark.parametrize("batch_size", [*BATCH_SIZES, None])
@pytest.mark.parametrize("family", ATTRIBUTED)
def test_attribute_batched_equals_one_at_a_time(tiny_lm, family: str, batch_size) -> None:
    lm, recs = _explained(tiny_lm, family)
    for method in NATIVE_METHODS:
        if (family, method) not in _ALONE:
            _ALONE[family, method] = [_attribute(lm, r, method, None) for r in recs]
        batched = _attribute(lm, recs, method, batch_size)
        assert isinstance(batched, tuple) and len(batched) == len(recs)
        for rec, got, alone in zip(recs, batched, _ALONE[family, method], strict=True):
            assert got.tokens == alone.tokens == rec.tokens
            np.testing.assert_array_equal(got.target_ids, alone.target_ids)
            np.testing.assert_array_equal(got.target_positions, alone.target_positions)
            assert got.values.shape == alone.values.shape
            scale = float(np.abs(alone.values).max())
            np.testing.assert_allclose(got.values, alone.values, rtol=1e-4, atol=1e-4 * scale)
            np.testing.assert_allclose(got.target_values, alone.target_values, rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(
                got.convergence_delta, alone.convergence_delta, rtol=1e-3, atol=1e-4 * scale
            )
            assert got.provenance.params == alone.provenance.params | {"batch_size": batch_size}


@pytest.mark.parametrize("family", ["gpt2", "t5", "bert", "gpt2_classifier"])
def test_attribute_runs_records_together(tiny_lm, family: str) -> None:
    """Saliency (one point per record) holds several records in one pass: batch_size of them,
    or as many as fit by default; a classifier's records only with records of their length."""
    lm, recs = _explained(tiny_lm, family)
    lengths = [len(r.token_ids) for r in recs]
    same = max(lengths.count(n) for n in lengths)
    for batch_size, expected in ((1, 1), (3, 3), (None, len(recs))):
        if family in CLASSIFIER_FAMILIES:
            expected = min(expected, same)

        def run(batch_size=batch_size) -> None:
            ec.attribute(lm, recs, "saliency", batch_size=batch_size, progress=False)

        assert _widest_pass(lm, run) == expected


def test_attribute_lists_of_other_methods_run_each_record_alone(tiny_lm) -> None:
    lm, recs = _explained(tiny_lm, "gpt2")
    for method in ("feature_ablation", "attention_rollout"):
        batched = ec.attribute(lm, recs[:3], method, progress=False)
        for rec, got in zip(recs[:3], batched, strict=True):
            np.testing.assert_array_equal(got.scores, ec.attribute(lm, rec, method).scores)
    with pytest.raises(ec.InvalidArgumentError, match="empty"):
        ec.attribute(lm, [])
    with pytest.raises(ec.InvalidArgumentError, match="batch_size"):
        ec.attribute(lm, recs, batch_size=0)


@pytest.mark.filterwarnings("ignore::ecco_core.errors.ConvergenceWarning")  # compares engines
@pytest.mark.parametrize("family", ["llama", "roberta", "bart"])
def test_attribute_batched_options_equal_one_at_a_time(tiny_lm, family: str) -> None:
    """A foil, another target and bf16 (with its fp32 reference run) hold per record too."""
    lm, recs = _explained(tiny_lm, family)
    options: dict[str, Any] = {
        "target": "log_probability",
        "foil": 7,
        "precision": "bf16",
        "n_steps": 3,
    }
    batched = ec.attribute(lm, recs, batch_size=16, progress=False, **options)
    for rec, got in zip(recs, batched, strict=True):
        alone = ec.attribute(lm, rec, progress=False, **options)
        assert got.foil_id == alone.foil_id == 7 and got.precision == "bf16"
        np.testing.assert_allclose(got.target_values, alone.target_values, rtol=1e-5, atol=1e-6)
        # bf16 rounding differs between batch shapes: compare at bf16's resolution.
        np.testing.assert_allclose(got.scores, alone.scores, atol=0.005)
        assert abs(got.precision_deviation - alone.precision_deviation) < 0.005
