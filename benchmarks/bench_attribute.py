"""Batched attributions of a list of records against one call per record, printed as figures.

Task: the first ``--prompts`` prompts of data/factual_prompts.jsonl (default 16), 4 greedy new
tokens each on the embedded SmolLM2-135M-Instruct, fp32, ``--threads`` CPU threads (default
2). For saliency, grad x input and integrated gradients (``--n-steps``, default 16) it times a
loop of one-record calls and one call with the whole list (padded batches), in the same run,
and prints records/s, their ratio and the largest difference between the two results' scores
(they should agree to float rounding).

The machines are shared: compare figures measured in the same run, not across runs.

Usage: python benchmarks/bench_attribute.py [--prompts 16] [--n-steps 16] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "factual_prompts.jsonl"
METHODS = ("saliency", "grad_x_input", "integrated_gradients")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--n-steps", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import ecco_core as ec

    warnings.simplefilter("ignore", ec.ConvergenceWarning)
    lm = ec.load()
    lines = DATA.read_text(encoding="utf-8").splitlines()[: args.prompts]
    texts = [json.loads(line)["text"] for line in lines]
    gens = ec.generate(lm, texts, max_new_tokens=4, min_new_tokens=4)
    widths = [len(g.token_ids) for g in gens]
    print(f"model: {lm.name}, fp32, {torch.get_num_threads()} threads")
    print(f"{len(gens)} records of {min(widths)}-{max(widths)} tokens, 4 explained tokens each")
    ec.attribute(lm, gens[0], "saliency", progress=False)  # warm-up
    for method in METHODS:
        options = {"n_steps": args.n_steps, "progress": False}
        start = time.perf_counter()
        alone = [ec.attribute(lm, g, method, **options) for g in gens]
        loop = time.perf_counter() - start
        start = time.perf_counter()
        batched = ec.attribute(lm, gens, method, **options)
        together = time.perf_counter() - start
        diff = max(
            float(np.abs(a.scores - b.scores).max()) for a, b in zip(alone, batched, strict=True)
        )
        label = method if method != "integrated_gradients" else f"{method} ({args.n_steps} steps)"
        print(f"{label}:")
        print(f"  one call per record: {len(gens) / loop:.2f} records/s ({loop:.1f} s)")
        print(f"  list, padded batches: {len(gens) / together:.2f} records/s ({together:.1f} s)")
        print(f"  batched / loop: {loop / together:.2f}x; largest score difference {diff:.1e}")


if __name__ == "__main__":
    main()
