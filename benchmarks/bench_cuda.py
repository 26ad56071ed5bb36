"""IG speed on CUDA: a random Llama with SmolLM2-1.7B shapes, 32 new tokens, fp32/tf32/bf16.

Needs only torch, transformers, tokenizers and ecco_core (no model download, no captum): the
tokenizer is a synthetic word-level vocabulary of the same size, so the script runs as is on
a GPU machine that has no network. Each figure is the median of three runs after a warm-up and
is printed with the card's name. Targets on an H200: fp32 < 4 s, bf16 < 0.8 s (Ecco 7.7 s,
inseq 8.5 s).

Usage: PYTHONPATH=. python benchmarks/bench_cuda.py (also run by bench.py when CUDA is
present). On a lent GPU machine, one call does the whole device check:
PYTHONPATH=. python3 benchmarks/bench_cuda.py && python3 -m pytest -q -p no:cacheprovider tests/gpu
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

import torch
from measure import ig_gflop, matmul_gflops, median_seconds

import ecco_core as ec

VOCAB = 49152
PROMPT_TOKENS = 9
NEW_TOKENS = 32


def word_tokenizer(vocab_size: int) -> Any:
    """A word-level tokenizer over the words ``t0`` .. ``t{vocab_size - 1}``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {f"t{i}": i for i in range(vocab_size)}
    tok = Tokenizer(models.WordLevel(words, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="t0", eos_token="t1", pad_token="t2"
    )


def llama_17b_shaped(device: str, layers: int = 24) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=layers,
        num_attention_heads=32,
        num_key_value_heads=32,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config).to(device).eval()


def run(device: str = "cuda", layers: int = 24) -> None:
    lm = ec.load(llama_17b_shaped(device, layers), word_tokenizer(VOCAB))
    prompt = " ".join(f"t{100 + 7 * i}" for i in range(PROMPT_TOKENS))
    gen = ec.generate(lm, prompt, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS)
    card = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    rates = {"fp32": matmul_gflops(device, 8192) / 1e3}
    if device == "cuda":
        rates["bf16"] = matmul_gflops(device, 8192, torch.bfloat16) / 1e3
    flops = ig_gflop(lm, gen, 50) / 1e3
    print(f"[{card}] matmul rates (TFLOP/s): {rates}; IG work {flops:.1f} TFLOP")
    targets = {"fp32": "< 4 s", "tf32": "-", "bf16": "< 0.8 s"}
    for precision in ("fp32", "tf32", "bf16") if device == "cuda" else ("fp32",):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            t = median_seconds(
                lambda p=precision: ec.attribute(lm, gen, precision=p, progress=False), 3, device
            )
        for message in {str(w.message) for w in caught if "performance drop" in str(w.message)}:
            print(f"[{card}] {precision}: batched products fell back to a loop: {message}")
        res = ec.attribute(lm, gen, precision=precision, progress=False)
        rate = rates["bf16" if precision == "bf16" else "fp32"]
        print(
            f"[{card}] IG-50, 1.7B-shaped Llama ({layers} layers), {NEW_TOKENS} tokens, "
            f"{precision}: {t:.2f} s, {flops / t:.1f} TFLOP/s ({flops / t / rate:.2f} of the "
            f"{'bf16' if precision == 'bf16' else 'fp32'} matmul rate), deviation from fp32 "
            f"{res.precision_deviation:.2e}, peak memory "
            f"{torch.cuda.max_memory_allocated() / 2**30 if device == 'cuda' else 0:.1f} GiB "
            f"(target {targets[precision]}; Ecco 7.7 s, inseq 8.5 s on an H200)"
        )


if __name__ == "__main__":
    if not torch.cuda.is_available():
        print("no CUDA device: the 1.7B-shaped GPU benchmark was not run")
        sys.exit(0)
    run()
