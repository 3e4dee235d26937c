"""Reward models behind one interface: ``score(prompts, responses) -> rewards``.

* ``classifier`` — an AutoModelForSequenceClassification reward model (ArmoRM, Skywork-
  Reward ...), scored in batches; ``trust_remote_code`` only when the config says so.
* ``judge_pointwise`` — an LLM judge's expected 1–10 grade from next-token probabilities.
* ``judge_pairwise_anchor`` — the probability that a response beats an anchor response for
  the same prompt (the prompt's first sample), both orders averaged to cancel position bias;
  the anchor itself scores 0.5.

Scores are cached in the run store per (reward model, prompt, response[, anchor]). Each
kind is registered in :data:`evalign.registry.REWARD_KINDS` as a builder
``(RewardConfig, llm, store) -> RewardModel``.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence

from evalign.backends.base import LLM
from evalign.config import ModelSpec, RewardConfig
from evalign.hashing import key_of, sha
from evalign.judge.judge import Judge
from evalign.judge.prompts import GRADE_VERSION
from evalign.judge.screen import SCREEN_VERSION
from evalign.judge.verdicts import GradeItem, PairItem
from evalign.progress import track
from evalign.registry import REWARD_KINDS
from evalign.store import RunStore, cache_through

log = logging.getLogger(__name__)


class RewardModel(ABC):
    reward_id: str
    #: Whether a stored reward is a model call of its own (a classifier's score) rather than
    #: read off judgments the judge stored, which count as the calls.
    scores_are_calls = False

    def score(
        self, prompts: Sequence[str], responses: Sequence[Sequence[str]], store: RunStore | None = None
    ) -> list[list[float]]:
        """Rewards for ``responses[i][j]`` to ``prompts[i]``, through the store's cache."""
        keys = [[self._key(p, rs, j) for j in range(len(rs))] for p, rs in zip(prompts, responses)]
        values, _ = cache_through(
            store, "rewards", keys,
            compute=lambda items: self._score([prompts[i] for i in items], [responses[i] for i in items]),
            to_row=lambda i, j, s: {"reward_id": self.reward_id, "prompt_sha": sha(prompts[i]),
                                    "response_sha": sha(responses[i][j]), "score": float(s)},
            from_row=lambda row: row["score"], chunk=None, calls=self.scores_are_calls,
        )
        return [[float(s) for s in row] for row in values]

    def _key(self, prompt: str, responses: Sequence[str], j: int) -> str:
        return key_of("reward", self.reward_id, sha(prompt), sha(responses[j]))

    @abstractmethod
    def _score(self, prompts: Sequence[str], responses: Sequence[Sequence[str]]) -> list[list[float]]:
        """Uncached scores."""

    def close(self) -> None:
        pass


def _screen_suffix(judge: Judge) -> str:
    """Rewards of a screening judge differ for answers that address it (judge/screen.py)."""
    return f":screen:{SCREEN_VERSION}" if judge.screen else ""


class JudgePointwiseReward(RewardModel):
    def __init__(self, judge: Judge) -> None:
        self.judge = judge
        self.reward_id = (f"judge_pointwise:{judge.judge_id}:{GRADE_VERSION}:{judge.mode}:{judge.max_answer_tokens}"
                          + _screen_suffix(judge))

    def _score(self, prompts, responses):
        items = [GradeItem(p, r) for p, rs in zip(prompts, responses) for r in rs]
        verdicts = self.judge.grade(items, description="scoring responses")
        it = iter(verdicts)
        # A failed parse (generate mode only) scores the scale's midpoint and is logged.
        return [[(v.score if v.score is not None else 5.5) for v in (next(it) for _ in rs)] for rs in responses]


