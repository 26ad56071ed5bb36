"""Attention capture against an eager reference copy, model state, bad input, rollout by hand.

The reference for every family is a second copy of the same saved tiny model loaded with
``attn_implementation="eager"`` and run with ``output_attentions=True``; the model under test
is loaded the ordinary way (SDPA where transformers offers it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import ecco_core as ec
from ecco_core.attention_capture import _configs
from ecco_core.testing import CAUSAL_FAMILIES, ENCODER_DECODER_FAMILIES, FAMILIES

TEXT = "Heathrow airport is located in the city of"


def _eager_copy(tiny_path, family: str) -> Any:
    import transformers

    folder = tiny_path(family)
    config = transformers.AutoConfig.from_pretrained(folder, attn_implementation="eager")
    auto = {
        "masked": transformers.AutoModelForMaskedLM,
        "encoder-decoder": transformers.AutoModelForSeq2SeqLM,
    }.get(_kind(family), transformers.AutoModelForCausalLM)
    model = auto.from_pretrained(folder, config=config, attn_implementation="eager")
    return model.eval()


def _kind(family: str) -> str:
    if family in CAUSAL_FAMILIES:
        return "causal"
    if family in ENCODER_DECODER_FAMILIES:
        return "encoder-decoder"
    return "masked"


def _source(lm: ec.LM) -> Any:
    if lm.spec.kind == "masked":
        return ec.predict_masked(lm, f"paris is the {lm.tokenizer.mask_token} of france.")
    return ec.generate(lm, TEXT, max_new_tokens=3, min_new_tokens=3)


def _reference_attentions(ref: Any, source: Any) -> dict[str, np.ndarray]:
    """stack -> [n_layers, n_heads, n_query, n_key] from output_attentions on the eager copy."""
    ids = torch.tensor(source.token_ids)[None]
    with torch.no_grad():
        if isinstance(source, ec.Generation) and source.n_encoder_tokens:
            n_enc = source.n_encoder_tokens
            out = ref(
                input_ids=ids[:, :n_enc], decoder_input_ids=ids[:, n_enc:], output_attentions=True
            )
            stacks = {
                "encoder": out.encoder_attentions,
                "decoder": out.decoder_attentions,
                "cross": out.cross_attentions,
            }
        else:
            out = ref(input_ids=ids, output_attentions=True)
            stacks = {"decoder" if source_is_causal(source) else "encoder": out.attentions}
    result = {}
    for stack, layers in stacks.items():
        assert layers and all(a is not None for a in layers), "eager reference gave no attentions"
        result[stack] = torch.stack([a[0] for a in layers]).float().numpy()
    return result


def source_is_causal(source: Any) -> bool:
    return isinstance(source, ec.Generation) and source.model_kind == "causal"


def _hooks(model: torch.nn.Module) -> list[tuple[int, ...]]:
    names = (
        "_forward_hooks",
        "_forward_pre_hooks",
        "_backward_hooks",
        "_backward_pre_hooks",
        "_forward_hooks_with_kwargs",
        "_forward_pre_hooks_with_kwargs",
        "_state_dict_hooks",
        "_load_state_dict_pre_hooks",
    )
    return [tuple(len(getattr(m, n, {})) for n in names) for m in model.modules()]


def _state(model: torch.nn.Module) -> tuple[Any, ...]:
    return (
        [(id(c), c.__dict__.get("_attn_implementation_internal")) for c in _configs(model)],
        [(id(c), dict(c.__dict__)) for c in _configs(model)],
        _hooks(model),
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        {k: v.clone() for k, v in model.state_dict().items()},
    )


def _assert_same(before: tuple[Any, ...], after: tuple[Any, ...]) -> None:
    assert before[:5] == after[:5]
    assert before[5].keys() == after[5].keys()
    for key, value in before[5].items():
        assert torch.equal(value, after[5][key]), key


@pytest.mark.parametrize("family", FAMILIES)
def test_weights_equal_eager_reference(tiny_lm, tiny_path, family: str) -> None:
    lm = tiny_lm(family)
    impl = lm.model.config._attn_implementation
    assert impl == ("eager" if family == "bloom" else "sdpa")  # the case worth testing
    source = _source(lm)
    expected = _reference_attentions(_eager_copy(tiny_path, family), source)
    before = _state(lm.model)
    for stack, reference in expected.items():
        att = ec.attention(lm, source, stack=stack)
        assert isinstance(att, ec.Attention) and att.stack == stack
        assert att.weights.dtype == np.float32
        assert att.weights.shape == reference.shape
        np.testing.assert_allclose(att.weights, reference, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(att.weights.sum(-1), 1.0, atol=1e-5)
        if stack == "decoder":  # causal: nothing on later tokens, in the reference too
            assert np.triu(reference, k=1).max() == 0 and np.triu(att.weights, k=1).max() == 0
        n_q, n_k = reference.shape[2:]
        assert att.query_tokens == tuple(source.tokens[att.query_start : att.query_start + n_q])
        assert len(att.key_tokens) == n_k
        part = ec.attention(lm, source, stack=stack, layers=[-1], heads=[3, 1])
        assert part.layers.tolist() == [1] and part.heads.tolist() == [1, 3]
        np.testing.assert_allclose(part.weights, reference[[-1]][:, [1, 3]], rtol=1e-5, atol=1e-6)
        assert ec.load_record(part.to_json()) == part
    _assert_same(before, _state(lm.model))
    assert lm.model.config._attn_implementation == impl


def test_text_float16_and_lists(tiny_lm) -> None:
    lm = tiny_lm("llama")
    full = ec.attention(lm, TEXT)
    half = ec.attention(lm, TEXT, dtype="float16")
    assert half.weights.dtype == np.float16
    np.testing.assert_allclose(half.weights, full.weights, atol=1e-3)
    assert ec.load_record(half.to_json()) == half
    assert full.tokens == full.query_tokens == full.key_tokens
    both = ec.attention(lm, [TEXT, "short text"], layers=0)
    assert isinstance(both, tuple) and both[0].weights.shape[2] != both[1].weights.shape[2]
    t5 = tiny_lm("t5")
    enc = ec.attention(t5, TEXT)
    assert enc.stack == "encoder" and enc.layer_labels == ("encoder 0", "encoder 1")


def test_model_left_unchanged_after_error_and_in_training_mode(tiny_lm) -> None:
    lm = tiny_lm("gpt2")
    gen = ec.generate(lm, TEXT, max_new_tokens=2, min_new_tokens=2)
    model = lm.model
    model.train()
    model.get_submodule(lm.spec.blocks[0]).requires_grad_(False)
    try:
        before = _state(model)
        ec.attention(lm, gen)
        ec.attribute(lm, gen, "attention_rollout")
        _assert_same(before, _state(model))
        block = model.get_submodule(lm.spec.blocks[1])
        handle = block.register_forward_hook(lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))
        try:
            with_hook = _state(model)
            for call in (
                lambda: ec.attention(lm, gen),
                lambda: ec.attribute(lm, gen, "attention_rollout"),
            ):
                with pytest.raises(RuntimeError, match="boom"):
                    call()
                _assert_same(with_hook, _state(model))
        finally:
            handle.remove()
        _assert_same(before, _state(model))
    finally:
        model.eval()
        model.requires_grad_(True)


def _count_forwards(model: torch.nn.Module) -> tuple[list[int], Any]:
    calls = [0]

    def count(*_: Any) -> None:
        calls[0] += 1

    return calls, model.register_forward_pre_hook(count)


@pytest.mark.parametrize(
    ("family", "kwargs", "message"),
    [
        ("gpt2", {"layers": [2]}, "layer 2 is out of range; there are 2 layers"),
        ("gpt2", {"layers": [-3]}, "layer -3 is out of range"),
        ("gpt2", {"heads": [4]}, "head 4 is out of range; there are 4 heads"),
        ("gpt2", {"heads": []}, "heads is empty"),
        ("gpt2", {"layers": ["0"]}, "layers must be integers"),
        ("gpt2", {"stack": "cross"}, "causal model: its attention stack is 'decoder'"),
        ("gpt2", {"stack": "encoder"}, "stack='encoder' exists only in encoder-decoder"),
        ("bert", {"stack": "decoder"}, "masked model: its attention stack is 'encoder'"),
        ("gpt2", {"stack": "sideways"}, "choose one of"),
        ("gpt2", {"dtype": "int8"}, "choose one of"),
        ("t5", {"stack": "cross"}, "needs a decoder sequence"),
    ],
)
def test_bad_arguments_fail_before_any_forward(tiny_lm, family, kwargs, message) -> None:
    lm = tiny_lm(family)
    calls, handle = _count_forwards(lm.model)
    try:
        with pytest.raises(ec.EccoError, match=message):
            ec.attention(lm, TEXT, **kwargs)
        with pytest.raises(ec.EccoError):
            ec.attention(lm, [TEXT, TEXT], **kwargs)
    finally:
        handle.remove()
    assert calls == [0]


def test_records_from_another_model_fail_before_any_forward(tiny_lm) -> None:
    gpt2, t5, bert = tiny_lm("gpt2"), tiny_lm("t5"), tiny_lm("bert")
    gen = ec.generate(gpt2, TEXT, max_new_tokens=2, min_new_tokens=2)
    big = ec.Generation(**{**_fields(gen), "token_ids": gen.token_ids + 10_000})
    masked = ec.predict_masked(bert, "paris is the [MASK] of france.")
    cases: list[tuple[ec.LM, Any, str]] = [
        (t5, gen, "record comes from a causal model but .* is encoder-decoder"),
        (gpt2, big, "the record comes from another model"),
        (gpt2, masked, "a MaskedPredictions record needs a masked LM"),
    ]
    for lm, record, message in cases:
        calls, handle = _count_forwards(lm.model)
        try:
            with pytest.raises(ec.InvalidArgumentError, match=message):
                ec.attention(lm, record)
            with pytest.raises(ec.InvalidArgumentError, match=message):
                ec.attribute(lm, record, "attention_rollout")
        finally:
            handle.remove()
        assert calls == [0]
    with pytest.raises(ec.InvalidTypeError, match="expected a text"):
        ec.attention(gpt2, 42)  # type: ignore[call-overload]


def _fields(record: Any) -> dict[str, Any]:
    import attrs

    return {f.name: getattr(record, f.name) for f in attrs.fields(type(record))}


# --- rollout against numpy matrix products on the eager reference's attentions -------------


def _hand_rollout(layers: np.ndarray) -> np.ndarray:
    """[L, H, n, n] -> [n, n], written out step by step."""
    n = layers.shape[-1]
    result = np.identity(n)
    for layer in layers.astype(np.float64):
        mean = layer.sum(axis=0) / layer.shape[0]
        mixed = (mean + np.identity(n)) / 2
        mixed = mixed / mixed.sum(axis=1)[:, None]
        result = np.matmul(mixed, result)
    return result


@pytest.mark.parametrize("family", FAMILIES)
def test_rollout_and_last_layer_by_hand(tiny_lm, tiny_path, family: str) -> None:
    lm = tiny_lm(family)
    source = _source(lm)
    ref = _reference_attentions(_eager_copy(tiny_path, family), source)
    roll = ec.attribute(lm, source, "attention_rollout")
    last = ec.attribute(lm, source, "attention_last_layer")
    n = len(source.tokens)
    if isinstance(source, ec.MaskedPredictions):
        rows = source.positions.tolist()
        positions = rows
    else:
        positions = list(range(source.n_input_tokens, n))
        rows = [p - 1 for p in positions]
    expected_roll = np.zeros((len(rows), n))
    expected_last = np.zeros((len(rows), n))
    if "cross" in ref:
        n_enc = source.n_encoder_tokens
        enc = _hand_rollout(ref["encoder"])
        n_dec = n - n_enc
        to_enc, to_dec = np.zeros((n_dec, n_enc)), np.identity(n_dec)
        for self_layer, cross_layer in zip(ref["decoder"], ref["cross"], strict=True):
            step = _hand_rollout(self_layer[None])
            to_enc, to_dec = step @ to_enc, step @ to_dec
            to_enc = (to_enc + cross_layer.astype(np.float64).mean(0) @ enc) / 2
            to_dec = to_dec / 2
        local = [r - n_enc for r in rows]
        expected_roll[:, :n_enc], expected_roll[:, n_enc:] = to_enc[local], to_dec[local]
        expected_last[:, :n_enc] = ref["cross"][-1].mean(0)[local]
    else:
        (weights,) = ref.values()
        expected_roll[:] = _hand_rollout(weights)[rows]
        expected_last[:] = weights[-1].mean(0)[rows]
    np.testing.assert_allclose(roll.scores, expected_roll, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(last.scores, expected_last, rtol=1e-4, atol=1e-6)
    for rec in (roll, last):
        assert rec.target_positions.tolist() == positions
        np.testing.assert_allclose(rec.scores.sum(axis=1), 1.0, atol=1e-5)
        if isinstance(source, ec.Generation):
            for s, p in enumerate(positions):
                assert not rec.scores[s, p:].any()  # zero beyond each step's prefix
        assert ec.load_record(rec.to_json()) == rec
    # target values: the probability of each explained token, from the eager copy's logits
    ids = torch.tensor(source.token_ids)[None]
    with torch.no_grad():
        if "cross" in ref:
            n_enc = source.n_encoder_tokens
            logits = _eager_copy(tiny_path, family)(
                input_ids=ids[:, :n_enc], decoder_input_ids=ids[:, n_enc:]
            ).logits[0, [r - n_enc for r in rows]]
        else:
            logits = _eager_copy(tiny_path, family)(input_ids=ids).logits[0, rows]
    probs = torch.softmax(logits, -1)[torch.arange(len(rows)), torch.tensor(roll.target_ids)]
    np.testing.assert_allclose(roll.target_values, probs.numpy(), rtol=1e-4, atol=1e-7)


def test_rollout_of_a_classification_is_refused(tiny_lm) -> None:
    lm = tiny_lm("bert_classifier")
    rec = ec.classify(lm, "the tower is tall")
    with pytest.raises(ec.InvalidArgumentError, match="not a Classification"):
        ec.attribute(lm, rec, "attention_rollout")
    att = ec.attention(lm, rec)
    assert att.stack == "encoder" and att.weights.shape[2] == len(rec.tokens)


@pytest.mark.parametrize("family", ["llama", "bart"])
def test_bfloat16_model_matches_its_eager_copy(tiny_path, family: str) -> None:
    """Weights rounded to bfloat16 have rows summing to 1 only within ~2e-3: found anyway, and
    renormalised."""
    import transformers

    folder = tiny_path(family)
    lm = ec.load(str(folder), dtype=torch.bfloat16)
    source = _source(lm)
    auto = transformers.AutoModelForSeq2SeqLM if family == "bart" else None
    ref = (auto or transformers.AutoModelForCausalLM).from_pretrained(
        folder, dtype=torch.bfloat16, attn_implementation="eager"
    )
    expected = _reference_attentions(ref.eval(), source)
    for stack, reference in expected.items():
        att = ec.attention(lm, source, stack=stack)
        np.testing.assert_allclose(att.weights, reference.astype(np.float32), atol=4e-3)
        np.testing.assert_allclose(att.weights.sum(-1), 1.0, atol=1e-5)
    rollout = ec.attribute(lm, source, "attention_rollout")
    np.testing.assert_allclose(rollout.scores.sum(-1), 1.0, atol=1e-5)


def test_attention_methods_in_the_registry_and_their_options(tiny_lm) -> None:
    """Listed and reachable by alias; options attention cannot honour are refused before any
    forward pass, options it does not use change nothing."""
    lm = tiny_lm("gpt2")
    gen = ec.generate(lm, TEXT, max_new_tokens=3, min_new_tokens=3)
    assert {"attention_rollout", "attention_last_layer"} <= set(ec.list_methods())
    roll = ec.attribute(lm, gen, "attention_rollout")
    assert (roll.method, roll.baseline, roll.target) == ("attention_rollout", "none", "probability")
    assert roll.provenance.params["baseline"] == "none"
    np.testing.assert_array_equal(ec.attribute(lm, gen, "rollout").scores, roll.scores)
    unused = ec.attribute(
        lm, gen, "attention_rollout", n_steps=3, batch_size=1, n_samples=2, seed=7
    )
    np.testing.assert_array_equal(unused.scores, roll.scores)
    for aggregation in ("l1", "sum"):  # rows are non-negative and sum to 1 already
        other = ec.attribute(lm, gen, "attention_rollout", aggregation=aggregation)
        np.testing.assert_allclose(other.scores, roll.scores, rtol=1e-6)
    hidden = lm.model.get_input_embeddings().weight.shape[1]
    refused: list[tuple[dict[str, Any], str]] = [
        ({"target": "logit"}, "target='logit' would have no effect"),
        ({"foil": " the"}, "foil=' the' would have no effect"),
        ({"baseline": "pad"}, "a baseline would have no effect"),
        ({"baseline": torch.zeros(hidden)}, "a baseline would have no effect"),
        ({"aggregation": "none"}, "scores whole tokens"),
    ]
    calls, handle = _count_forwards(lm.model)
    try:
        for method in ("attention_rollout", "attention_last_layer"):
            for kwargs, message in refused:
                with pytest.raises(ec.InvalidArgumentError, match=message):
                    ec.attribute(lm, gen, method, **kwargs)
    finally:
        handle.remove()
    assert calls == [0]
