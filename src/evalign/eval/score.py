"""Average score: MT-Bench single-answer grading, 1–10, every turn graded.

Turn 2 is graded with turn 1 (question and the model's answer) as context. The judge sees a
reference answer only for FastChat's reference categories (math, reasoning, coding,
arena-hard-200: :mod:`evalign.eval.mt_bench`). The average is FastChat's (``show_result.py
--mode single``, fschat 0.2.36): the mean over every graded turn, so a question with one
turn left ungraded weighs less; its CI resamples questions, keeping a question's turns
together.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from evalign.judge.judge import Judge
from evalign.judge.verdicts import GradeItem
from evalign.eval import stats
from evalign.eval.formats import MTQuestion
from evalign.eval.mt_bench import shown_reference


@dataclass
class Scores:
    estimate: stats.Estimate | None
    turn1: stats.Estimate | None
    turn2: stats.Estimate | None
    per_category: dict[str, float]
    scores: list[list[float | None]] = field(default_factory=list)
    parse_failures: int = 0
    #: Turns graded (the mean's terms); each estimate's ``n`` counts questions, the CI's unit.
    graded_turns: int = 0

    def as_dict(self) -> dict:
        return {"score": stats.as_dict(self.estimate), "turn1": stats.as_dict(self.turn1), "turn2": stats.as_dict(self.turn2),
                "per_category": self.per_category, "scores": self.scores, "parse_failures": self.parse_failures,
                "graded_turns": self.graded_turns}


def grade_items(questions: Sequence[MTQuestion], answers: Sequence[Sequence[str]]
                ) -> tuple[list[GradeItem], list[tuple[int, int]]]:
    """One item per answered turn (with earlier turns as context), and its (question, turn)."""
    items, where = [], []
    for qi, (q, ans) in enumerate(zip(questions, answers)):
        for t, (turn, answer) in enumerate(zip(q.turns, ans)):
            ref = shown_reference(q, t)
            context = tuple((q.turns[k], ans[k]) for k in range(t))
            items.append(GradeItem(turn, answer, ref, context))
            where.append((qi, t))
    return items, where


def judge_scores(
    judge: Judge,
    questions: Sequence[MTQuestion],
    answers: Sequence[Sequence[str]],
    *,
    n_boot: int = 2000,
    seed: int = 0,
    description: str = "grading answers",
) -> Scores:
    items, where = grade_items(questions, answers)
    verdicts = judge.grade(items, description=description)
    scores: list[list[float | None]] = [[None] * len(q.turns) for q in questions]
    failures = 0
    for (qi, t), v in zip(where, verdicts):
        scores[qi][t] = v.score
        failures += int(v.parse_failed)

    by_cat: dict[str, list[float]] = defaultdict(list)
    for q, row in zip(questions, scores):
        by_cat[q.category].extend(s for s in row if s is not None)
    return Scores(turn_mean(scores, None, n_boot, seed), turn_mean(scores, 0, n_boot, seed),
                  turn_mean(scores, 1, n_boot, seed),
                  {c: float(np.mean(v)) for c, v in sorted(by_cat.items()) if v}, scores, failures,
                  sum(s is not None for row in scores for s in row))


def turn_mean(scores: Sequence[Sequence[float | None]], turn: int | None, n_boot: int = 2000,
              seed: int = 0) -> stats.Estimate | None:
    """Mean grade over every graded turn (``turn``: only that 0-based turn), as FastChat's
    ``show_result`` averages its ``score != -1`` rows; None (ungraded) turns are left out.

    The CI is a question-clustered bootstrap: questions are resampled with all their graded
    turns and the statistic is the resample's total grade over its number of graded turns.
    ``n`` counts the questions with at least one graded turn in the mean.
    """
    rows = _turn_rows(scores, turn)
    if not rows:
        return None
    return stats.bootstrap_ci(np.array(rows), _pooled_mean, n_boot, seed)


def turn_mean_over_seeds(scores_per_seed: Sequence[Sequence[Sequence[float | None]]], turn: int | None,
                         n_boot: int = 2000, seed: int = 0) -> stats.Estimate | None:
    """:func:`turn_mean` of several seeds' grades: the mean over every graded turn of every
    seed, with a two-level CI (seeds, then questions within each seed, a question's turns kept
    together). ``n`` counts the questions of the seed with the most graded ones."""
    per_seed = [np.array(rows) for rows in (_turn_rows(s, turn) for s in scores_per_seed) if rows]
    if not per_seed:
        return None
    return stats.two_level_bootstrap(per_seed, _pooled_mean, n_boot, seed)


def _turn_rows(scores: Sequence[Sequence[float | None]], turn: int | None) -> list[tuple[float, float]]:
    """(total grade, graded turns) per question with a graded turn (``turn``: only that one)."""
    rows = []
    for row in scores:
        got = [s for k, s in enumerate(row) if s is not None and (turn is None or k == turn)]
        if got:
            rows.append((float(sum(got)), float(len(got))))
    return rows


def _pooled_mean(rows: np.ndarray) -> float:
    return float(rows[:, 0].sum() / rows[:, 1].sum())
