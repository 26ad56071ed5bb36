from __future__ import annotations

from typing import cast

import numpy as np
import pytest
import torch
from sklearn.decomposition import NMF

import ecco_core as ec
from ecco_core.testing import FAMILIES

from . import reference

TEXT = "She said that he would come back, and they were happy; it was late, but we waited."


@pytest.mark.parametrize("family", FAMILIES)
def test_activations_match_ffn_reference(tiny_lm, family: str) -> None:
    lm = tiny_lm(family)
    acts = ec.activations(lm, TEXT)
    n_positions = len(lm.tokenizer(TEXT)["input_ids"])
    assert acts.values.shape[0] == 2 and acts.values.shape[2] == n_positions
    assert acts.stack == (
        "decoder" if family in ("gpt2", "llama", "gpt_neox", "opt", "bloom", "qwen2") else "encoder"
    )
    for i in range(2):
        paths, activation = reference.ffn_reference(family, lm.model, i)
        outputs: list[torch.Tensor] = []
        handles = [
            lm.model.get_submodule(p).register_forward_hook(
                lambda m, a, o, store=outputs: store.append(o)
            )
            for p in paths
        ]
        try:
            with torch.no_grad():
                ids = torch.tensor(acts.token_ids)[None]
                if family in ("t5", "bart"):
                    lm.model.get_encoder()(input_ids=ids)
                else:
                    lm.model(input_ids=ids)
        finally:
            for h in handles:
                h.remove()
        out = activation(outputs)
        expected = out.reshape(-1, out.shape[-1]).T.numpy()  # [neurons, positions]
        np.testing.assert_allclose(acts.values[i], expected, rtol=1e-5, atol=1e-5)


def test_layers_selection_generation_and_stacks(tiny_lm) -> None:
    lm = tiny_lm("gpt2")
    gen = ec.generate(lm, "The Eiffel Tower", max_new_tokens=3, min_new_tokens=3)
    full = ec.activations(lm, gen)
    last = ec.activations(lm, gen, layers=[-1], dtype="float16")
    assert full.values.shape[2] == gen.n_tokens and full.n_input_tokens == gen.n_input_tokens
    assert last.layers.tolist() == [1] and last.values.dtype == np.float16
    np.testing.assert_allclose(last.values[0], full.values[1], rtol=1e-2, atol=1e-3)
    assert ec.load_record(last.to_json()) == last
    both = ec.activations(lm, ["one text", "another, longer text"])
    assert isinstance(both, tuple) and both[0].values.shape[2] != both[1].values.shape[2]

    t5 = tiny_lm("t5")
    tgen = ec.generate(t5, "The Eiffel Tower", max_new_tokens=3, min_new_tokens=3)
    dec = ec.activations(t5, tgen)
    enc = ec.activations(t5, tgen, stack="encoder")
    assert dec.stack == "decoder" and dec.values.shape[2] == tgen.n_tokens - tgen.n_encoder_tokens
    assert enc.stack == "encoder" and enc.values.shape[2] == tgen.n_encoder_tokens
    assert enc.layer_labels == ("encoder 0", "encoder 1")
    assert dec.layer_labels == ("decoder 0", "decoder 1")


def test_bad_activation_input(tiny_lm) -> None:
    lm = tiny_lm("llama")
    with pytest.raises(ec.InvalidArgumentError, match="layers is empty"):
        ec.activations(lm, TEXT, layers=[])
    with pytest.raises(ec.InvalidArgumentError, match=r"layer 5 is out of range.*0 to 1"):
        ec.activations(lm, TEXT, layers=[5])
    with pytest.raises(ec.InvalidArgumentError, match="stack"):
        ec.activations(lm, TEXT, stack="encoder")
    with pytest.raises(ec.InvalidArgumentError, match="text is empty"):
        ec.activations(lm, "")
    gen = ec.generate(lm, "The Eiffel Tower", max_new_tokens=2, min_new_tokens=2)
    foreign = cast(
        ec.Generation,
        ec.load_record(
            gen.to_json().replace(f'"data": [{gen.token_ids[0]},', '"data": [999999,', 1)
        ),
    )
    with pytest.raises(ec.InvalidArgumentError, match="another model"):
        ec.activations(lm, foreign)


