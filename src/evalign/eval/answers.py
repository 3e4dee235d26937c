"""A model's answers to an evaluation set, through the run store's generation cache.

Multi-turn questions are answered turn by turn: turn 2 sees the question's first turn and
the model's own first answer, as in MT-Bench. MT answers are sampled at FastChat's
temperature for their category (``mt_temperatures="fastchat"``, the table in
:mod:`evalign.eval.mt_bench`; 0 is greedy) or at ``params.temperature`` (``"fixed"``); the
win-rate prompts always use ``params``. Prompts that share decoding parameters go to the
model in one batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from evalign.backends.base import LLM, Conversation, GenParams
from evalign.generation import cached_generate, user
from evalign.store import RunStore
from evalign.eval.formats import MTQuestion
from evalign.eval.mt_bench import TemperatureMode, answer_temperature
from evalign.eval.sets import EvalPrompt


def mt_params(question: MTQuestion, params: GenParams, mode: TemperatureMode) -> GenParams:
    """The decoding parameters of every turn of ``question``'s answer."""
    return dataclasses.replace(params, temperature=answer_temperature(question.category, mode, params.temperature))


def answer_all(
    llm: LLM, prompts: Sequence[EvalPrompt], questions: Sequence[MTQuestion], params: GenParams, seed: int,
    store: RunStore | None, mt_temperatures: TemperatureMode = "fastchat",
) -> tuple[list[str], list[list[str]]]:
    """(answers to the win-rate prompts, answers per turn to the multi-turn questions)."""
    mt: list[list[str]] = [[] for _ in questions]
    q_params = [mt_params(q, params, mt_temperatures) for q in questions]
    first_idx = [i for i, q in enumerate(questions) if q.turns]
    convs = [user(p.prompt) for p in prompts] + [user(questions[i].turns[0]) for i in first_idx]
    texts = _generate(store, llm, convs, [params] * len(prompts) + [q_params[i] for i in first_idx], seed,
                      "answering eval prompts")
    winrate = texts[: len(prompts)]
    for i, text in zip(first_idx, texts[len(prompts):]):
        mt[i].append(text)
    turns = max((len(q.turns) for q in questions), default=0)
    for t in range(1, turns):
        idx = [i for i, q in enumerate(questions) if len(q.turns) > t]
        convs = [_history(questions[i], mt[i], t) for i in idx]
        for i, text in zip(idx, _generate(store, llm, convs, [q_params[i] for i in idx], seed,
                                          f"answering MT turn {t + 1}")):
            mt[i].append(text)
    return winrate, mt


def _generate(store: RunStore | None, llm: LLM, convs: Sequence[Conversation], params: Sequence[GenParams],
              seed: int, description: str) -> list[str]:
    """One text per conversation, each with its own parameters (one batch where the backend
    samples mixed parameters together)."""
    gens, _ = cached_generate(store, llm, convs, params, [seed], description=description)
    return [row[0].text for row in gens]


def _history(question: MTQuestion, answers: list[str], turn: int) -> Conversation:
    conv: Conversation = []
    for k in range(turn):
        conv += [{"role": "user", "content": question.turns[k]}, {"role": "assistant", "content": answers[k]}]
    return conv + [{"role": "user", "content": question.turns[turn]}]
