"""MT-Bench's rules as FastChat's ``llm_judge`` applies them (fschat 0.2.36 from PyPI).

Three rules decide what an MT-Bench score means, and each is copied here from FastChat's
``fastchat/llm_judge/common.py`` so evalign's answers, judge prompts and averages follow it:

* the categories whose judge prompt shows a reference answer (``NEED_REF_CATS``); every
  other category is graded without one, even where ``question.jsonl`` carries a
  ``reference`` field;
* the reference shown is the judge's reference-answer file
  (``reference_answer/gpt-4.jsonl``), never the question file's inline field, which
  ``gen_judgment.py`` does not read;
* answers are sampled at a temperature per category (``temperature_config``, 0.7 for a
  category not in it, 0 meaning greedy), as ``gen_model_answer.py`` does.
"""

from __future__ import annotations

from typing import Literal

from evalign.eval.formats import MTQuestion, QuestionId

FASTCHAT_VERSION = "0.2.36"

#: ``common.NEED_REF_CATS``: categories whose grading shows the reference answer.
NEED_REF_CATS = ("math", "reasoning", "coding", "arena-hard-200")

#: ``common.temperature_config``: answer sampling temperature per category.
TEMPERATURES = {
    "writing": 0.7,
    "roleplay": 0.7,
    "extraction": 0.0,
    "math": 0.0,
    "coding": 0.0,
    "reasoning": 0.0,
    "stem": 0.1,
    "humanities": 0.1,
    "arena-hard-200": 0.0,
}
#: ``gen_model_answer.py``'s temperature for a category missing from the table.
DEFAULT_TEMPERATURE = 0.7

TemperatureMode = Literal["fastchat", "fixed"]


def needs_reference(category: str) -> bool:
    """Whether FastChat's judge sees a reference for this category (exact, case-sensitive)."""
    return category in NEED_REF_CATS


def shown_reference(question: MTQuestion, turn: int) -> str | None:
    """The reference the judge is shown for ``turn`` (0-based): None outside NEED_REF_CATS."""
    if not needs_reference(question.category) or not question.reference or turn >= len(question.reference):
        return None
    return question.reference[turn]


def answer_temperature(category: str, mode: TemperatureMode, fixed: float) -> float:
    """The sampling temperature for an answer to a question of ``category``.

    ``fastchat``: FastChat's table (``DEFAULT_TEMPERATURE`` outside it); ``fixed``: ``fixed``
    for every category (evalign's ``eval.answer_sampling.temperature``).
    """
    if mode == "fixed":
        return fixed
    if mode != "fastchat":
        raise ValueError(f"unknown MT temperature mode {mode!r}; use fastchat or fixed")
    return TEMPERATURES.get(category, DEFAULT_TEMPERATURE)


def attach_references(questions: list[MTQuestion], references: dict[QuestionId, list[str]]) -> None:
    """Give each question its reference-answer file entry, replacing an inline reference.

    FastChat grades against ``reference_answer/<judge>.jsonl`` only; the inline field of the
    official ``question.jsonl`` differs from it for most math, reasoning and coding questions.
    A question the file lacks keeps its inline reference (the built-in set has no file).
    """
    for q in questions:
        if q.question_id in references:
            q.reference = list(references[q.question_id])
