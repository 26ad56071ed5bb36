from __future__ import annotations

import pytest
import torch
from torch import nn

import ecco_core as ec
from ecco_core.forward import head_logits
from ecco_core.testing import CAUSAL_FAMILIES, ENCODER_DECODER_FAMILIES, FAMILIES, MASKED_FAMILIES

from .reference import FINAL_NORM


@pytest.mark.parametrize("family", FAMILIES)
def test_spec_is_inferred(tiny_lm, family: str) -> None:
    lm = tiny_lm(family)
    spec, model = lm.spec, lm.model
    expected_kind = (
        "causal"
        if family in CAUSAL_FAMILIES
        else "masked"
        if family in MASKED_FAMILIES
        else "encoder-decoder"
    )
    assert spec.kind == expected_kind
    assert spec.n_layers == 2 and len(spec.ffn_out) == 2
    assert spec.final_norm == FINAL_NORM[family]
    assert model.get_submodule(spec.embedding) is model.get_input_embeddings()
    assert spec.vocab_size == model.get_output_embeddings().weight.shape[0]
    for path in spec.ffn_out:
        weight = model.get_submodule(path).weight
        # FFN output projection: intermediate -> hidden (32), whatever the layout.
        assert sorted(weight.shape) == [32, 128 if family == "bloom" else 64]
    if family in ENCODER_DECODER_FAMILIES:
        assert len(spec.encoder_blocks) == 2 and len(spec.encoder_ffn_out) == 2
        assert all("decoder" in b for b in spec.blocks)
        assert all("encoder" in b for b in spec.encoder_blocks)


@pytest.mark.parametrize("family", FAMILIES)
def test_head_logits_match_the_model(tiny_lm, family: str) -> None:
    lm = tiny_lm(family)
    ids = torch.tensor([[5, 9, 14, 20, 33, 41]])
    extra = (
        {"decoder_input_ids": torch.tensor([[0, 7, 8]])}
        if family in ENCODER_DECODER_FAMILIES
        else {}
    )
    with torch.no_grad():
        out = lm.model(input_ids=ids, output_hidden_states=True, **extra)
    last = (out.decoder_hidden_states if extra else out.hidden_states)[-1]
    torch.testing.assert_close(head_logits(lm, last), out.logits, rtol=1e-5, atol=1e-5)


def test_override_and_unknown_field(tiny_lm) -> None:
    model = tiny_lm("llama").model
    spec = ec.infer_spec(model, final_norm=None)
    assert spec.final_norm is None and spec.blocks == ("model.layers.0", "model.layers.1")
    with pytest.raises(ec.InvalidArgumentError, match="unknown spec fields"):
        ec.infer_spec(model, norm="x")
    with pytest.raises(ec.InvalidArgumentError, match="no submodule"):
        ec.infer_spec(model, final_norm="model.nothing")


def test_unsupported_model_names_the_missing_part() -> None:
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.proj = nn.Linear(4, 4)

        def get_input_embeddings(self) -> nn.Module:
            return self.emb

        def get_output_embeddings(self) -> None:
            return None

    with pytest.raises(ec.UnsupportedModelError, match=r"transformer blocks.*blocks="):
        ec.infer_spec(Odd())
