"""The creator: metrics, samplers, operators (with a scripted creator LLM), parser, filters."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evalign.backends.base import GenParams
from evalign.creator import (
    METRICS,
    informativeness,
)

PARAMS = GenParams(max_new_tokens=200, temperature=0.7, top_p=0.95)


@pytest.mark.parametrize(
    "metric, expected",
    [
        ("gap", 3.0),
        ("max_mean", 4 - 7 / 3),
        ("variance", np.var([1, 2, 4])),
        ("mean", 7 / 3),
        ("inverse_mean", -7 / 3),
        ("best_second", 2.0),
        ("uniform", 1.0),
    ],
)
def test_metric_values(metric, expected):
    assert informativeness([[1.0, 2.0, 4.0]], metric)[0] == pytest.approx(expected)


@pytest.mark.parametrize("metric", ["gap", "max_mean", "variance", "best_second"])
def test_spread_metrics_are_exactly_zero_for_one_response_or_ties(metric):
    out = informativeness([[0.7], [0.1, 0.1, 0.1], [1 / 3] * 6], metric)
    assert out.tolist() == [0.0, 0.0, 0.0]


def test_mean_metrics_with_one_response():
    assert informativeness([[0.7]], "mean").tolist() == [0.7]
    assert informativeness([[0.7]], "inverse_mean").tolist() == [-0.7]
    assert informativeness([[0.7]], "uniform").tolist() == [1.0]


def test_best_second_with_tied_best_is_zero():
    assert informativeness([[5.0, 5.0, 1.0]], "best_second").tolist() == [0.0]


def test_nan_rewards_are_ignored_and_all_nan_prompt_is_nan():
    out = informativeness([[1.0, math.nan, 3.0], [math.nan, math.nan], [], [None, 2.0]], "gap")
    assert out[0] == 2.0 and out[3] == 0.0
    assert math.isnan(out[1]) and math.isnan(out[2])
    # every metric, uniform included, marks a prompt without a usable reward as NaN
    for name in METRICS:
        assert math.isnan(informativeness([[math.nan]], name)[0])


def test_empty_pool_and_single_prompt_and_ragged_k():
    assert informativeness([], "gap").shape == (0,)
    assert informativeness([[1.0, 2.0]], "gap").tolist() == [1.0]
    assert informativeness([[1.0, 2.0], [0.0, 5.0, 1.0, 2.0]], "gap").tolist() == [1.0, 5.0]


def test_unknown_metric_lists_the_names():
    with pytest.raises(ValueError, match="gap, max_mean, variance"):
        informativeness([[1.0]], "regret")


