"""The native batched gradient engine: integrated gradients, saliency and grad x input.

The causal mask makes the prediction at position ``t`` depend only on its prefix, so one
forward pass over a prefix serves every generated token inside it with the results of Ecco's
per-prefix runs. Tokens are grouped by prefix so that the backward passes of early tokens skip
the rows only later tokens see (:func:`prefix_groups`). Per group and batch of interpolation
points there is one forward pass; the LM head runs once over the predicting rows only, its
gradients come from one small backward pass, and one batched vector-Jacobian product
(``is_grads_batched``) gives every token's input gradients.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..forward import body_states, head_logits
from .targets import Settings, Task, scores, target_values

ROWS_PER_PASS = 400
VJP_ROWS = 4000


def gauss_legendre(n_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes in [0, 1] and weights (summing to 1) of the ``n_steps``-point rule, float64."""
    nodes, weights = np.polynomial.legendre.leggauss(n_steps)
    return torch.tensor((nodes + 1) / 2), torch.tensor(weights / 2)


def prefix_groups(visible: Sequence[int]) -> list[tuple[int, list[int]]]:
    """Split steps into groups that share one forward pass over a prefix of the inputs.

    ``visible[i]`` is how many input rows step ``i`` sees (non-decreasing). A group ending at
    ``e`` rows with ``k`` steps costs about ``e * (1 + k)`` row passes (one forward, one
    input-gradient backward per step), so the backward passes of early steps skip the rows
    only later steps see. Returns (rows, step indices) per group, minimizing the total by dynamic
    programming over the contiguous splits.
    """
    n = len(visible)
    best = [0.0] + [float("inf")] * n
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j):
            cost = best[i] + visible[j - 1] * (1 + j - i)
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups = []
    j = n
    while j > 0:
        groups.append((visible[j - 1], list(range(cut[j], j))))
        j = cut[j]
    return groups[::-1]


def even_batch(n: int, most: int) -> int:
    """Size of the fewest equal batches of at most ``most`` that cover ``n`` items."""
    return math.ceil(n / math.ceil(n / most))


def gradient_seeds(
    task: Task, x: torch.Tensor, steps: Sequence[int]
) -> tuple[torch.Tensor, list[int], torch.Tensor]:
    """(output, positions, seeds): the gradient of step ``j``'s explained quantity with respect
    to the inputs x [B, n, hidden] is the vector-Jacobian product of ``output`` with a cotangent
    that is ``seeds[:, j]`` at ``output[:, positions[j]]`` and zero elsewhere.

    For LMs whose head is reached through ``head_input``, the output is the head input
    [B, n, d] and seeds [B, len(steps), d] are the head's gradients, all from one backward pass
    over a detached copy of the predicting rows (the head acts on each row alone), so the
    steps' backward passes start at their rows and never enter the head. Otherwise the output
    is the explained quantity [B, len(steps)] itself, with seeds of ones.
    """
    if task.lm.spec.kind in ("classifier", "encoder-decoder"):
        values = target_values(task, x, steps)
        return values, list(range(len(steps))), torch.ones_like(values)
    hidden = body_states(task.lm, {"inputs_embeds": x}, grad=True)
    rows = [task.rows[s] for s in steps]
    picked = hidden[:, rows].detach().requires_grad_(True)
    logits = head_logits(task.lm, picked, grad=True)
    (head_grads,) = torch.autograd.grad(scores(task, logits, steps).sum(), picked)
    return hidden, rows, head_grads


def _weighted_gradients(
    task: Task, point: torch.Tensor, steps: Sequence[int], weights: torch.Tensor, per_vjp: int
) -> torch.Tensor:
    """Sum over the B points of weights [B, 1, 1] x input gradients -> [len(steps), n, hidden].

    point [B, n, hidden] requires grad; ``per_vjp`` steps share one batched vector-Jacobian
    product.
    """
    output, positions, seeds = gradient_seeds(task, point, steps)
    out = torch.zeros((len(steps), *point.shape[1:]), dtype=torch.float32, device=point.device)
    for lo in range(0, len(steps), per_vjp):
        hi = min(lo + per_vjp, len(steps))
        cotangents = torch.zeros((hi - lo, *output.shape), dtype=output.dtype, device=output.device)
        for j in range(lo, hi):
            cotangents[j - lo, :, positions[j]] = seeds[:, j]
        (grads,) = torch.autograd.grad(
            output, point, cotangents, retain_graph=hi < len(steps), is_grads_batched=True
        )
        out[lo:hi] = (weights * grads.float()).sum(dim=1)
    return out


