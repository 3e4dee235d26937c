"""Choose which prompts to evolve, from their informativeness values.

``n = max(1, round_half_up(fraction * n_eligible))`` prompts are drawn from the eligible ones
(finite value). Methods:

* ``weighted`` (default; the authors' ``importance_weighted``): without replacement, each
  successive draw ∝ min-max-normalised value, as pandas' weighted ``sample``. The authors'
  normalisation gives the least informative prompts weight 0, so they could never be drawn
  and a large enough ``n`` made numpy fail. A floor of ``WEIGHT_FLOOR`` keeps them drawable,
  in practice only once the others run out, and then at random among themselves, without
  changing the other odds measurably.
* ``greedy``: the top n values, ties broken by the lower index.
* ``stratified``: ``strata`` quantile bins of the value (right-closed, as ``pd.qcut``;
  repeated edges merged, so ties can leave fewer bins), n split across bins in proportion to their size (largest
  remainder), weighted draws within each bin.
* ``uniform``: equal odds.

When all eligible values are equal (every reward tied, or the ``uniform`` metric) the
non-uniform methods have nothing to rank by, so sampling falls back to ``uniform`` and the
result carries a warning for the loop to log. Same inputs and seed -> same selection.
Each method is registered in ``evalign.registry.SAMPLERS`` (``creator.sampler``'s choices),
in the order above.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from evalign.registry import SAMPLERS

#: Weight added to every min-max-normalised value (the most informative prompt has 1).
WEIGHT_FLOOR = 1e-6

# (eligible values, n, rng, strata) -> n distinct positions into the values
Sampler = Callable[[np.ndarray, int, np.random.Generator, int], np.ndarray]


@dataclass(frozen=True)
class SampleResult:
    """The selected prompts and what a user needs to trust the selection."""

    indices: tuple[int, ...]  # positions in the input values, ascending
    method: str  # as requested
    used_method: str  # differs from ``method`` after a fallback
    n_total: int
    n_eligible: int  # prompts with a finite value
    n_requested: int
    fallback: bool
    warnings: tuple[str, ...]  # the fallback's reason, excluded prompts: for the log


def _weights(values: np.ndarray) -> np.ndarray:
    lo, hi = float(values.min()), float(values.max())
    if hi == lo:
        return np.ones_like(values)
    return (values - lo) / (hi - lo) + WEIGHT_FLOOR


def _weighted_draw(weights: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Successive draws ∝ weight without replacement, via Efraimidis–Spirakis keys u^(1/w)."""
    keys = np.log(1.0 - rng.random(weights.size)) / weights  # 1 - u lies in (0, 1]
    return np.argsort(-keys, kind="stable")[:n]


@SAMPLERS.register("weighted")
def _weighted(values: np.ndarray, n: int, rng: np.random.Generator, strata: int) -> np.ndarray:
    return _weighted_draw(_weights(values), n, rng)


@SAMPLERS.register("greedy")
def _greedy(values: np.ndarray, n: int, rng: np.random.Generator, strata: int) -> np.ndarray:
    return np.lexsort((np.arange(values.size), -values))[:n]


def quantile_bins(values: np.ndarray, strata: int) -> np.ndarray:
    """Bin index per value: ``strata`` quantile bins, right-closed, repeated edges merged,
    empty bins dropped (indices 0..b-1, low values first)."""
    edges = np.quantile(values, np.linspace(0.0, 1.0, strata + 1))
    raw = np.searchsorted(np.unique(edges[1:-1]), values, side="left")
    return np.unique(raw, return_inverse=True)[1]


def _largest_remainder(n: int, sizes: np.ndarray) -> np.ndarray:
    """Integer quotas summing to n, proportional to sizes; remainders go to the largest
    fractional parts, ties to the lower bin."""
    exact = n * sizes / sizes.sum()
    quotas = np.floor(exact).astype(int)
    order = np.lexsort((np.arange(sizes.size), -(exact - quotas)))
    quotas[order[: n - quotas.sum()]] += 1
    return quotas


@SAMPLERS.register("stratified")
def _stratified(values: np.ndarray, n: int, rng: np.random.Generator, strata: int) -> np.ndarray:
    bins = quantile_bins(values, strata)
    sizes = np.bincount(bins)
    weights = _weights(values)
    picked = []
    for b, quota in enumerate(_largest_remainder(n, sizes)):
        if quota:
            members = np.flatnonzero(bins == b)
            picked.append(members[_weighted_draw(weights[members], quota, rng)])
    return np.concatenate(picked)


@SAMPLERS.register("uniform")
def _uniform(values: np.ndarray, n: int, rng: np.random.Generator, strata: int) -> np.ndarray:
    return rng.permutation(values.size)[:n]


def sample_size(fraction: float, n_eligible: int) -> int:
    """max(1, fraction · n rounded half up); 0 when nothing is eligible."""
    return max(1, math.floor(fraction * n_eligible + 0.5)) if n_eligible else 0


def sample_prompts(
    values: Sequence[float] | np.ndarray,
    fraction: float,
    method: str = "weighted",
    seed: int = 0,
    strata: int = 4,
) -> SampleResult:
    """Select ``fraction`` of the prompts with a finite value, favouring informative ones."""
    if method not in SAMPLERS:
        raise ValueError(f"unknown sampling method {method!r}; choose one of: {', '.join(SAMPLERS)}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if strata < 1:
        raise ValueError(f"strata must be >= 1, got {strata}")
    values = np.asarray(values, dtype=float)
    if values.ndim != 1:
        raise ValueError(f"values must be one-dimensional, got shape {values.shape}")
    eligible = np.flatnonzero(np.isfinite(values))
    n = sample_size(fraction, eligible.size)
    notes = []
    if eligible.size < values.size:
        notes.append(
            f"{values.size - eligible.size} of {values.size} prompts have no finite "
            "informativeness (no usable reward) and cannot be sampled"
        )
    used = method
    v = values[eligible]
    if method != "uniform" and eligible.size > 1 and v.min() == v.max():
        used = "uniform"
        notes.append(
            f"all {eligible.size} eligible prompts have the same informativeness ({v[0]:g}); "
            f"sampled uniformly instead of {method!r}"
        )
    chosen: tuple[int, ...] = ()
    if n:
        positions = SAMPLERS[used](v, n, np.random.default_rng(seed), strata)
        chosen = tuple(sorted(int(i) for i in eligible[positions]))
    return SampleResult(chosen, method, used, values.size, eligible.size, n, used != method, tuple(notes))
