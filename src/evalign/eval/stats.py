"""Statistics for evaluation results: every estimate carries its n and a 95% CI.

Outcomes are per-prompt scores on the fraction scale 0–1 (1 win, 0.5 tie, 0 loss, or a
judge's win probability, already averaged over both judging orders); percentages exist only
in :meth:`Estimate.fmt`. Intervals are percentile bootstraps over prompts with a seeded
``numpy.random.Generator``, so the same inputs and seed always give the same numbers; a study
with several seeds per arm uses the two-level bootstrap (seeds, then prompts within each).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import statsmodels.api as sm
from numpy.typing import ArrayLike
from scipy import stats as sps
from statsmodels.stats.proportion import proportion_confint
from statsmodels.tools.sm_exceptions import PerfectSeparationWarning

Statistic = Callable[[np.ndarray], float]

# Weight of each of the two pseudo-prompts (a tie at the extreme length terms ±1) added to
# every LC fit: together one tie's worth of evidence, enough to keep the logistic fit
# finite under perfect separation and negligible against a real benchmark's n.
LC_PSEUDO_WEIGHT = 0.5


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its (1 - alpha) confidence interval and sample size."""

    value: float
    ci_low: float
    ci_high: float
    n: int

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "ci_low": self.ci_low, "ci_high": self.ci_high, "n": self.n}

    def fmt(self, pct: bool = False) -> str:
        """'54.2% [47.1, 61.0] n=96' (fractions as percent) or '6.12 [5.80, 6.44] n=40'."""
        if pct:
            v, lo, hi = 100 * self.value, 100 * self.ci_low, 100 * self.ci_high
            return f"{v:.1f}% [{lo:.1f}, {hi:.1f}] n={self.n}"
        return f"{self.value:.2f} [{self.ci_low:.2f}, {self.ci_high:.2f}] n={self.n}"


def _as_array(values: ArrayLike, name: str) -> np.ndarray:
    """Items along axis 0 as floats; empty or non-finite input is a caller bug."""
    arr = np.asarray(values, dtype=float)
    if arr.ndim == 0 or arr.shape[0] == 0:
        raise ValueError(f"{name} is empty: need at least one item")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _as_outcomes(outcomes: ArrayLike) -> np.ndarray:
    """Per-prompt outcomes must be fractions in [0, 1], not percentages."""
    arr = _as_array(outcomes, "outcomes")
    if arr.ndim != 1:
        raise ValueError(f"outcomes must be one score per prompt, got shape {arr.shape}")
    if arr.min() < 0 or arr.max() > 1:
        raise ValueError("outcomes must lie in [0, 1] (1 win, 0.5 tie, 0 loss), not in percent")
    return arr


