from __future__ import annotations

import time

import pytest
import torch

import ecco_core as ec


def test_load_folder_and_loaded_model(tiny_path, tiny_lm) -> None:
    lm = ec.load(tiny_path("qwen2"))
    assert lm.spec.kind == "causal" and lm.name.endswith("qwen2")
    again = ec.load(lm.model, lm.tokenizer)
    assert again.model is lm.model and again.spec == lm.spec
    with_path_tokenizer = ec.load(lm.model, str(tiny_path("qwen2")))
    assert with_path_tokenizer.tokenizer.vocab_size == lm.tokenizer.vocab_size
    with pytest.raises(AttributeError):
        lm.model = None  # type: ignore[misc, assignment]


def test_spec_overrides_through_load(tiny_path) -> None:
    lm = ec.load(tiny_path("gpt2"), spec={"final_norm": None})
    assert lm.spec.final_norm is None


def test_bad_sources_fail_fast_and_clearly(tmp_path, tiny_lm) -> None:
    start = time.monotonic()
    with pytest.raises(ec.ModelLoadError, match="not a local folder"):
        ec.load("no-such-org/no-such-model-xyz")
    assert time.monotonic() - start < 20
    with pytest.raises(ec.ModelLoadError, match="holds no model"):
        ec.load(tmp_path)
    bare = tmp_path / "no-tokenizer"
    tiny_lm("gpt2").model.save_pretrained(bare)
    start = time.monotonic()
    with pytest.raises(ec.ModelLoadError, match=r"tokenizer .* is empty"):
        ec.load(bare)
    assert time.monotonic() - start < 20
    with pytest.raises(ec.InvalidArgumentError, match="needs its tokenizer"):
        ec.load(tiny_lm("gpt2").model)
    with pytest.raises(ec.InvalidArgumentError, match="already-loaded"):
        ec.load(tiny_lm("gpt2").model, tiny_lm("gpt2").tokenizer, device="cpu")
    with pytest.raises(ec.InvalidArgumentError, match="not a torch device"):
        ec.load(tmp_path, device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ec.InvalidArgumentError, match="CUDA is not available"):
            ec.load(tmp_path, device="cuda")
    with pytest.raises(ec.InvalidTypeError, match="source must be"):
        ec.load(3.5)  # type: ignore[arg-type]
