"""Corpus runner throughput and memory, printed as figures (not a timed test).

Task: the first 256 prompts of data/factual_prompts.jsonl, 4 greedy new tokens + rankings
(norm="final") on the embedded SmolLM2-135M-Instruct, fp32, 2 CPU threads. Prints:

- prompts/s of the corpus runner (local engine, batches of ``--batch-size``, Parquet parts
  written) and of a plain loop of one-prompt calls (``ec.generate`` then ``ec.rankings``),
  measured in the same run, after loading the model once and one warm-up prompt;
- peak RSS of a whole corpus run (model load included) on 256 and on 1,024 prompts, each in
  a fresh subprocess, and their ratio (the runner streams: the target is within 10%).

The machines are shared: compare figures measured in the same run, not across runs.

Usage: python benchmarks/bench_corpus.py [--prompts 256] [--big 1024] [--batch-size 16]
                                         [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from ecco_adapters.corpus import BatchOptions, RunConfig

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "factual_prompts.jsonl"
NEW_TOKENS = 4


def write_prompts(path: Path, n: int) -> list[str]:
    """The first ``n`` bundled prompts (cycled when more are asked), as a .jsonl file."""
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines()]
    texts = [rows[i % len(rows)]["text"] for i in range(n)]
    with path.open("w", encoding="utf-8") as handle:
        for i, text in enumerate(texts):
            handle.write(json.dumps({"id": f"p{i}", "text": text}) + "\n")
    return texts


def config(data: Path, out: Path, batch_size: int) -> RunConfig:
    return RunConfig(
        data=data,
        out=out,
        id_column="id",
        batch_size=batch_size,
        options=BatchOptions(analyses=("generate", "rankings"), max_new_tokens=NEW_TOKENS),
    )


def child(n: int, batch_size: int, threads: int) -> None:
    """One whole run on ``n`` prompts; prints this process's peak RSS in MiB."""
    torch.set_num_threads(threads)
    from ecco_adapters.corpus import run_corpus

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "prompts.jsonl"
        write_prompts(data, n)
        run_corpus(config(data, Path(tmp) / "out", batch_size))
    print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def peak_rss(n: int, batch_size: int, threads: int) -> float:
    command = [sys.executable, __file__, "--child", str(n), "--batch-size", str(batch_size)]
    command += ["--threads", str(threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return float(json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_mib"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--big", type=int, default=1024, help="0 skips the memory figures")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.batch_size, args.threads)
        return
    torch.set_num_threads(args.threads)
    import ecco_core as ec
    from ecco_adapters.corpus import run_corpus

    lm = ec.load()
    print(f"model: {lm.name}, fp32, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "prompts.jsonl"
        texts = write_prompts(data, args.prompts)
        warm = ec.generate(lm, texts[0], max_new_tokens=NEW_TOKENS)
        ec.rankings(lm, warm)  # type: ignore[arg-type]

        start = time.perf_counter()
        for text in texts:
            gen = ec.generate(lm, text, max_new_tokens=NEW_TOKENS)
            ec.rankings(lm, gen)  # type: ignore[arg-type]
        loop = len(texts) / (time.perf_counter() - start)

        start = time.perf_counter()
        run_corpus(config(data, Path(tmp) / "out", args.batch_size), lm=lm)
        runner = len(texts) / (time.perf_counter() - start)
    print(f"{args.prompts} prompts, generate {NEW_TOKENS} tokens + rankings:")
    print(f"  plain loop of one-prompt calls: {loop:.2f} prompts/s")
    print(f"  corpus runner (batch {args.batch_size}):   {runner:.2f} prompts/s")
    print(f"  runner / loop: {runner / loop:.2f}x (target >= 3x)")

    if not args.big:
        return
    small = peak_rss(args.prompts, args.batch_size, args.threads)
    big = peak_rss(args.big, args.batch_size, args.threads)
    print("peak RSS of a whole run (subprocess each, model load included):")
    print(f"  {args.prompts} prompts: {small:.0f} MiB")
    print(f"  {args.big} prompts: {big:.0f} MiB")
    print(f"  ratio: {big / small:.3f} (target <= 1.10)")


if __name__ == "__main__":
    main()
