"""The creator: metrics, samplers, operators (with a scripted creator LLM), parser, filters."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from evalign.backends.base import GenParams
from evalign.creator import (
    SAMPLERS,
    sample_prompts,
)
from evalign.creator.sampling import WEIGHT_FLOOR, quantile_bins

PARAMS = GenParams(max_new_tokens=200, temperature=0.7, top_p=0.95)


@pytest.mark.parametrize("method", list(SAMPLERS))
def test_sampler_is_deterministic_sorted_and_distinct(method):
    values = np.random.default_rng(0).random(50)
    a = sample_prompts(values, 0.3, method, seed=7)
    b = sample_prompts(values, 0.3, method, seed=7)
    assert a == b
    assert len(a.indices) == 15 and len(set(a.indices)) == 15
    assert list(a.indices) == sorted(a.indices)
    assert all(0 <= i < 50 for i in a.indices)
    assert not a.fallback and a.warnings == ()
    if method != "greedy":
        others = {sample_prompts(values, 0.3, method, seed=s).indices for s in range(5)}
        assert len(others) > 1  # the seed matters


@pytest.mark.parametrize(
    "n, fraction, expected", [(10, 0.25, 3), (4, 0.25, 1), (100, 0.25, 25), (1, 0.1, 1), (3, 1.0, 3), (7, 0.5, 4)]
)
def test_sample_size(n, fraction, expected):
    res = sample_prompts(np.linspace(0, 1, n), fraction, "weighted", seed=0)
    assert res.n_requested == expected and len(res.indices) == expected and res.n_eligible == n


def test_greedy_picks_the_top_with_ties_to_the_lower_index():
    res = sample_prompts([0.1, 0.9, 0.5, 0.9, 0.2, 0.9], 0.34, "greedy", seed=0)  # n = 2
    assert res.indices == (1, 3)


def test_stratified_covers_every_bin():
    values = np.repeat([0.0, 1.0, 2.0, 3.0], 10) + np.linspace(0, 0.5, 40)
    bins = quantile_bins(values, 4)
    assert sorted(Counter(bins.tolist()).values()) == [10, 10, 10, 10]
    for seed in range(10):
        res = sample_prompts(values, 0.1, "stratified", seed=seed, strata=4)  # n = 4
        assert sorted(bins[list(res.indices)].tolist()) == [0, 1, 2, 3]


def test_stratified_splits_proportionally_to_bin_size():
    values = np.array([0.0] * 30 + [1.0] * 10)  # ties merge the quantile edges: 2 bins
    bins = quantile_bins(values, 4)
    assert Counter(bins.tolist()) == {0: 30, 1: 10}
    res = sample_prompts(values, 0.2, "stratified", seed=3, strata=4)  # n = 8 -> 6 + 2
    assert Counter(bins[list(res.indices)].tolist()) == {0: 6, 1: 2}


def test_weighted_prefers_informative_prompts():
    values = np.linspace(0, 1, 20)
    counts = np.zeros(20)
    for seed in range(300):
        counts[list(sample_prompts(values, 0.25, "weighted", seed=seed).indices)] += 1
    top, bottom = counts[-5:].sum(), counts[:5].sum()
    assert top > 3 * bottom  # weights ∝ value: expected ratio is far larger
    assert counts[0] == 0  # weight WEIGHT_FLOOR: not drawn while others remain
    assert counts[-1] > counts[10]


def test_weighted_floor_lets_the_least_informative_prompt_be_drawn_when_needed():
    assert WEIGHT_FLOOR > 0
    assert sample_prompts([0.0, 0.5, 1.0], 1.0, "weighted", seed=0).indices == (0, 1, 2)
    # n = 3 of [0, 0, 0, 0, 1]: the top one, then two of the zeros, at random
    picks = {sample_prompts([0.0, 0.0, 0.0, 0.0, 1.0], 0.6, "weighted", seed=s).indices for s in range(20)}
    assert all(4 in p and len(p) == 3 for p in picks) and len(picks) > 2


@pytest.mark.parametrize("method", ["weighted", "greedy", "stratified"])
def test_all_equal_values_fall_back_to_uniform_with_a_warning(method):
    res = sample_prompts([0.0] * 12, 0.25, method, seed=1)
    assert res.fallback and res.used_method == "uniform" and res.method == method
    assert len(res.indices) == 3
    assert any("same informativeness" in w for w in res.warnings)
    # uniform, not "the first three": different seeds pick different prompts
    assert len({sample_prompts([0.0] * 12, 0.25, method, seed=s).indices for s in range(6)}) > 1


def test_uniform_method_on_equal_values_is_not_a_fallback():
    res = sample_prompts([1.0] * 8, 0.5, "uniform", seed=1)
    assert not res.fallback and res.warnings == () and len(res.indices) == 4


def test_nan_values_are_never_sampled_and_reported():
    values = [math.nan, 0.2, math.nan, 0.9, 0.5, 0.1]
    for seed in range(20):
        res = sample_prompts(values, 1.0, "weighted", seed=seed)
        assert res.indices == (1, 3, 4, 5)
    assert res.n_total == 6 and res.n_eligible == 4
    assert any("2 of 6 prompts" in w for w in res.warnings)
    none = sample_prompts([math.nan, math.nan], 0.5, "weighted", seed=0)
    assert none.indices == () and none.n_requested == 0 and none.warnings


def test_empty_and_single_prompt_pools():
    empty = sample_prompts([], 0.25, "weighted", seed=0)
    assert empty.indices == () and empty.n_total == 0 and not empty.fallback
    one = sample_prompts([0.4], 0.25, "greedy", seed=0)
    assert one.indices == (0,) and not one.fallback


def test_sampler_argument_errors():
    with pytest.raises(ValueError, match="weighted, greedy, stratified, uniform"):
        sample_prompts([1.0], 0.5, "topk")
    with pytest.raises(ValueError, match="fraction"):
        sample_prompts([1.0], 0.0)
    with pytest.raises(ValueError, match="fraction"):
        sample_prompts([1.0], 1.5)


