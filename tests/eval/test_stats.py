"""Statistics used for every reported number: values, CIs, determinism and input checks."""

from __future__ import annotations

import numpy as np
import pytest

from evalign.eval.stats import (
    Estimate,
    bootstrap_ci,
    length_controlled_win_rate,
    mean_ci,
    paired_bootstrap_diff,
    paired_two_level_diff,
    proportion_ci,
    seed_spread,
    spearman,
    two_level_bootstrap,
    win_rate,
)


def test_fmt_percent_and_plain():
    assert Estimate(0.5417, 0.4712, 0.6104, 96).fmt(pct=True) == "54.2% [47.1, 61.0] n=96"
    assert Estimate(6.123, 5.801, 6.444, 40).fmt() == "6.12 [5.80, 6.44] n=40"


def test_all_wins_is_one_with_zero_width_ci():
    est = win_rate([1.0] * 30)
    assert (est.value, est.ci_low, est.ci_high, est.n) == (1.0, 1.0, 1.0, 30)


def test_single_item_gives_zero_width_interval():
    est = mean_ci([7.5])
    assert (est.value, est.ci_low, est.ci_high, est.n) == (7.5, 7.5, 7.5, 1)


def test_half_wins_ci_contains_half_with_plausible_width():
    est = win_rate([1, 0] * 50)
    assert est.value == 0.5 and est.n == 100
    assert est.ci_low < 0.5 < est.ci_high
    # Normal approximation: 2 * 1.96 * sqrt(0.25 / 100) = 0.196.
    assert 0.16 < est.ci_high - est.ci_low < 0.23


def test_ties_count_half():
    assert win_rate([1, 0.5, 0.5, 0]).value == 0.5


def test_seeded_bootstrap_is_deterministic_and_seed_matters():
    values = np.random.default_rng(1).normal(6, 1.5, size=40)
    assert mean_ci(values, seed=3) == mean_ci(values, seed=3)
    assert mean_ci(values, seed=3) != mean_ci(values, seed=4)


def test_bootstrap_ci_custom_statistic_and_alpha():
    values = np.arange(1.0, 101.0)
    est = bootstrap_ci(values, np.median, n_boot=500)
    assert est.value == 50.5
    assert est.ci_low < 50.5 < est.ci_high
    narrower = bootstrap_ci(values, np.median, n_boot=500, alpha=0.5)
    assert narrower.ci_high - narrower.ci_low < est.ci_high - est.ci_low


@pytest.mark.parametrize("bad", [[], [0.2, 1.5], [-0.1], [54.0, 60.0], [0.5, float("nan")]])
def test_win_rate_rejects_bad_outcomes(bad):
    with pytest.raises(ValueError):
        win_rate(bad)


def test_empty_bootstrap_raises():
    with pytest.raises(ValueError, match="empty"):
        bootstrap_ci([])


def test_paired_diff_of_identical_is_zero():
    a = np.random.default_rng(0).random(50)
    est = paired_bootstrap_diff(a, a.copy())
    assert (est.value, est.ci_low, est.ci_high) == (0.0, 0.0, 0.0)


def test_paired_diff_sign_and_ci():
    rng = np.random.default_rng(0)
    b = rng.random(200)
    a = np.clip(b + 0.1 + rng.normal(0, 0.05, 200), 0, 1)
    est = paired_bootstrap_diff(a, b)
    assert est.value == pytest.approx(np.mean(a - b))
    assert 0 < est.ci_low < est.value < est.ci_high
    # Pairing cancels the shared per-prompt variance: much narrower than unpaired.
    assert est.ci_high - est.ci_low < 0.03


def test_paired_diff_length_mismatch():
    with pytest.raises(ValueError, match="same prompts"):
        paired_bootstrap_diff([1, 0, 1], [1, 0])


def test_lc_equals_raw_when_lengths_equal():
    outcomes = np.random.default_rng(2).integers(0, 2, 60).astype(float)
    lengths = np.full(60, 300.0)
    lc = length_controlled_win_rate(outcomes, lengths, lengths, n_boot=300, seed=5)
    assert lc == win_rate(outcomes, n_boot=300, seed=5)


def test_lc_moves_towards_half_when_length_explains_wins():
    # The model wins exactly when its answer is longer, and it is longer 80% of the time:
    # perfect separation, which must not crash and must pull the estimate towards 0.5.
    rng = np.random.default_rng(0)
    n = 100
    longer = np.arange(n) < 80
    diff = np.where(longer, rng.uniform(50, 400, n), -rng.uniform(50, 400, n))
    outcomes = longer.astype(float)
    base = np.full(n, 500.0)
    lc = length_controlled_win_rate(outcomes, base + diff, base, n_boot=200, seed=0)
    assert win_rate(outcomes).value == 0.8
    assert abs(lc.value - 0.5) < 0.25
    assert lc.ci_low <= lc.value <= lc.ci_high
    assert lc.n == n


def test_lc_keeps_win_rate_when_length_is_unrelated():
    rng = np.random.default_rng(3)
    n = 400
    outcomes = (rng.random(n) < 0.7).astype(float)
    len_model = rng.uniform(100, 900, n)
    len_base = rng.uniform(100, 900, n)
    lc = length_controlled_win_rate(outcomes, len_model, len_base, n_boot=200)
    assert lc.value == pytest.approx(outcomes.mean(), abs=0.05)


