"""Average scores with scripted judges: references, context, per-question means, log-prob grades."""

from __future__ import annotations

import math

import pytest

from evalign.backends.scripted import ScriptedLLM
from evalign.eval.formats import MTQuestion
from evalign.eval.score import judge_scores
from evalign.judge import GradeItem, Judge


def test_scores_show_references_and_context_and_average_per_question():
    seen = []

    def grade(conv, choices, prefix):
        seen.append(conv[-1]["content"])
        return [0.0 if c == "7" else -20.0 for c in choices]

    qs = [MTQuestion(1, "math", ["What is 2+2?", "And 3+3?"], ["4", "6"]),
          MTQuestion(2, "writing", ["Write a line.", "Shorter."], None)]
    answers = [["4", "6"], ["A line of verse.", "Verse."]]
    sc = judge_scores(Judge(ScriptedLLM(choice_fn=grade)), qs, answers, n_boot=200)
    assert sc.estimate.value == pytest.approx(7.0, abs=1e-3) and sc.estimate.n == 2
    assert sc.turn1.value == pytest.approx(7.0, abs=1e-3) and sc.turn2.n == 2
    assert set(sc.per_category) == {"math", "writing"}
    math_t2 = next(p for p in seen if "And 3+3?" in p)
    assert "<reference_answer>\n6\n</reference_answer>" in math_t2
    assert "What is 2+2?" in math_t2  # turn 1 shown as context
    assert not any("<reference_answer>" in p for p in seen if "Write a line." in p and "Shorter." not in p)


def test_grades_from_logprobs_are_expected_values():
    def two_peaks(conv, choices, prefix):
        return [math.log(0.5) if c in ("2", "10") else -30.0 for c in choices]

    [v] = Judge(ScriptedLLM(choice_fn=two_peaks)).grade([GradeItem("Q", "A")])
    assert v.score == pytest.approx(6.0, abs=1e-6)