class JudgePairwiseAnchorReward(RewardModel):
    def __init__(self, judge: Judge) -> None:
        self.judge = judge
        self.reward_id = (f"judge_pairwise_anchor:{judge.judge_id}:{judge.pair_version}:{judge.mode}:"
                          f"{judge.max_answer_tokens}")

    def _key(self, prompt, responses, j):
        return key_of("reward", self.reward_id, sha(prompt), sha(responses[j]), sha(responses[0]))

    def _score(self, prompts, responses):
        items, where = [], []
        for i, (p, rs) in enumerate(zip(prompts, responses)):
            for j, r in enumerate(rs[1:], start=1):
                items += [PairItem(p, r, rs[0]), PairItem(p, rs[0], r)]
                where.append((i, j))
        verdicts = self.judge.compare(items, description="scoring vs anchor")
        out = [[0.5] * len(rs) for rs in responses]
        for n, (i, j) in enumerate(where):
            first, second = verdicts[2 * n], verdicts[2 * n + 1]
            p = self.judge.combine(first.p_a, second.p_a, items[2 * n])  # the judge variant's rule
            out[i][j] = 0.5 if p is None else p
        return out


class ClassifierReward(RewardModel):
    """A sequence-classification reward model over the chat-formatted (prompt, response)."""

    scores_are_calls = True

    def __init__(self, spec: ModelSpec, batch_size: int = 8, max_length: int = 4096) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from evalign import weights as models

        path = models.resolve_hf_dir(spec.model)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if (spec.dtype == "bfloat16" or (spec.dtype == "auto" and self.device == "cuda")) else torch.float32
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=spec.trust_remote_code)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            path, dtype=dtype, trust_remote_code=spec.trust_remote_code, use_safetensors=True
        ).to(self.device).eval()
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.batch_size, self.max_length = batch_size, max_length
        self.reward_id = f"classifier:{models.model_fingerprint(spec.model)}"

    def _score(self, prompts, responses):
        import torch

        texts = [
            self.tokenizer.apply_chat_template(
                [{"role": "user", "content": p}, {"role": "assistant", "content": r}], tokenize=False
            )
            for p, rs in zip(prompts, responses) for r in rs
        ]
        flat: list[float] = []
        with track("scoring responses", len(texts), "responses") as advance, torch.inference_mode():
            for s in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(texts[s : s + self.batch_size], return_tensors="pt", padding=True,
                                       truncation=True, max_length=self.max_length, add_special_tokens=False)
                out = self.model(**batch.to(self.device))
                scores = getattr(out, "score", None)  # ArmoRM exposes .score
                if scores is None:
                    scores = out.logits[:, 0]
                flat.extend(float(x) for x in scores.float().reshape(-1).cpu())
                advance(len(batch["input_ids"]))
        it = iter(flat)
        return [[next(it) for _ in rs] for rs in responses]

    def close(self) -> None:
        self.model = None


def _reward_judge(cfg: RewardConfig, llm: LLM | None, store: RunStore | None) -> Judge:
    if llm is None:
        raise ValueError("judge rewards need an LLM")
    return Judge(llm, mode="logprobs" if llm.exact_logprobs else "generate", store=store,
                 max_answer_tokens=cfg.max_response_tokens, screen=cfg.screen_injections)


@REWARD_KINDS.register("judge_pointwise")
def _judge_pointwise(cfg: RewardConfig, llm: LLM | None, store: RunStore | None) -> RewardModel:
    return JudgePointwiseReward(_reward_judge(cfg, llm, store))


@REWARD_KINDS.register("judge_pairwise_anchor")
def _judge_pairwise_anchor(cfg: RewardConfig, llm: LLM | None, store: RunStore | None) -> RewardModel:
    return JudgePairwiseAnchorReward(_reward_judge(cfg, llm, store))


@REWARD_KINDS.register("classifier")
def _classifier(cfg: RewardConfig, llm: LLM | None, store: RunStore | None) -> RewardModel:
    return ClassifierReward(cfg.model)


def build_reward_model(cfg: RewardConfig, llm: LLM | None = None, store: RunStore | None = None) -> RewardModel:
    """A RewardModel from config; judge kinds take an already loaded judge LLM."""
    return REWARD_KINDS.get(cfg.kind)(cfg, llm, store)
