"""The native batched gradient engine: integrated gradients, saliency and grad x input.

It runs the records of a pack (:mod:`.packs`) together: a forward pass holds copies of the
pack for several interpolation points, and one cotangent per slot explains the same step of
every record at once. The causal mask makes the prediction at position ``t`` depend only on
its prefix, so one forward pass over a prefix serves every generated token inside it with the
results of Ecco's per-prefix runs. Slots are grouped by prefix so that the backward passes of
early tokens skip the columns only later tokens see (:func:`prefix_groups`). Per group and
batch of points there is one forward pass; the LM head runs once over the predicting rows
only, its gradients come from one small backward pass, and one batched vector-Jacobian
product (``is_grads_batched``) gives every token's input gradients.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..forward import body_states, head_logits
from .packs import Pack, forward_inputs, output_rows, per_element, scores, target_values
from .targets import Settings

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
    pack: Pack, x: torch.Tensor, slots: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(output, index, seeds): the gradient of slot ``j``'s explained quantity with respect to
    the inputs x [B, end, hidden] (element ``b`` is record ``b % R``) is the vector-Jacobian
    product of ``output`` with a cotangent that is ``seeds[b, j]`` at ``output[b, index[b, j]]``
    and zero elsewhere (zero seeds where record ``b % R`` has no slot ``j``).

    For LMs whose head is reached through ``head_input``, the output is the head input
    [B, end, d], the index the rows [B, len(slots)] and the seeds [B, len(slots), d] the
    head's gradients, all from one backward pass over a detached copy of the predicting rows
    (the head acts on each row alone), so the slots' backward passes start at their rows and
    never enter the head. Otherwise the output is the explained quantity [B, len(slots)]
    itself, with seeds of ones.
    """
    valid = per_element(pack, pack.valid, x.shape[0], slots)
    if pack.lm.spec.kind in ("classifier", "encoder-decoder"):
        values = target_values(pack, x, slots)
        index = torch.arange(len(slots), device=x.device).expand(x.shape[0], -1)
        return values, index, valid.to(values.dtype)
    hidden = body_states(pack.lm, forward_inputs(pack, x), grad=True)
    rows = output_rows(pack, x.shape[0], slots)
    batch = torch.arange(x.shape[0], device=x.device)[:, None]
    picked = hidden[batch, rows].detach().requires_grad_(True)
    logits = head_logits(pack.lm, picked, grad=True)
    (head_grads,) = torch.autograd.grad(scores(pack, logits, slots).sum(), picked)
    return hidden, rows, head_grads * valid[..., None].to(head_grads.dtype)


def _weighted_gradients(
    pack: Pack, point: torch.Tensor, slots: Sequence[int], weights: torch.Tensor, per_vjp: int
) -> torch.Tensor:
    """Sum over the P points of weights [P] x input gradients -> [len(slots), R, end, hidden].

    point [P * R, end, hidden] (points first) requires grad; ``per_vjp`` slots share one
    batched vector-Jacobian product.
    """
    output, index, seeds = gradient_seeds(pack, point, slots)
    n_records = len(pack.tasks)
    weights = weights.repeat_interleave(n_records)[None, :, None, None]
    batch = torch.arange(point.shape[0], device=point.device)
    out = torch.zeros(
        (len(slots), n_records, *point.shape[1:]), dtype=torch.float32, device=point.device
    )
    for lo in range(0, len(slots), per_vjp):
        hi = min(lo + per_vjp, len(slots))
        cotangents = torch.zeros((hi - lo, *output.shape), dtype=output.dtype, device=output.device)
        for j in range(lo, hi):
            cotangents[j - lo, batch, index[:, j]] = seeds[:, j].to(output.dtype)
        (grads,) = torch.autograd.grad(
            output, point, cotangents, retain_graph=hi < len(slots), is_grads_batched=True
        )
        weighted = weights * grads.float()
        out[lo:hi] = weighted.reshape(hi - lo, -1, n_records, *point.shape[1:]).sum(dim=1)
    return out