def test_lc_all_wins_with_varying_lengths():
    lengths = np.linspace(100, 800, 40)
    lc = length_controlled_win_rate(np.ones(40), lengths, lengths[::-1], n_boot=100)
    assert (lc.value, lc.ci_low, lc.ci_high) == (1.0, 1.0, 1.0)


def test_lc_fractional_outcomes():
    rng = np.random.default_rng(4)
    outcomes = rng.uniform(0.2, 0.9, 80)
    len_model, len_base = rng.uniform(100, 500, 80), rng.uniform(100, 500, 80)
    lc = length_controlled_win_rate(outcomes, len_model, len_base, n_boot=100)
    assert 0.2 < lc.value < 0.9


def test_lc_length_mismatch():
    with pytest.raises(ValueError, match="differ in length"):
        length_controlled_win_rate([1, 0], [10, 20, 30], [10, 20])


def test_proportion_ci_wilson():
    est = proportion_ci(8, 10)
    assert est.value == 0.8 and est.n == 10
    assert est.ci_low == pytest.approx(0.4902, abs=1e-3)
    assert est.ci_high == pytest.approx(0.9433, abs=1e-3)
    assert proportion_ci(0, 20).ci_low == 0.0


@pytest.mark.parametrize("k, n", [(3, 0), (5, 4), (-1, 4)])
def test_proportion_ci_bad_counts(k, n):
    with pytest.raises(ValueError):
        proportion_ci(k, n)


def test_spearman():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    with pytest.raises(ValueError):
        spearman([1, 2], [1, 2, 3])


# ---------------------------------------------------------------- two levels: seeds, then prompts

def _seeded_effects(shift_sd: float, n_seeds: int = 4, n_prompts: int = 40, rng_seed: int = 0):
    """Per-seed paired differences: prompt noise plus one shift per seed, shared by all its prompts."""
    rng = np.random.default_rng(rng_seed)
    shifts = rng.normal(0, shift_sd, n_seeds)
    return [shift + rng.normal(0, 0.1, n_prompts) for shift in shifts]


def test_an_effect_shared_by_a_seeds_prompts_widens_the_two_level_interval():
    per_seed = _seeded_effects(shift_sd=0.3)
    two = two_level_bootstrap(per_seed, n_boot=1000)
    prompts_only = bootstrap_ci(np.concatenate(per_seed), n_boot=1000)
    assert two.value == pytest.approx(prompts_only.value)
    assert (two.ci_high - two.ci_low) > 3 * (prompts_only.ci_high - prompts_only.ci_low)
    assert two.n == 40  # prompts per seed, not the pooled count
    # Without a seed effect the two intervals agree roughly (the seeds add nothing).
    flat = _seeded_effects(shift_sd=0.0)
    two_flat = two_level_bootstrap(flat, n_boot=1000)
    only_flat = bootstrap_ci(np.concatenate(flat), n_boot=1000)
    assert (two_flat.ci_high - two_flat.ci_low) < 1.5 * (only_flat.ci_high - only_flat.ci_low)


def test_paired_two_level_diff_pairs_by_seed_and_prompt():
    rng = np.random.default_rng(2)
    difficulty = rng.normal(0, 1, 30)  # shared by both systems on a prompt: pairing removes it
    shifts = [0.3, -0.2, 0.25]  # seed effects on a only
    a = [difficulty + s + rng.normal(0, 0.05, 30) for s in shifts]
    b = [difficulty + rng.normal(0, 0.05, 30) for _ in shifts]
    est = paired_two_level_diff(a, b, n_boot=1000)
    assert est.value == pytest.approx(np.mean(np.concatenate(a) - np.concatenate(b)))
    assert est.ci_low < 0.3 and est.ci_high > -0.2  # the seeds' disagreement is in the interval
    assert est.ci_high - est.ci_low < 1.0  # and the prompts' difficulty is not
    with pytest.raises(ValueError, match="same prompts"):
        paired_two_level_diff([np.ones(3)], [np.ones(4)])
    with pytest.raises(ValueError, match="same seeds"):
        paired_two_level_diff([np.ones(3)], [np.ones(3), np.ones(3)])


def test_two_level_bootstrap_is_seeded_and_checks_input():
    per_seed = _seeded_effects(0.2, n_seeds=3)
    assert two_level_bootstrap(per_seed, seed=1) == two_level_bootstrap(per_seed, seed=1)
    assert two_level_bootstrap(per_seed, seed=1) != two_level_bootstrap(per_seed, seed=2)
    with pytest.raises(ValueError, match="at least one seed"):
        two_level_bootstrap([])
    with pytest.raises(ValueError, match="same shape"):
        two_level_bootstrap([np.ones((3, 2)), np.ones((3, 3))])


def test_two_level_bootstrap_takes_a_ratio_statistic_over_ragged_seeds():
    # Rows (sum of graded turns, graded turns): the mean over graded turns, FastChat's average.
    seed0 = np.array([[14.0, 2], [6.0, 1]])
    seed1 = np.array([[10.0, 2], [8.0, 2], [3.0, 1]])
    est = two_level_bootstrap([seed0, seed1], lambda r: r[:, 0].sum() / r[:, 1].sum(), n_boot=200)
    assert est.value == pytest.approx(41 / 8) and est.n == 3
    assert est.ci_low <= est.value <= est.ci_high


def test_seed_spread():
    sp = seed_spread([0.5, 0.7, 0.6])
    assert (sp.low, sp.high) == (0.5, 0.7) and sp.sd == pytest.approx(0.1)
    assert seed_spread([0.4]).sd == 0.0
    assert sp.as_dict()["per_seed"] == [0.5, 0.7, 0.6]
