"""Preference pairs: best vs worst response per prompt, and the buffer/evolved mix.

The mix follows the authors' ``combine_ds``: after a seeded shuffle, keep a fraction of the
original prompts' pairs (the buffer, default 0.2) and a fraction of the evolved prompts'
pairs (default 0.8), then shuffle the union. With 25% of N prompts sampled and 4 evolutions
each, that keeps the training set at about N pairs. Fractions are rounded to the nearest
pair (the authors truncate), so a small pool still contributes buffer pairs.

Given a win-probability estimate (SPPO; solver/win_prob.py), each pair also carries its
chosen and rejected responses' win probabilities against the prompt's other samples.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TypeVar

from evalign.solver.win_prob import WinProbs

T = TypeVar("T")


@dataclass(frozen=True)
class Pair:
    prompt_id: int
    prompt: str
    chosen: str
    rejected: str
    chosen_score: float
    rejected_score: float
    source: str  # "original" or "evolved"
    chosen_win_prob: float | None = None  # SPPO's P_w: None when no estimate was asked for
    rejected_win_prob: float | None = None  # SPPO's P_l

    def as_row(self) -> dict:
        return asdict(self)


def best_worst(
    prompt_id: int, prompt: str, responses: Sequence[str], rewards: Sequence[float], source: str,
    win_prob: WinProbs | None = None,
) -> Pair | None:
    """The highest- vs lowest-reward response; None when they tie (nothing to learn).

    Among equal rewards the earliest sample wins, so the choice is deterministic. With
    ``win_prob``, the pair carries the two responses' estimated win probabilities.
    """
    scored = [(r, j) for j, r in enumerate(rewards) if r is not None and math.isfinite(r)]
    if len(scored) < 2:
        return None
    hi = max(scored, key=lambda t: (t[0], -t[1]))
    lo = min(scored, key=lambda t: (t[0], t[1]))
    if hi[0] <= lo[0] or responses[hi[1]].strip() == responses[lo[1]].strip():
        return None
    p_w = p_l = None
    if win_prob is not None:
        probs = win_prob(rewards)
        p_w, p_l = probs[hi[1]], probs[lo[1]]
    return Pair(prompt_id, prompt, responses[hi[1]], responses[lo[1]], float(hi[0]), float(lo[0]), source, p_w, p_l)


def build_pairs(
    prompt_ids: Sequence[int],
    prompts: Sequence[str],
    responses: Sequence[Sequence[str]],
    rewards: Sequence[Sequence[float]],
    source: str,
    win_prob: WinProbs | None = None,
) -> tuple[list[Pair], int]:
    """Pairs for every prompt, and how many prompts were dropped as ties."""
    pairs, ties = [], 0
    for pid, p, rs, scores in zip(prompt_ids, prompts, responses, rewards):
        pair = best_worst(pid, p, rs, scores, source, win_prob)
        if pair is None:
            ties += 1
        else:
            pairs.append(pair)
    return pairs, ties


def mix_pairs(
    original: Sequence[Pair], evolved: Sequence[Pair], original_fraction: float, evolved_fraction: float, seed: int
) -> list[Pair]:
    """The training mix: a seeded share of the original prompts' pairs and of the evolved ones'."""
    return mix(original, evolved, original_fraction, evolved_fraction, seed)


def mix(original: Sequence[T], evolved: Sequence[T], original_fraction: float, evolved_fraction: float,
        seed: int) -> list[T]:
    """round(fraction x n) of each list, drawn and then shuffled with ``seed``: the offline
    loop's pairs, online eva's prompt buffer."""
    rng = random.Random(seed)

    def keep(items: Sequence[T], fraction: float) -> list[T]:
        pool = list(items)
        rng.shuffle(pool)
        return pool[: int(round(len(pool) * fraction))]

    mixed = keep(original, original_fraction) + keep(evolved, evolved_fraction)
    rng.shuffle(mixed)
    return mixed
