"""Average score: MT-Bench-style single-answer grading, 1–10, every turn graded.

Turn 2 is graded with turn 1 (question and the model's answer) as context; categories with
reference answers (math, reasoning, coding in the built-in set) show the reference to the
judge. The average's CI resamples questions, keeping both turns of a question together.
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


@dataclass
class Scores:
    estimate: stats.Estimate | None
    turn1: stats.Estimate | None
    turn2: stats.Estimate | None
    per_category: dict[str, float]
    scores: list[list[float | None]] = field(default_factory=list)
    parse_failures: int = 0

    def as_dict(self) -> dict:
        return {"score": stats.as_dict(self.estimate), "turn1": stats.as_dict(self.turn1), "turn2": stats.as_dict(self.turn2),
                "per_category": self.per_category, "scores": self.scores, "parse_failures": self.parse_failures}


def grade_items(questions: Sequence[MTQuestion], answers: Sequence[Sequence[str]]
                ) -> tuple[list[GradeItem], list[tuple[int, int]]]:
    """One item per answered turn (with earlier turns as context), and its (question, turn)."""
    items, where = [], []
    for qi, (q, ans) in enumerate(zip(questions, answers)):
        for t, (turn, answer) in enumerate(zip(q.turns, ans)):
            ref = q.reference[t] if q.reference and t < len(q.reference) else None
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

    def per_question(turn: int | None) -> list[float]:
        vals = []
        for row in scores:
            got = [s for k, s in enumerate(row) if s is not None and (turn is None or k == turn)]
            if got:
                vals.append(float(np.mean(got)))
        return vals

    def ci(vals: list[float]) -> stats.Estimate | None:
        return stats.mean_ci(vals, n_boot=n_boot, seed=seed) if vals else None

    by_cat: dict[str, list[float]] = defaultdict(list)
    for q, row in zip(questions, scores):
        by_cat[q.category].extend(s for s in row if s is not None)
    # n counts questions: the bootstrap unit, since a question's two turns are not independent.
    return Scores(ci(per_question(None)), ci(per_question(0)), ci(per_question(1)),
                  {c: float(np.mean(v)) for c, v in sorted(by_cat.items()) if v}, scores, failures)
