"""Speed of ecco-core on the standard task, printed as figures (not a timed test).

Task: SmolLM2-135M-Instruct (embedded default), prompt "The Eiffel Tower is in the city of",
8 greedy new tokens, fp32, 2 CPU threads. Each figure is the median of several runs after one
warm-up run; compare ratios measured in the same run, as the machines are shared and noisy.

Usage: python benchmarks/bench.py [--repeats N] [--threads N]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import bench_cuda
import torch
from measure import ig_gflop, matmul_gflops, median_seconds

import ecco_core as ec

PROMPT = "The Eiffel Tower is in the city of"
NEW_TOKENS = 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    lm = ec.load()
    print(f"load default model: {time.perf_counter() - start:.2f} s ({lm.name})")
    enc = lm.tokenizer(PROMPT, return_tensors="pt")
    model: Any = lm.model

    def plain_generate() -> None:
        with torch.inference_mode():
            model.generate(
                **enc,
                max_new_tokens=NEW_TOKENS,
                do_sample=False,
                pad_token_id=lm.tokenizer.pad_token_id or lm.tokenizer.eos_token_id,
            )

    gen = ec.generate(lm, PROMPT, max_new_tokens=NEW_TOKENS)
    positions = list(range(gen.n_input_tokens, gen.n_tokens))

    def lens_all() -> None:
        # One scope per call: the forward pass is measured too, then shared by both calls.
        with ec.lens_cache():
            ec.rankings(lm, gen)
            ec.layer_predictions(lm, gen, positions)

    t_plain = median_seconds(plain_generate, args.repeats)
    t_ec = median_seconds(lambda: ec.generate(lm, PROMPT, max_new_tokens=NEW_TOKENS), args.repeats)

    t_rank = median_seconds(lambda: ec.rankings(lm, gen), args.repeats)
    t_lens = median_seconds(lens_all, args.repeats)
    t_acts = median_seconds(lambda: ec.activations(lm, gen), args.repeats)
    acts = ec.activations(lm, gen)
    t_nmf_only = median_seconds(lambda: ec.factorize(acts, n_components=10), args.repeats)
    t_neuron = median_seconds(
        lambda: ec.factorize(ec.activations(lm, gen), n_components=10, lm=lm), args.repeats
    )
    t_ig = median_seconds(lambda: ec.attribute(lm, gen, progress=False), max(1, args.repeats // 3))
    attr = ec.attribute(lm, gen, progress=False)
    rate = matmul_gflops()
    flops = ig_gflop(lm, gen, 50)
    rows = [
        (f"model.generate (plain, {NEW_TOKENS} tokens)", t_plain, ""),
        (
            "ec.generate with top-10 predictions",
            t_ec,
            f"ratio {t_ec / t_plain:.2f}x (target <= 1.2x)",
        ),
        ("ec.rankings", t_rank, "Ecco: 3400 ms"),
        (f"rankings + layer_predictions at {len(positions)} positions", t_lens, "target < 300 ms"),
        (f"ec.activations (30 layers x 1536 neurons x {gen.n_tokens} positions)", t_acts, ""),
        (
            "ec.factorize (NMF, 10 components, all 30 layers)",
            t_nmf_only,
            "Ecco: 700-800 ms for NMF alone",
        ),
        ("activations + NMF + promoted tokens", t_neuron, "target < 1000 ms"),
        (
            "ec.attribute, integrated gradients, 50 steps, fp32",
            t_ig,
            f"{flops:.0f} GFLOP at {flops / t_ig:.0f} GFLOP/s = {flops / t_ig / rate:.2f} of the "
            f"fp32 matmul rate ({rate:.0f} GFLOP/s); target < 9 s, Ecco 23.1 s, inseq 11.7 s",
        ),
    ]
    print(f"generated: {gen.text!r}")
    for name, seconds, note in rows:
        print(f"{name:<62} {seconds * 1000:8.1f} ms  {note}")
    worst = float(abs(attr.convergence_delta).max())
    print(
        f"IG completeness delta, largest over the {gen.n_generated} tokens: {worst:.3f} "
        "(not converged at 50 steps with a zero baseline; shown, not hidden)"
    )
    if torch.cuda.is_available():
        bench_cuda.run()
    else:
        print("no CUDA device: the 1.7B-shaped GPU variant was not run")


if __name__ == "__main__":
    main()
