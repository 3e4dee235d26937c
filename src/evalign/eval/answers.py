"""A model's answers to an evaluation set, through the run store's generation cache.

Multi-turn questions are answered turn by turn: turn 2 sees the question's first turn and
the model's own first answer, as in MT-Bench.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..backends.base import LLM, GenParams
from ..generation import cached_generate, user
from ..store import RunStore
from .formats import MTQuestion
from .sets import EvalPrompt


def answer_prompts(
    llm: LLM, prompts: Sequence[EvalPrompt], params: GenParams, seed: int, store: RunStore | None
) -> list[str]:
    gens, _ = cached_generate(store, llm, [user(p.prompt) for p in prompts], params, [seed],
                              description="answering eval prompts")
    return [row[0].text for row in gens]


def answer_mt(
    llm: LLM, questions: Sequence[MTQuestion], params: GenParams, seed: int, store: RunStore | None
) -> list[list[str]]:
    answers: list[list[str]] = [[] for _ in questions]
    turns = max((len(q.turns) for q in questions), default=0)
    for t in range(turns):
        idx = [i for i, q in enumerate(questions) if len(q.turns) > t]
        convs = []
        for i in idx:
            conv = []
            for k in range(t):
                conv += [{"role": "user", "content": questions[i].turns[k]},
                         {"role": "assistant", "content": answers[i][k]}]
            convs.append(conv + [{"role": "user", "content": questions[i].turns[t]}])
        gens, _ = cached_generate(store, llm, convs, params, [seed], description=f"answering MT turn {t + 1}")
        for i, row in zip(idx, gens):
            answers[i].append(row[0].text)
    return answers