def bootstrap_ci(
    values: ArrayLike,
    statistic: Statistic = np.mean,
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> Estimate:
    """Percentile bootstrap of ``statistic`` resampling items (rows of ``values``).

    Rows rather than scalars are resampled so that paired data (several columns per prompt)
    stays paired. Resamples whose statistic is not finite (a fit that failed) are skipped.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    arr = _as_array(values, "values")
    n = arr.shape[0]
    point = float(statistic(arr))
    rng = np.random.default_rng(seed)
    boots = np.array([statistic(arr[rng.integers(0, n, n)]) for _ in range(n_boot)], dtype=float)
    boots = boots[np.isfinite(boots)]
    if boots.size == 0:
        raise ValueError("the statistic was not finite on any bootstrap resample")
    lo, hi = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    return Estimate(point, float(lo), float(hi), n)


def mean_ci(
    values: ArrayLike, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05
) -> Estimate:
    """Average score (e.g. MT-Bench 1–10) with a bootstrap CI over items."""
    return bootstrap_ci(values, np.mean, n_boot, seed, alpha)


def win_rate(
    outcomes: ArrayLike, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05
) -> Estimate:
    """Mean per-prompt outcome (fraction 0–1, ties count half) with a bootstrap CI."""
    return bootstrap_ci(_as_outcomes(outcomes), np.mean, n_boot, seed, alpha)


def paired_bootstrap_diff(
    a: ArrayLike, b: ArrayLike, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05
) -> Estimate:
    """Mean of a − b for two systems on the same prompts, resampling prompts jointly.

    Pairing removes the prompt-difficulty variance both systems share, so the CI is
    narrower than comparing two independent intervals.
    """
    xa, xb = _as_array(a, "a"), _as_array(b, "b")
    if xa.shape != xb.shape:
        raise ValueError(f"a and b must score the same prompts: shapes {xa.shape} and {xb.shape}")
    return bootstrap_ci(xa - xb, np.mean, n_boot, seed, alpha)


def two_level_bootstrap(
    values_per_seed: Sequence[ArrayLike],
    statistic: Statistic = np.mean,
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> Estimate:
    """Percentile bootstrap over seeds, then items within each drawn seed.

    ``values_per_seed[s]`` holds seed s's items (rows, as in :func:`bootstrap_ci`; seeds may
    have different counts). Each resample draws as many seeds as there are, with replacement,
    then resamples each drawn seed's items, and applies ``statistic`` to the pooled rows. So
    the interval covers both what varies between seeds (an arm's training, creator and
    sampling randomness: an effect shared by every prompt of a seed) and the choice of
    prompts; a prompt-only bootstrap of the pooled items would miss the first. The point
    estimate is ``statistic`` of all items pooled. ``n`` is the largest per-seed item count
    (the evaluation's prompts), not the pooled count: the seeds repeat the same prompts.
    With one seed this is :func:`bootstrap_ci`'s interval (another random stream).
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    if len(values_per_seed) == 0:
        raise ValueError("values_per_seed is empty: need at least one seed")
    arrays = [_as_array(v, f"seed {i}'s values") for i, v in enumerate(values_per_seed)]
    shapes = {a.shape[1:] for a in arrays}
    if len(shapes) > 1:
        raise ValueError(f"every seed's items must have the same shape, got {sorted(shapes)}")
    point = float(statistic(np.concatenate(arrays)))
    rng = np.random.default_rng(seed)
    k = len(arrays)
    boots = np.empty(n_boot, dtype=float)
    for b in range(n_boot):
        drawn = [arrays[i] for i in rng.integers(0, k, k)]
        boots[b] = statistic(np.concatenate([a[rng.integers(0, len(a), len(a))] for a in drawn]))
    boots = boots[np.isfinite(boots)]
    if boots.size == 0:
        raise ValueError("the statistic was not finite on any bootstrap resample")
    lo, hi = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    return Estimate(point, float(lo), float(hi), max(len(a) for a in arrays))


def paired_two_level_diff(
    a_per_seed: Sequence[ArrayLike],
    b_per_seed: Sequence[ArrayLike],
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> Estimate:
    """Mean of a − b for two systems on the same prompts and seeds, resampling seeds (a seed
    index pairs a's seed s with b's seed s) and then prompts within each seed jointly.

    The paired form of :func:`two_level_bootstrap`: pairing by prompt removes the prompt
    difficulty both systems share, resampling seeds keeps the difference's between-seed
    variation in the interval.
    """
    if len(a_per_seed) != len(b_per_seed):
        raise ValueError(f"a and b must have the same seeds: {len(a_per_seed)} and {len(b_per_seed)}")
    diffs = []
    for s, (a, b) in enumerate(zip(a_per_seed, b_per_seed)):
        xa, xb = _as_array(a, f"a's seed {s}"), _as_array(b, f"b's seed {s}")
        if xa.shape != xb.shape:
            raise ValueError(f"seed {s}: a and b must score the same prompts: shapes {xa.shape} and {xb.shape}")
        diffs.append(xa - xb)
    return two_level_bootstrap(diffs, np.mean, n_boot, seed, alpha)


@dataclass(frozen=True)
class SeedSpread:
    """How much an estimate moves between seeds: one value per seed, their SD and range."""

    per_seed: tuple[float, ...]
    sd: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float | list[float]]:
        return {"per_seed": list(self.per_seed), "sd": self.sd, "min": self.low, "max": self.high}


def seed_spread(per_seed: ArrayLike) -> SeedSpread:
    """The between-seed spread of per-seed estimates (SD with ddof 1; 0 for one seed)."""
    arr = _as_array(per_seed, "per_seed")
    if arr.ndim != 1:
        raise ValueError(f"per_seed must be one estimate per seed, got shape {arr.shape}")
    sd = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    return SeedSpread(tuple(float(v) for v in arr), sd, float(arr.min()), float(arr.max()))


def _lc_point(rows: np.ndarray) -> float:
    """LC win rate of rows (outcome, length difference): sigmoid of the GLM intercept.

    Falls back to the raw win rate when length cannot explain anything (outcomes or length
    differences constant, or a single prompt). Two pseudo-prompts scoring a tie at length
    terms +1 and -1 keep the fit finite under perfect separation (e.g. the model wins
    exactly when it is longer); they pull the estimate towards 0.5 by about 1/n.
    """
    y, diff = rows[:, 0], rows[:, 1]
    std = diff.std(ddof=1) if len(diff) > 1 else 0.0
    if std == 0 or np.ptp(y) == 0:
        return float(y.mean())
    x = np.concatenate([np.tanh(diff / std), [1.0, -1.0]])
    y = np.concatenate([y, [0.5, 0.5]])
    weights = np.concatenate([np.ones(len(diff)), [LC_PSEUDO_WEIGHT, LC_PSEUDO_WEIGHT]])
    model = sm.GLM(y, sm.add_constant(x), family=sm.families.Binomial(), freq_weights=weights)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PerfectSeparationWarning)
        try:
            fit = model.fit()
        except (ValueError, np.linalg.LinAlgError):
            return float("nan")
    if not fit.converged:
        return float("nan")
    return float(1.0 / (1.0 + np.exp(-fit.params[0])))


