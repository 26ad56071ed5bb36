"""Attention of the real SmolLM2 (SDPA) against an eager copy of the same checkpoint."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import pytest
import torch

import ecco_core as ec
from ecco_core.loading import default_source

pytestmark = pytest.mark.real


def test_smollm2_attention_equals_eager_copy(smollm2: ec.LM) -> None:
    from transformers import AutoModelForCausalLM

    assert cast(Any, smollm2.model).config._attn_implementation == "sdpa"
    gen = ec.generate(smollm2, "Heathrow airport is located in the city of", max_new_tokens=3)
    att = ec.attention(smollm2, gen)
    assert att.weights.shape == (30, 9, gen.n_tokens, gen.n_tokens)
    ref = AutoModelForCausalLM.from_pretrained(default_source(), attn_implementation="eager")
    with torch.no_grad():
        out = ref.eval()(input_ids=torch.tensor(gen.token_ids)[None], output_attentions=True)
    expected = torch.stack([a[0] for a in out.attentions]).numpy()
    np.testing.assert_allclose(att.weights, expected, rtol=1e-4, atol=1e-6)
    assert cast(Any, smollm2.model).config._attn_implementation == "sdpa"
