"""prefix_groups: the cheapest split of steps into prefix groups, checked by brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ecco_core.attribution.native import prefix_groups


def _cost(visible: list[int], groups: list[tuple[int, list[int]]]) -> int:
    return sum(rows * (1 + len(members)) for rows, members in groups)


def _cheapest(visible: list[int]) -> int:
    """Minimum cost over every split of the steps into contiguous groups."""
    n = len(visible)
    best = None
    for mask in itertools.product([False, True], repeat=n - 1):
        cuts = [0, *[i + 1 for i, cut in enumerate(mask) if cut], n]
        cost = sum(visible[b - 1] * (1 + b - a) for a, b in itertools.pairwise(cuts))
        best = cost if best is None else min(best, cost)
    assert best is not None
    return best


@pytest.mark.parametrize("seed", range(20))
def test_groups_are_the_cheapest_contiguous_split(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 11))
    steps = np.cumsum(rng.integers(0, 4, size=n)) + int(rng.integers(1, 30))
    visible = [int(v) for v in steps]
    groups = prefix_groups(visible)
    assert [i for _, members in groups for i in members] == list(range(n))
    for rows, members in groups:
        assert rows == max(visible[i] for i in members)
    assert _cost(visible, groups) == _cheapest(visible)


def test_equal_prefixes_stay_one_group_and_long_generations_split() -> None:
    assert prefix_groups([7, 7, 7]) == [(7, [0, 1, 2])]
    assert prefix_groups([5]) == [(5, [0])]
    groups = prefix_groups(list(range(9, 41)))
    assert len(groups) > 2
    assert _cost(list(range(9, 41)), groups) < 40 * 33 * 0.8