def length_controlled_win_rate(
    outcomes: ArrayLike,
    len_model: ArrayLike,
    len_baseline: ArrayLike,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> Estimate:
    """Win rate with answer length regressed out, in the spirit of AlpacaEval 2.0's LC.

    Fits outcome ~ 1 + tanh(Δlen / std(Δlen)) as a binomial GLM (fractional outcomes are
    allowed) and reports the predicted win probability at Δlen = 0. The CI refits on each
    prompt resample (hence the smaller default ``n_boot``); failed fits are skipped.
    """
    y = _as_outcomes(outcomes)
    lm, lb = _as_array(len_model, "len_model"), _as_array(len_baseline, "len_baseline")
    if not len(y) == len(lm) == len(lb):
        raise ValueError(
            f"outcomes, len_model and len_baseline differ in length: {len(y)}, {len(lm)}, {len(lb)}"
        )
    return bootstrap_ci(np.column_stack([y, lm - lb]), _lc_point, n_boot, seed, alpha)


def length_controlled_two_level(
    outcomes_per_seed: Sequence[ArrayLike],
    len_model_per_seed: Sequence[ArrayLike],
    len_baseline_per_seed: Sequence[ArrayLike],
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> Estimate:
    """:func:`length_controlled_win_rate` fitted on every seed's prompts pooled, with the
    two-level interval (seeds, then prompts within each seed)."""
    if not len(outcomes_per_seed) == len(len_model_per_seed) == len(len_baseline_per_seed):
        raise ValueError("outcomes and lengths must have the same seeds")
    rows = []
    for y, lm, lb in zip(outcomes_per_seed, len_model_per_seed, len_baseline_per_seed):
        ya, lma, lba = _as_outcomes(y), _as_array(lm, "len_model"), _as_array(lb, "len_baseline")
        if not len(ya) == len(lma) == len(lba):
            raise ValueError(f"outcomes, len_model and len_baseline differ in length: {len(ya)}, {len(lma)}, {len(lba)}")
        rows.append(np.column_stack([ya, lma - lba]))
    return two_level_bootstrap(rows, _lc_point, n_boot, seed, alpha)


def proportion_ci(k: int, n: int, alpha: float = 0.05) -> Estimate:
    """k successes of n with a Wilson interval, which stays sensible at k=0 and k=n."""
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n > 0, got k={k}, n={n}")
    lo, hi = proportion_confint(k, n, alpha=alpha, method="wilson")
    return Estimate(k / n, float(lo), float(hi), n)


def spearman(x: ArrayLike, y: ArrayLike) -> float:
    """Spearman rank correlation (e.g. judge vs reference ranking); NaN if either is constant."""
    xa, ya = _as_array(x, "x"), _as_array(y, "y")
    if xa.shape != ya.shape:
        raise ValueError(f"x and y must have the same length: {xa.shape} and {ya.shape}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sps.ConstantInputWarning)
        return float(sps.spearmanr(xa, ya).statistic)


def as_dict(e: Estimate | None) -> dict[str, float] | None:
    """An estimate as a plain dict (JSON, report rows); None stays None."""
    return None if e is None else e.as_dict()


def min_detectable_effect(
    n: int, judge_accuracy: float, sd: float = 0.5, alpha: float = 0.05, power: float = 0.8
) -> float:
    """Smallest true win-rate difference a paired comparison on ``n`` prompts detects.

    Closed form. A judge that picks the truly better answer with probability ``a`` (its
    both-orders accuracy on labeled pairs, so position bias is already folded in) shrinks a
    true difference d to an observed (2a - 1) d. A two-sided paired test at level ``alpha``
    with the given ``power`` detects an observed mean difference of
    (z_{1-alpha/2} + z_{power}) * sd / sqrt(n), where ``sd`` is the standard deviation of the
    per-prompt outcome difference (0.5 is the bound for outcomes in [0, 1]). Dividing by
    (2a - 1) puts it back on the true scale. Returns inf when the judge is at chance.
    """
    if n <= 0:
        return float("inf")
    z = sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power)
    observed = z * sd / np.sqrt(n)
    signal = 2 * judge_accuracy - 1
    return float("inf") if signal <= 0 else float(observed / signal)
