"""Independent computations for checking ecco-core on the tiny models.

Written per family from each architecture's definition, on purpose not through ecco-core's
generic machinery: hidden states come from ``output_hidden_states``, heads are applied by hand.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

FINAL_NORM = {
    "gpt2": "transformer.ln_f",
    "llama": "model.norm",
    "gpt_neox": "gpt_neox.final_layer_norm",
    "opt": "model.decoder.final_layer_norm",
    "bloom": "transformer.ln_f",
    "qwen2": "model.norm",
    "t5": "decoder.final_layer_norm",
    "bert": None,
    "roberta": None,
    "distilbert": None,
    "bart": None,
}


def head(family: str, model: Any, h: torch.Tensor) -> torch.Tensor:
    """Logits of the LM head of ``family`` applied to final hidden states ``h`` [..., d]."""
    if family == "bert":
        return model.cls(h)
    if family == "roberta":
        return model.lm_head(h)
    if family == "distilbert":
        x = model.vocab_layer_norm(F.gelu(model.vocab_transform(h)))
        return model.vocab_projector(x)
    if family == "t5":
        return model.lm_head(h * model.config.d_model**-0.5)
    if family == "bart":
        return model.lm_head(h) + model.final_logits_bias
    return model.lm_head(h)


def lens(
    family: str, model: Any, ids: torch.Tensor, norm: str, decoder_ids: Any = None
) -> torch.Tensor:
    """[n_layers, seq, vocab] logit-lens logits from output_hidden_states."""
    kwargs = {"decoder_input_ids": decoder_ids} if decoder_ids is not None else {}
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True, **kwargs)
        states = out.decoder_hidden_states if decoder_ids is not None else out.hidden_states
        rows = []
        norm_path = FINAL_NORM[family]
        final = model.get_submodule(norm_path) if norm_path else (lambda x: x)
        n = len(states) - 1
        for layer in range(1, n + 1):
            h = states[layer][0]
            if layer == n:
                # hidden_states[-1] is already normed for these families: check that claim too.
                rows.append(head(family, model, h))
                continue
            rows.append(head(family, model, final(h) if norm == "final" else h))
        result = torch.stack(rows)
        torch.testing.assert_close(result[-1], out.logits[0], rtol=1e-4, atol=1e-4)
        return result


# Per family: (path of the first FFN linear inside block i, function from its output (and the
# gate's, for gated MLPs) to the neuron activations), written from each architecture.
def ffn_reference(family: str, model: Any, i: int) -> tuple[list[str], Any]:
    act = F.gelu
    if family == "gpt2":
        return [f"transformer.h.{i}.mlp.c_fc"], lambda h: F.gelu(h[0], approximate="tanh")
    if family in ("llama", "qwen2"):
        base = f"model.layers.{i}.mlp"
        return [f"{base}.gate_proj", f"{base}.up_proj"], lambda h: F.silu(h[0]) * h[1]
    if family == "gpt_neox":
        return [f"gpt_neox.layers.{i}.mlp.dense_h_to_4h"], lambda h: act(h[0])
    if family == "opt":
        return [f"model.decoder.layers.{i}.fc1"], lambda h: F.relu(h[0])
    if family == "bloom":
        return [f"transformer.h.{i}.mlp.dense_h_to_4h"], lambda h: F.gelu(h[0], approximate="tanh")
    if family in ("bert", "roberta"):
        return [f"{family}.encoder.layer.{i}.intermediate.dense"], lambda h: act(h[0])
    if family == "distilbert":
        return [f"distilbert.transformer.layer.{i}.ffn.lin1"], lambda h: act(h[0])
    if family == "t5":
        return [f"encoder.block.{i}.layer.1.DenseReluDense.wi"], lambda h: F.relu(h[0])
    if family == "bart":
        return [f"model.encoder.layers.{i}.fc1"], lambda h: act(h[0])
    raise KeyError(family)
