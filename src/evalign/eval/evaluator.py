"""Evaluation of policies on a run store: answers, win rates, average scores.

The same code serves ``evalign eval`` (any model against any baseline), the loop's final
evaluation and the ablation runner. Answers and judgments go through the store's caches, so
re-evaluating costs no generation and no judge call.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from evalign.backends.base import GenParams
from evalign.config import EvalConfig
from evalign.eval import alpaca
from evalign.eval.answers import answer_all
from evalign.eval.score import Scores, judge_scores
from evalign.eval.sets import EvalPrompt, load_mt_questions, load_winrate_prompts
from evalign.eval.winrate import WinRate, judge_win_rate
from evalign.judge.judge import Judge
from evalign.backends.pool import ModelPool
from evalign.store import RunStore

log = logging.getLogger(__name__)


@dataclass
class Answers:
    """A model's answers: one per win-rate prompt, and per MT question one per turn."""

    model_id: str
    winrate_answers: list[str]
    mt: list[list[str]]


class Evaluator:
    def __init__(self, cfg: EvalConfig, store: RunStore | None, pool: ModelPool, seed: int = 0) -> None:
        self.cfg = cfg
        self.store = store
        self.pool = pool
        self.seed = cfg.seed + seed
        self.prompts: list[EvalPrompt] = load_winrate_prompts(cfg.winrate_prompts, cfg.winrate_limit)
        self.questions = load_mt_questions(cfg.mt_questions, cfg.mt_references, cfg.mt_limit)
        self.params = GenParams.from_config(cfg.answer_sampling)
        self.alpaca_reference = alpaca.load_reference(cfg.alpaca_eval_data) if cfg.alpaca_eval_data else None
        self._judge: Judge | None = None

    @property
    def judge(self) -> Judge:
        if self._judge is None:
            self._judge = Judge(self.pool.get(self.cfg.judge), mode=self.cfg.judge_mode, store=self.store,
                                parse_retries=self.cfg.parse_retries,
                                max_answer_tokens=self.cfg.max_judge_answer_tokens, seed=self.seed,
                                variant=self.cfg.judge_variant, screen=self.cfg.screen_injections)
        return self._judge

    def texts(self) -> list[str]:
        """Every evaluation prompt text (for decontaminating evolved prompts)."""
        return [p.prompt for p in self.prompts] + [t for q in self.questions for t in q.turns]

    def answers(self, llm, *, seed_offset: int = 0) -> Answers:
        seed = self.seed + seed_offset
        winrate_answers, mt = answer_all(llm, self.prompts, self.questions, self.params, seed, self.store,
                                       self.cfg.mt_temperatures)
        return Answers(llm.model_id, winrate_answers, mt)

    def win_rate(self, model: Answers, baseline: Answers, label: str = "") -> WinRate:
        return judge_win_rate(self.judge, [p.prompt for p in self.prompts], model.winrate_answers, baseline.winrate_answers,
                              n_boot=self.cfg.bootstrap_samples, seed=self.seed,
                              description=f"judging {label or 'win rate'}", alpaca_reference=self.alpaca_reference)

    def scores(self, model: Answers, label: str = "") -> Scores:
        return judge_scores(self.judge, self.questions, model.mt, n_boot=self.cfg.bootstrap_samples,
                            seed=self.seed, description=f"grading {label or 'answers'}")


def store_win_rate(store: RunStore, stage_key: str, arm: str, name: str, wr: WinRate) -> None:
    e = wr.estimate
    store.put_metric(stage_key, arm, name, e.value if e else None, e.ci_low if e else None,
                     e.ci_high if e else None, wr.n, wr.as_dict())


def store_scores(store: RunStore, stage_key: str, arm: str, name: str, sc: Scores) -> None:
    e = sc.estimate
    store.put_metric(stage_key, arm, name, e.value if e else None, e.ci_low if e else None,
                     e.ci_high if e else None, e.n if e else 0, sc.as_dict())


def load_metric_detail(row) -> dict[str, Any]:
    return json.loads(row["detail"] or "{}")