def _path_gradients(
    task: Task,
    name: str,
    base: torch.Tensor,
    nodes: tuple[torch.Tensor, torch.Tensor],
    steps: Sequence[int],
    settings: Settings,
) -> torch.Tensor:
    """Weighted sum of input gradients [len(steps), n_rows, hidden] at the points
    ``base + alpha * (x - base)`` for the (alphas, weights) ``nodes``.

    Steps are grouped by :func:`prefix_groups`; each group runs forward passes over its
    prefix of the inputs for batches of points (``settings.batch_size`` points, by default
    equal batches of at most ``ROWS_PER_PASS`` token rows), each followed by batched
    vector-Jacobian products of at most about ``VJP_ROWS`` token rows (steps x points x
    rows). On CUDA, out of memory halves the points per pass, then the steps per product.
    """
    x = task.embeds
    alphas, weights = nodes
    batch_size = settings.batch_size
    total = torch.zeros((len(steps), *x.shape[1:]), dtype=torch.float32, device=x.device)
    groups = prefix_groups([task.visible[s] for s in steps])
    bar = tqdm(
        total=len(alphas) * len(groups),
        desc=f"{name} ({len(steps)} tokens)",
        disable=settings.hide_progress,
    )
    step_limit = len(steps)
    for end, members in groups:
        start = 0
        while start < len(alphas):
            size = batch_size or even_batch(len(alphas), max(1, ROWS_PER_PASS // end))
            a = alphas[start : start + size].to(x.device, x.dtype)[:, None, None]
            w = weights[start : start + size].to(x.device, torch.float32)[:, None, None]
            most = min(step_limit, max(1, VJP_ROWS // (len(a) * end)))
            per_vjp = even_batch(len(members), most)
            try:
                point = (base + a * (x - base))[:, :end].detach().requires_grad_(True)
                part = _weighted_gradients(task, point, [steps[i] for i in members], w, per_vjp)
            except torch.OutOfMemoryError:
                if x.device.type != "cuda" or (len(a) == 1 and per_vjp == 1):
                    raise
                if len(a) > 1:
                    batch_size = max(1, len(a) // 2)
                else:
                    step_limit = max(1, per_vjp // 2)
                part = None
            if part is None:
                torch.cuda.empty_cache()
                continue
            total[members, :end] += part
            bar.update(len(a))
            start += len(a)
    bar.close()
    return total


def _one_point() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.ones(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)


def integrated_gradients(
    task: Task, base: torch.Tensor, steps: Sequence[int], settings: Settings
) -> torch.Tensor:
    """(x - baseline) x the path integral of gradients (Gauss-Legendre): [len(steps), n, hidden]."""
    nodes = gauss_legendre(settings.n_steps)
    total = _path_gradients(task, "integrated_gradients", base, nodes, steps, settings)
    return total * (task.embeds - base).float()[0]


def saliency(
    task: Task, base: torch.Tensor, steps: Sequence[int], settings: Settings
) -> torch.Tensor:
    """Absolute input gradients [len(steps), n, hidden]."""
    return _path_gradients(task, "saliency", base, _one_point(), steps, settings).abs()


def grad_x_input(
    task: Task, base: torch.Tensor, steps: Sequence[int], settings: Settings
) -> torch.Tensor:
    """Input gradients x (inputs - baseline) [len(steps), n, hidden]."""
    total = _path_gradients(task, "grad_x_input", base, _one_point(), steps, settings)
    return total * (task.embeds - base).float()[0]


Method = Callable[[Task, torch.Tensor, Sequence[int], Settings], torch.Tensor]
NATIVE: dict[str, Method] = {
    "integrated_gradients": integrated_gradients,
    "saliency": saliency,
    "grad_x_input": grad_x_input,
}