def test_factorize_equals_sklearn_on_clipped_activations(tiny_lm) -> None:
    lm = tiny_lm("llama")
    acts = ec.activations(lm, TEXT)
    fac = ec.factorize(acts, n_components=4, lm=lm, top_k=5)
    matrix = np.maximum(acts.values.reshape(-1, acts.values.shape[2]).T, 0)  # [positions, neurons]
    model = NMF(4, init="random", random_state=0, max_iter=500)
    w = model.fit_transform(matrix)
    np.testing.assert_allclose(fac.token_factors, w.T, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fac.neuron_factors, model.components_, rtol=1e-4, atol=1e-5)
    assert fac.reconstruction_error == pytest.approx(model.reconstruction_err_, rel=1e-4)
    assert fac.neuron_layers.tolist() == [0] * 64 + [1] * 64
    assert fac.neuron_indices.tolist() == list(range(64)) * 2
    assert fac.promoted_ids.shape == (4, 5)
    assert ec.load_record(fac.to_json()) == fac
    # Promoted tokens: the factor direction through both down projections, then the unembedding.
    direction = sum(
        lm.model.get_submodule(f"model.layers.{i}.mlp.down_proj").weight.detach()
        @ torch.tensor(fac.neuron_factors[0, 64 * i : 64 * (i + 1)])
        for i in range(2)
    )
    scores = lm.model.lm_head.weight.detach() @ direction
    assert fac.promoted_ids[0].tolist() == torch.topk(scores, 5).indices.tolist()


def test_factorize_many_texts_layers_and_minibatch(tiny_lm, tmp_path) -> None:
    lm = tiny_lm("gpt2")
    texts = [TEXT, "Numbers like 1, 2, 3 and 42 appear in text.", "The Eiffel Tower is in Paris."]
    acts = ec.activations(lm, texts)
    shared = ec.factorize(list(acts), n_components=3, layers=[1])
    assert shared.token_factors.shape[1] == sum(a.values.shape[2] for a in acts)
    assert shared.text_index.tolist().count(2) == acts[2].values.shape[2]
    assert set(shared.neuron_layers.tolist()) == {1}
    paths = []
    for i, a in enumerate(acts):
        a.save(str(tmp_path / f"acts{i}.json"))
        paths.append(tmp_path / f"acts{i}.json")
    streamed = ec.factorize(paths, n_components=3, method="minibatch", max_iter=300)
    assert streamed.token_factors.shape == (3, shared.token_factors.shape[1])
    assert streamed.reconstruction_error > 0 and np.isfinite(streamed.reconstruction_error)
    total = np.sqrt(sum(float((np.maximum(a.values, 0) ** 2).sum()) for a in acts))
    assert streamed.reconstruction_error < total  # it explains part of the activations


def test_bad_factorize_input(tiny_lm) -> None:
    lm = tiny_lm("gpt2")
    acts = ec.activations(lm, "short text")
    n = acts.values.shape[2]
    with pytest.raises(ec.InvalidArgumentError, match=f"n_components={n + 1} is out of range"):
        ec.factorize(acts, n_components=n + 1)
    with pytest.raises(ec.InvalidArgumentError, match="were not captured"):
        ec.factorize(acts, 2, layers=[7])
    with pytest.raises(ec.InvalidArgumentError, match="layers is empty"):
        ec.factorize(acts, 2, layers=[])
    nan_values = acts.values.copy()
    nan_values[0, 0, 0] = np.nan
    with pytest.raises(ec.RecordFormatError, match="NaN"):
        ec.Activations(
            values=nan_values,
            layers=acts.layers,
            layer_labels=acts.layer_labels,
            stack="decoder",
            token_ids=acts.token_ids,
            tokens=acts.tokens,
            n_input_tokens=acts.n_input_tokens,
            provenance=acts.provenance,
        )
