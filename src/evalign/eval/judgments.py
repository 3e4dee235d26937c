"""Judgments as records for export: what the judge was shown and what it said.

The official tools keep every judgment beside the scores (FastChat's ``model_judgment``,
Arena-Hard's ``games``, AlpacaEval's ``annotations.json``). These records carry the same
content, read back through the judge's cache, so exporting after an evaluation makes no new
judge call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from evalign.eval.formats import MTQuestion, QuestionId
from evalign.eval.score import grade_items
from evalign.judge.judge import Judge
from evalign.judge.verdicts import Verdict, pair_items


@dataclass(frozen=True)
class JudgedPair:
    """One win-rate prompt judged in both orders: ``model_first`` shows the model's answer
    as A, ``baseline_first`` the baseline's."""

    question_id: str
    instruction: str
    model: str
    baseline: str
    model_answer: str
    baseline_answer: str
    model_first: Verdict
    baseline_first: Verdict
    prompt_model_first: str
    prompt_baseline_first: str


@dataclass(frozen=True)
class GradedTurn:
    """One graded MT turn; ``turn`` counts from 1, as FastChat does."""

    question_id: QuestionId
    model: str
    turn: int
    verdict: Verdict
    user_prompt: str


def _user_text(conversation) -> str:
    return "\n\n".join(m["content"] for m in conversation if m["role"] != "assistant")


def judged_pairs(judge: Judge, question_ids: Sequence[str], questions: Sequence[str], model: str, baseline: str,
                 model_answers: Sequence[str], baseline_answers: Sequence[str]) -> list[JudgedPair]:
    """Both orders of every prompt, as :func:`evalign.eval.winrate.judge_win_rate` judged them."""
    items = pair_items(questions, model_answers, baseline_answers)
    verdicts = judge.compare(items, description="reading judgments")
    out = []
    for i, qid in enumerate(question_ids):
        first, second = items[2 * i], items[2 * i + 1]
        out.append(JudgedPair(
            qid, questions[i], model, baseline, model_answers[i], baseline_answers[i],
            verdicts[2 * i], verdicts[2 * i + 1],
            _user_text(judge.pair_conversation(first)), _user_text(judge.pair_conversation(second)),
        ))
    return out


def graded_turns(judge: Judge, questions: Sequence[MTQuestion], model: str,
                 answers: Sequence[Sequence[str]]) -> list[GradedTurn]:
    """Every graded turn, as :func:`evalign.eval.score.judge_scores` graded it."""
    items, where = grade_items(questions, answers)
    verdicts = judge.grade(items, description="reading grades")
    return [GradedTurn(questions[qi].question_id, model, t + 1, v, _user_text(judge.grade_conversation(item)))
            for item, (qi, t), v in zip(items, where, verdicts)]
