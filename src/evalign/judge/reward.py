"""Reward models behind one interface: ``score(prompts, responses) -> rewards``.

* ``classifier`` — an AutoModelForSequenceClassification reward model (ArmoRM, Skywork-
  Reward ...), scored in batches; ``trust_remote_code`` only when the config says so, and
  the config's ``revision`` pins both the weights and that code.
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
from evalign.errors import ModelNotFoundError
from evalign.hashing import key_of, sha
from evalign.hf_compat import restore_removed_doc_names
from evalign.judge.judge import Judge
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


class JudgePointwiseReward(RewardModel):
    def __init__(self, judge: Judge) -> None:
        self.judge = judge
        # the judge's grade version: the template's for the base judge, another when it screens
        self.reward_id = f"judge_pointwise:{judge.judge_id}:{judge.grade_version}:{judge.mode}:{judge.max_answer_tokens}"

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


#: Bumped when classifier scores change for the same model and texts (cache keys carry it).
#: 2: scores read at the true sequence end whatever the pad token; responses, not the chat's
#: closing tokens, are truncated.
CLASSIFIER_SCORING_VERSION = 2


class ClassifierReward(RewardModel):
    """A sequence-classification reward model over the chat-formatted (prompt, response).

    Loading honours ``spec.revision`` for the weights, the tokenizer and (``code_revision``)
    the remote code; with ``trust_remote_code`` the docstring names transformers 5 removed
    are restored first (:mod:`evalign.hf_compat`), which ArmoRM's remote code imports.

    The score is the output's ``score`` (ArmoRM) or else ``logits[:, 0]``. Reward models pool
    at the sequence end, found from ``config.pad_token_id`` (ArmoRM and older transformers:
    the first pad token - 1; transformers 5: the rightmost non-pad token). Llama-3 RMs have
    no pad token and the usual fallback, pad = eos = ``<|eot_id|>``, puts that end at the
    first ``<|eot_id|>`` (the end of the user turn) or just before the last one. So each
    batch is right-padded (position ids stay those of an unpadded row) with a token id that
    occurs in none of its rows, and that id is set as ``config.pad_token_id`` for the forward
    pass: either rule then lands on each row's last real token, and a batched score equals
    the one-at-a-time score.

    A chat over ``max_length`` tokens is shortened by cutting the response's tail (and the
    prompt's tail when the prompt alone takes over half the room), then re-rendered, so the
    template's closing tokens, where ArmoRM reads its score, are always kept.
    """

    scores_are_calls = True

    def __init__(self, spec: ModelSpec, batch_size: int = 8, max_length: int = 4096,
                 max_response_tokens: int | None = None, *, model=None, tokenizer=None) -> None:
        """``model`` and ``tokenizer`` (both or neither): already built ones, e.g. made on a
        GPU, used as they are instead of loading ``spec.model``, which then only names them
        (``reward_id``)."""
        from evalign import weights as models

        if (model is None) != (tokenizer is None):
            raise ValueError("ClassifierReward takes a built model together with its tokenizer")
        if model is None:
            self.tokenizer, self.model, self.device = _load_classifier(spec)
        else:
            self.tokenizer, self.model = tokenizer, model.eval()
            self.device = str(next(model.parameters()).device)
        if spec.chat_template and not self.tokenizer.chat_template:
            self.tokenizer.chat_template = spec.chat_template
        if not self.tokenizer.chat_template:
            raise ModelNotFoundError(f"reward model '{spec.model}' has no chat template; set chat_template")
        if hasattr(self.model.config, "use_cache"):
            self.model.config.use_cache = False  # one forward pass: no KV cache to build
        self.batch_size, self.max_length, self.max_response_tokens = batch_size, max_length, max_response_tokens
        self.reward_id = (f"classifier:{CLASSIFIER_SCORING_VERSION}:{models.model_fingerprint(spec.model)}"
                          + (f"@{spec.revision}" if spec.revision else "")
                          + (f":r{max_response_tokens}" if max_response_tokens else ""))

    # ------------------------------------------------------------------ tokens

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _chat_ids(self, prompt: str, response: str) -> list[int]:
        text = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}], tokenize=False
        )
        return self._ids(text)  # the template writes its own bos

    def encode(self, prompt: str, response: str) -> list[int]:
        """Token ids of the chat, at most ``max_length``: the response's tail is cut first (to
        ``max_response_tokens`` when set, as judge rewards cut it)."""
        if self.max_response_tokens is not None:
            r_ids = self._ids(response)
            if len(r_ids) > self.max_response_tokens:
                response = self.tokenizer.decode(r_ids[: self.max_response_tokens])
        ids = self._chat_ids(prompt, response)
        if len(ids) <= self.max_length:
            return ids
        p_ids, r_ids = self._ids(prompt), self._ids(response)
        room = self.max_length - max(0, len(ids) - len(p_ids) - len(r_ids))  # less the template's own tokens
        p_keep = min(len(p_ids), max(room - len(r_ids), room // 2, 0))
        r_keep = min(len(r_ids), max(room - p_keep, 0))
        decode = self.tokenizer.decode
        while True:
            ids = self._chat_ids(decode(p_ids[:p_keep]), decode(r_ids[:r_keep]))
            over = len(ids) - self.max_length
            if over <= 0:
                return ids
            # re-tokenising across a cut (or the template trimming) can shift a few tokens:
            # cut further on a side already cut, the response first
            if 0 < r_keep < len(r_ids) or (r_keep > 0 and p_keep in (0, len(p_ids))):
                r_keep = max(0, r_keep - over)
            elif p_keep > 0:
                p_keep = max(0, p_keep - over)
            else:
                raise ValueError(f"the reward model's chat template alone is {len(ids)} tokens, "
                                 f"over max_length {self.max_length}")

    def _pad_id(self, rows: Sequence[Sequence[int]]) -> int:
        """A token id in none of ``rows``: the tokenizer's pad if it qualifies, else the highest free id."""
        used = set().union(*map(set, rows))
        pad = self.tokenizer.pad_token_id
        if pad is not None and pad not in used:
            return int(pad)
        try:
            n = int(self.model.get_input_embeddings().num_embeddings)
        except (AttributeError, NotImplementedError, TypeError):  # remote code without the usual accessors
            n = int(getattr(self.model.config, "vocab_size", None) or len(self.tokenizer))
        return next(t for t in range(n - 1, -1, -1) if t not in used)

    # ------------------------------------------------------------------ scoring

    def _forward(self, rows: Sequence[Sequence[int]]) -> list[float]:
        import torch

        pad = self._pad_id(rows)
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, : len(r)] = 1
        self.model.config.pad_token_id = pad
        text_config = getattr(self.model.config, "get_text_config", lambda: None)()
        if text_config is not None and text_config is not self.model.config:
            text_config.pad_token_id = pad  # what transformers' own classifiers read
        out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device))
        scores = getattr(out, "score", None)  # ArmoRM's output dataclass
        if scores is None:
            scores = out.logits if hasattr(out, "logits") else out[0]
        scores = scores.float()
        if scores.dim() == 2:
            scores = scores[:, 0]
        return [float(x) for x in scores.reshape(-1).cpu()]

    def _score(self, prompts, responses):
        import torch

        rows = [self.encode(p, r) for p, rs in zip(prompts, responses) for r in rs]
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))  # similar lengths share a batch
        flat = [0.0] * len(rows)
        with track("scoring responses", len(rows), "responses") as advance, torch.inference_mode():
            for s in range(0, len(order), self.batch_size):
                idx = order[s : s + self.batch_size]
                for i, v in zip(idx, self._forward([rows[i] for i in idx]), strict=True):
                    flat[i] = v
                advance(len(idx))
        it = iter(flat)
        return [[next(it) for _ in rs] for rs in responses]

    def close(self) -> None:
        self.model = None


