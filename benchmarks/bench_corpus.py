"""Corpus runner throughput and memory, printed as figures (not a timed test).

Task: the first 256 prompts of data/factual_prompts.jsonl, 4 greedy new tokens + rankings
(norm="final") on the embedded SmolLM2-135M-Instruct, fp32, 2 CPU threads. Prints:

- prompts/s of the corpus runner (local engine, batches of ``--batch-size``, Parquet parts
  written) and of a plain loop of one-prompt calls (``ec.generate`` then ``ec.rankings``),
  measured in the same run, after loading the model once and one warm-up prompt;
- peak RSS of a whole corpus run (model load included) on 256 and on 1,024 prompts, each in
  a fresh subprocess, and their ratio (the runner streams: the target is within 10%).

The machines are shared: compare figures measured in the same run, not across runs.

``--ray`` adds the Ray Data engine on the same prompts (a local Ray instance, ``--workers``
actors; Ray start-up included and shown apart) and its ratio to the local engine (target
< 1.5x). ``--nmf N`` runs the neurons analysis (``--nmf-k`` factors streamed into
MiniBatchNMF) on N and on 4N prompts, each in a fresh subprocess, and prints their peak RSS
(target: within 10%). GPU variant (a machine with CUDA, one command)::

    python benchmarks/bench_corpus.py --big 0 --ray --gpus-per-worker 1 --device cuda

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
    add_engine_options(parser)
    args = parser.parse_args()
    if args.nmf_child is not None:
        nmf_child(args.nmf_child, args.batch_size, args.threads, args.nmf_k)
        return
    if args.child is not None:
        child(args.child, args.batch_size, args.threads)
        return
    if args.nmf:
        nmf_memory(args)
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
    if args.ray:
        ray_run(args, runner)

    if not args.big:
        return
    small = peak_rss(args.prompts, args.batch_size, args.threads)
    big = peak_rss(args.big, args.batch_size, args.threads)
    print("peak RSS of a whole run (subprocess each, model load included):")
    print(f"  {args.prompts} prompts: {small:.0f} MiB")
    print(f"  {args.big} prompts: {big:.0f} MiB")
    print(f"  ratio: {big / small:.3f} (target <= 1.10)")


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    """Options of the Ray and NMF figures."""
    parser.add_argument("--ray", action="store_true", help="also time --engine ray")
    parser.add_argument("--workers", type=int, default=2, help="Ray actors (default 2)")
    parser.add_argument("--gpus-per-worker", type=float, default=0.0)
    parser.add_argument("--device", default=None, help="device of the runs (e.g. cuda)")
    parser.add_argument("--nmf", type=int, default=0, help="NMF memory on N and 4N prompts")
    parser.add_argument("--nmf-k", type=int, default=8, help="neuron factors (default 8)")
    parser.add_argument("--nmf-child", type=int, default=None, help=argparse.SUPPRESS)


def ray_run(args: argparse.Namespace, local_rate: float) -> None:
    """Time the same run with --engine ray; print it and its ratio to the local engine."""
    import attrs

    from ecco_adapters.corpus import run_corpus
    from ecco_adapters.corpus.ray_engine import ray_session

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "prompts.jsonl"
        write_prompts(data, args.prompts)
        start = time.perf_counter()
        with ray_session(None):  # started once here, so its start-up is shown apart
            up = time.perf_counter() - start
            ray_config = attrs.evolve(
                config(data, Path(tmp) / "ray", args.batch_size),
                engine="ray",
                workers=args.workers,
                gpus_per_worker=args.gpus_per_worker,
                device=args.device,
            )
            start = time.perf_counter()
            run_corpus(ray_config)
            wall = time.perf_counter() - start
    local_s = args.prompts / local_rate
    print(f"ray engine ({args.workers} workers, {args.gpus_per_worker:g} GPUs each):")
    print(f"  ray.init: {up:.1f} s (not counted below)")
    print(f"  run: {wall:.1f} s = {args.prompts / wall:.2f} prompts/s (actor start-up included)")
    print(f"  ray / local engine time: {wall / local_s:.2f}x (target < 1.5x)")


def nmf_child(n: int, batch_size: int, threads: int, k: int) -> None:
    """One neurons run (streamed NMF + top examples) on ``n`` prompts; prints peak RSS."""
    import attrs

    torch.set_num_threads(threads)
    from ecco_adapters.corpus import run_corpus

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "prompts.jsonl"
        write_prompts(data, n)
        base = config(data, Path(tmp) / "out", batch_size)
        options = attrs.evolve(base.options, analyses=("generate", "neurons"), max_new_tokens=1)
        start = time.perf_counter()
        run_corpus(attrs.evolve(base, options=options, nmf=k))
        wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_rss_mib": peak, "wall_s": wall}))


def nmf_memory(args: argparse.Namespace) -> None:
    """Peak RSS of the neurons analysis on N and 4N prompts (subprocess each)."""
    figures = []
    for n in (args.nmf, 4 * args.nmf):
        command = [sys.executable, __file__, "--nmf-child", str(n), "--nmf-k", str(args.nmf_k)]
        command += ["--batch-size", str(args.batch_size), "--threads", str(args.threads)]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        figures.append(json.loads(done.stdout.strip().splitlines()[-1]))
    (small, big) = figures
    print(f"neurons analysis, {args.nmf_k} factors streamed into MiniBatchNMF (1 new token):")
    for n, f in zip((args.nmf, 4 * args.nmf), figures, strict=True):
        print(f"  {n} prompts: peak RSS {f['peak_rss_mib']:.0f} MiB, {f['wall_s']:.0f} s")
    ratio = big["peak_rss_mib"] / small["peak_rss_mib"]
    print(f"  RSS ratio 4x prompts: {ratio:.3f} (target <= 1.10)")


if __name__ == "__main__":
    main()
