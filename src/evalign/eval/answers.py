"""A model's answers to an evaluation set, through the run store's generation cache.

Multi-turn questions are answered turn by turn: turn 2 sees the question's first turn and
the model's own first answer, as in MT-Bench. The single-turn prompts and every question's
first turn go to the model in one batch.
"""

from __future__ import annotations

from collections.abc import Sequence

from evalign.backends.base import LLM, Conversation, GenParams
from evalign.generation import cached_generate, user
from evalign.store import RunStore
from evalign.eval.formats import MTQuestion
from evalign.eval.sets import EvalPrompt


def answer_all(
    llm: LLM, prompts: Sequence[EvalPrompt], questions: Sequence[MTQuestion], params: GenParams, seed: int,
    store: RunStore | None,
) -> tuple[list[str], list[list[str]]]:
    """(answers to the win-rate prompts, answers per turn to the multi-turn questions)."""
    mt: list[list[str]] = [[] for _ in questions]
    first = [user(p.prompt) for p in prompts] + [user(q.turns[0]) for q in questions if q.turns]
    gens, _ = cached_generate(store, llm, first, params, [seed], description="answering eval prompts")
    texts = [row[0].text for row in gens]
    winrate, rest = texts[: len(prompts)], iter(texts[len(prompts):])
    for i, q in enumerate(questions):
        if q.turns:
            mt[i].append(next(rest))
    turns = max((len(q.turns) for q in questions), default=0)
    for t in range(1, turns):
        idx = [i for i, q in enumerate(questions) if len(q.turns) > t]
        convs = [_history(questions[i], mt[i], t) for i in idx]
        gens, _ = cached_generate(store, llm, convs, params, [seed], description=f"answering MT turn {t + 1}")
        for i, row in zip(idx, gens):
            mt[i].append(row[0].text)
    return winrate, mt


def _history(question: MTQuestion, answers: list[str], turn: int) -> Conversation:
    conv: Conversation = []
    for k in range(turn):
        conv += [{"role": "user", "content": question.turns[k]}, {"role": "assistant", "content": answers[k]}]
    return conv + [{"role": "user", "content": question.turns[turn]}]