def _path_gradients(
    pack: Pack,
    name: str,
    nodes: tuple[torch.Tensor, torch.Tensor],
    slots: Sequence[int],
    settings: Settings,
) -> torch.Tensor:
    """Weighted sums of input gradients [len(slots), R, width, hidden] at the points
    ``base + alpha * (x - base)`` for the (alphas, weights) ``nodes``, for every record.

    Slots are grouped by :func:`prefix_groups`; each group runs forward passes over its
    prefix of the pack's columns for batches of points x records (``settings.batch_size``
    sequences, by default equal batches of at most ``ROWS_PER_PASS`` token rows), each
    followed by batched vector-Jacobian products of at most about ``VJP_ROWS`` token rows
    (slots x sequences x columns). On CUDA, out of memory halves the points per pass, then the
    slots per product.
    """
    x, base = pack.embeds, pack.base
    n_records = x.shape[0]
    alphas, weights = nodes
    limit = settings.batch_size and max(1, settings.batch_size // n_records)
    total = torch.zeros((len(slots), *x.shape), dtype=torch.float32, device=x.device)
    groups = prefix_groups([pack.visible[s] for s in slots])
    bar = tqdm(
        total=len(alphas) * len(groups),
        desc=f"{name} ({len(slots)} tokens x {n_records} records)",
        disable=settings.hide_progress,
    )
    slot_limit = len(slots)
    for end, members in groups:
        start = 0
        while start < len(alphas):
            most_points = max(1, ROWS_PER_PASS // (end * n_records))
            size = limit or even_batch(len(alphas), most_points)
            a = alphas[start : start + size].to(x.device, x.dtype)[:, None, None, None]
            w = weights[start : start + size].to(x.device, torch.float32)
            most = min(slot_limit, max(1, VJP_ROWS // (len(a) * n_records * end)))
            per_vjp = even_batch(len(members), most)
            try:
                point = (base + a * (x - base))[:, :, :end].flatten(0, 1)
                point = point.detach().requires_grad_(True)
                part = _weighted_gradients(pack, point, [slots[i] for i in members], w, per_vjp)
            except torch.OutOfMemoryError:
                if x.device.type != "cuda" or (len(a) == 1 and per_vjp == 1):
                    raise
                if len(a) > 1:
                    limit = max(1, len(a) // 2)
                else:
                    slot_limit = max(1, per_vjp // 2)
                part = None
            if part is None:
                torch.cuda.empty_cache()
                continue
            total[members, :, :end] += part
            bar.update(len(a))
            start += len(a)
    bar.close()
    return total


def _one_point() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.ones(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)


def integrated_gradients(
    pack: Pack, slots: Sequence[int], settings: Settings
) -> list[torch.Tensor]:
    """(x - baseline) x the path integral of gradients (Gauss-Legendre), per record."""
    nodes = gauss_legendre(settings.n_steps)
    total = _path_gradients(pack, "integrated_gradients", nodes, slots, settings)
    return pack.unpack(total * (pack.embeds - pack.base).float(), slots)


def saliency(pack: Pack, slots: Sequence[int], settings: Settings) -> list[torch.Tensor]:
    """Absolute input gradients, per record."""
    return pack.unpack(
        _path_gradients(pack, "saliency", _one_point(), slots, settings).abs(), slots
    )


def grad_x_input(pack: Pack, slots: Sequence[int], settings: Settings) -> list[torch.Tensor]:
    """Input gradients x (inputs - baseline), per record."""
    total = _path_gradients(pack, "grad_x_input", _one_point(), slots, settings)
    return pack.unpack(total * (pack.embeds - pack.base).float(), slots)


Method = Callable[[Pack, Sequence[int], Settings], list[torch.Tensor]]
NATIVE: dict[str, Method] = {
    "integrated_gradients": integrated_gradients,
    "saliency": saliency,
    "grad_x_input": grad_x_input,
}
