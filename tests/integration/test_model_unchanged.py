"""ecco-core leaves the model exactly as it found it, also when a call fails."""

from __future__ import annotations

import pytest
import torch

import ecco_core as ec


def _state(model: torch.nn.Module) -> tuple:
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        [
            (
                len(m._forward_hooks),
                len(m._forward_pre_hooks),
                len(m._backward_hooks),
                len(m._backward_pre_hooks),
            )
            for m in model.modules()
        ],
    )


def _assert_same(before: tuple, after: tuple) -> None:
    assert before[0].keys() == after[0].keys()
    for key in before[0]:
        assert torch.equal(before[0][key], after[0][key]), key
    assert before[1:] == after[1:]


@pytest.mark.filterwarnings("ignore::ecco_core.errors.ConvergenceWarning")  # IG, few steps
@pytest.mark.parametrize("family", ["gpt2", "t5", "bert"])
def test_calls_leave_model_unchanged(tiny_lm, family: str) -> None:
    lm = tiny_lm(family)
    model = lm.model
    model.train()  # a user's model in training mode must stay in training mode
    model.get_submodule(lm.spec.blocks[0]).requires_grad_(False)
    try:
        before = _state(model)
        if family == "bert":
            rec = ec.predict_masked(lm, f"a {lm.tokenizer.mask_token} b")
            ec.layer_predictions(lm, rec, int(rec.positions[0]))
        else:
            gen = ec.generate(lm, "The Eiffel Tower", max_new_tokens=3, min_new_tokens=3)
            again = ec.generate(lm, "The Eiffel Tower", max_new_tokens=3, min_new_tokens=3)
            assert gen.token_ids.tolist() == again.token_ids.tolist()  # eval mode: no dropout
            ec.rankings(lm, gen)
            ec.rankings_watch(lm, gen, [1, 2], gen.n_input_tokens)
            for method in ("ig", "deep_lift", "guided_backprop", "lime"):
                ec.attribute(lm, gen, method, n_steps=4, n_samples=4, progress=False)
            ec.factorize(ec.activations(lm, gen), n_components=2, lm=lm)
        _assert_same(before, _state(model))
    finally:
        model.eval()
        model.requires_grad_(True)


def test_hooks_removed_when_forward_raises(tiny_lm, monkeypatch) -> None:
    lm = tiny_lm("llama")
    gen = ec.generate(lm, "The Eiffel Tower", max_new_tokens=2, min_new_tokens=2)
    before = _state(lm.model)
    block = lm.model.get_submodule(lm.spec.blocks[1])

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    handle = block.register_forward_pre_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            ec.rankings(lm, gen)
    finally:
        handle.remove()
    _assert_same(before, _state(lm.model))


def test_attribution_error_leaves_model_unchanged(tiny_lm) -> None:
    lm = tiny_lm("gpt2")
    gen = ec.generate(lm, "The Eiffel Tower", max_new_tokens=2, min_new_tokens=2)
    lm.model.get_submodule(lm.spec.blocks[0]).requires_grad_(False)
    try:
        before = _state(lm.model)
        block = lm.model.get_submodule(lm.spec.blocks[1])
        handle = block.register_forward_hook(lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))
        try:
            for method in ("ig", "deep_lift"):
                with pytest.raises(RuntimeError, match="boom"):
                    ec.attribute(lm, gen, method, n_steps=4, progress=False)
        finally:
            handle.remove()
        _assert_same(before, _state(lm.model))
    finally:
        lm.model.requires_grad_(True)