def _load_classifier(spec: ModelSpec):
    """(tokenizer, model on its device in eval mode, device) for ``spec``."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from evalign import weights as models

    path = models.resolve_hf_dir(spec.model)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if (spec.dtype == "bfloat16" or (spec.dtype == "auto" and device == "cuda")) else torch.float32
    hub = {"revision": spec.revision} if spec.revision else {}
    if spec.trust_remote_code:
        restore_removed_doc_names(("llama", *_config_model_type(path, hub)))
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=spec.trust_remote_code, **hub)
        model = AutoModelForSequenceClassification.from_pretrained(
            path, dtype=dtype, trust_remote_code=spec.trust_remote_code, use_safetensors=True,
            **hub, **({"code_revision": spec.revision} if spec.revision else {}),
        ).to(device).eval()
    except OSError as exc:
        raise ModelNotFoundError(
            f"reward model '{spec.model}' could not be loaded with transformers "
            f"({str(exc).splitlines()[0][:160]}); check the path or hub id (and revision)"
        ) from None
    return tokenizer, model, device


def _config_model_type(path: str, hub: dict) -> tuple[str, ...]:
    """The checkpoint's ``model_type`` from its config.json, read without running its code."""
    try:
        from transformers import PretrainedConfig

        config, _ = PretrainedConfig.get_config_dict(path, **hub)
    except (OSError, ValueError):  # unreachable hub id, no config: from_pretrained reports it properly
        return ()
    model_type = config.get("model_type")
    return (model_type,) if isinstance(model_type, str) and model_type else ()


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
    return ClassifierReward(cfg.model, batch_size=cfg.model.batch_size, max_response_tokens=cfg.max_response_tokens)


def build_reward_model(cfg: RewardConfig, llm: LLM | None = None, store: RunStore | None = None) -> RewardModel:
    """A RewardModel from config; judge kinds take an already loaded judge LLM."""
    return REWARD_KINDS.get(cfg.kind)(cfg, llm, store)
