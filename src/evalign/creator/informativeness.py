"""How much a prompt still has to teach the policy, from the rewards of its k responses.

eva samples prompts for evolution in proportion to this value. The default, ``gap``
(max − min), is the reward advantage of the best-vs-worst pair the solver trains on; the
others are the ablations in the authors' code (``best_second`` is their ``reward_dts``).

Degenerate cases, fixed here so every arm of an ablation sees the same numbers:

* k = 1 or all rewards equal: the spread metrics (``gap``, ``max_mean``, ``variance``,
  ``best_second``) are exactly 0; ``mean`` is the reward, ``inverse_mean`` its negation,
  ``uniform`` 1.
* Non-finite rewards (NaN, None, ±inf: a failed generation or score) are ignored within a
  prompt. A prompt with no finite reward, or no rewards, gets NaN; samplers never select a
  NaN prompt and report how many they excluded.
* An empty pool gives an empty array; a single prompt, an array of one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from evalign.registry import METRICS

Metric = Callable[[np.ndarray], float]


@METRICS.register("gap")
def gap(r: np.ndarray) -> float:
    """Best minus worst reward: the margin of the pair the solver trains on."""
    return float(r.max() - r.min())


@METRICS.register("max_mean")
def max_mean(r: np.ndarray) -> float:
    """Best reward minus the mean: how far the best sample beats a typical one."""
    d = r - r.min()  # shifted so equal rewards give exactly 0, not rounding noise
    return float(d.max() - d.mean())


@METRICS.register("variance")
def variance(r: np.ndarray) -> float:
    """Population variance (ddof=0) of the rewards."""
    return float(np.var(r - r.min()))


@METRICS.register("mean")
def mean(r: np.ndarray) -> float:
    """Mean reward (high = the policy already does well)."""
    return float(np.mean(r))


@METRICS.register("inverse_mean")
def inverse_mean(r: np.ndarray) -> float:
    """Negated mean reward, so prompts the policy is weak on rank first."""
    return -mean(r)


@METRICS.register("best_second")
def best_second(r: np.ndarray) -> float:
    """Best minus second-best reward; 0 for a single response."""
    if r.size < 2:
        return 0.0
    second, best = np.sort(r)[-2:]
    return float(best - second)


@METRICS.register("uniform")
def uniform(r: np.ndarray) -> float:
    """Constant 1: the no-informativeness baseline."""
    return 1.0


def get_metric(name: str) -> Metric:
    return METRICS.get(name)


def informativeness(rewards_per_prompt: Sequence[Sequence[float]], metric: str = "gap") -> np.ndarray:
    """One value per prompt (NaN where a prompt has no finite reward); k may differ per prompt."""
    fn = get_metric(metric)
    out = np.full(len(rewards_per_prompt), np.nan)
    for i, rewards in enumerate(rewards_per_prompt):
        r = np.asarray(rewards, dtype=float).ravel()
        r = r[np.isfinite(r)]
        if r.size:
            out[i] = fn(r)
    return out
