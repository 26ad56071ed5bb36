"""Timing and FLOP counting shared by the benchmark scripts (not a test)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

import ecco_core as ec
from ecco_core.attribution.native import prefix_groups


def median_seconds(fn: Callable[[], Any], repeats: int, device: str = "cpu") -> float:
    """Median wall time of ``repeats`` calls after one warm-up call (CUDA synchronized)."""
    fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_gflops(
    device: str = "cpu", size: int = 2048, dtype: torch.dtype = torch.float32
) -> float:
    """Measured rate of a square matmul on ``device``, in GFLOP/s."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    return 2 * size**3 / median_seconds(lambda: a @ b, 5, device) / 1e9


def ig_gflop(lm: ec.LM, gen: ec.Generation, n_steps: int) -> float:
    """FLOPs of batched IG as ecco-core runs it: per interpolation point, each prefix group
    (see ``ecco_core.attribution.native.prefix_groups``) costs one forward pass over its rows
    plus one input-gradient backward pass (about one forward) per step; the head runs at the
    predicting rows, forward and backward."""
    blocks = sum(
        p.numel() for path in lm.spec.blocks for p in lm.model.get_submodule(path).parameters()
    )
    visible = list(range(gen.n_input_tokens, gen.n_tokens))
    row_passes = sum(rows * (1 + len(steps)) for rows, steps in prefix_groups(visible))
    body = 2 * blocks * row_passes * n_steps
    head = 2 * 2 * lm.spec.hidden_size * lm.spec.vocab_size * gen.n_generated * n_steps
    return (body + head) / 1e9
