"""The one ``LLM`` protocol every backend implements.

Two operations cover everything eva needs from a language model:

* ``generate``: batched chat generation, ``len(seeds)`` samples per conversation, sample j
  drawn with ``seeds[j]`` (mixed with the conversation, so equal seeds on different prompts
  still give independent samples). Same model, prompt, params and seed -> same text.
* ``choice_logprobs``: log-probabilities of a fixed set of continuations (``"A"``/``"B"``,
  ``"1"``..``"10"``) after the assistant turn has started with ``assistant_prefix``. Judges
  read verdicts from these instead of parsing generated text when a backend can give them.
"""

from __future__ import annotations

import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from evalign.hashing import seed_of

Message = dict[str, str]
Conversation = list[Message]


@dataclass(frozen=True)
class GenParams:
    max_new_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.9
    stop: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, cfg, stop: Sequence[str] = ()) -> "GenParams":
        return cls(cfg.max_new_tokens, cfg.temperature, cfg.top_p, tuple(stop))


@dataclass
class Generation:
    text: str
    seed: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"  # "stop" or "length"


@dataclass
class CallStats:
    """Counters a backend keeps so stages can report calls, tokens and time."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, calls: int = 0, prompt_tokens: int = 0, completion_tokens: int = 0, seconds: float = 0.0) -> None:
        with self._lock:
            self.calls += calls
            self.prompt_tokens += prompt_tokens
            self.completion_tokens += completion_tokens
            self.seconds += seconds

    def snapshot(self) -> dict[str, float]:
        return {
            "calls": self.calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "seconds": round(self.seconds, 3),
        }


def sample_seed(seed: int, conversation: Conversation) -> int:
    """A 63-bit seed from a sample seed and the conversation text.

    Mixing in the prompt keeps sample j of different prompts independent while the result
    stays a pure function of (seed, prompt), whatever the batch it is computed in.
    """
    # sha256 over str(seed) followed by "\x00" role "\x01" content for every message.
    return seed_of(seed, *(f"\x00{m['role']}\x01{m['content']}" for m in conversation), sep="")


Device = Literal["cpu", "gpu", "gpu-if-present", "remote", "none"]


@dataclass(frozen=True)
class BackendTraits:
    """What a backend is, declared on its class, so callers ask it instead of matching names."""

    #: ``choice_logprobs`` is exact (False: read from an API's top-k tokens).
    exact_logprobs: bool = True
    #: Served over HTTP by someone else: billed (the run's Budget applies) and already
    #: concurrent (kept in the driver, never sharded over Ray workers).
    remote_api: bool = False
    #: Where it computes; "none" for a backend that runs no model.
    device: Device = "cpu"
    #: The weights ``model`` names: "gguf" (a GGUF file), "hf" (a checkpoint directory or hub
    #: id), None when ``model`` names no local weights (an API model, a script).
    weights: Literal["gguf", "hf"] | None = "hf"
    #: Spreads one model over ``tensor_parallel_size`` GPUs.
    tensor_parallel: bool = False

    @property
    def wants_gpu(self) -> bool:
        return self.device in ("gpu", "gpu-if-present")

    @property
    def budgeted(self) -> bool:
        return self.remote_api

    @property
    def ray_shardable(self) -> bool:
        return not self.remote_api


class LLM(ABC):
    """Batched chat generation and next-token choice log-probabilities."""

    #: Set by each backend class (wrappers such as LazyLLM have none).
    traits: ClassVar[BackendTraits]

    #: Identity used in cache keys: the model and anything that changes its outputs.
    model_id: str
    #: Whether ``choice_logprobs`` is exact (False for APIs that return only top-k).
    exact_logprobs: bool = True

    def __init__(self) -> None:
        self.stats = CallStats()

    @abstractmethod
    def generate(
        self, conversations: Sequence[Conversation], params: GenParams, seeds: Sequence[int]
    ) -> list[list[Generation]]:
        """For each conversation, one Generation per seed, in seed order."""

    def generate_each(
        self, conversations: Sequence[Conversation], params: Sequence[GenParams], seeds: Sequence[int]
    ) -> list[list[Generation]]:
        """``generate`` with each conversation's own sampling params (an evaluation's win-rate
        prompts and its MT questions, whose temperature FastChat sets per category).

        By default one ``generate`` call per distinct params; a backend that can sample rows
        with different params in one batch overrides it (transformers).
        """
        if len(params) != len(conversations):
            raise ValueError(f"{len(conversations)} conversations but {len(params)} sampling params")
        out: list[list[Generation]] = [[] for _ in conversations]
        groups: dict[GenParams, list[int]] = {}
        for i, p in enumerate(params):
            groups.setdefault(p, []).append(i)
        for p, idx in groups.items():
            for i, row in zip(idx, self.generate([conversations[i] for i in idx], p, seeds)):
                out[i] = row
        return out

    @abstractmethod
    def choice_logprobs(
        self, conversations: Sequence[Conversation], choices: Sequence[str], assistant_prefix: str = ""
    ) -> list[list[float]]:
        """For each conversation, log P(choice | conversation, assistant_prefix) per choice.

        A choice that is a proper prefix of another (``"1"`` of ``"10"``) gets the probability
        of stopping there, so the values over a prefix-free reading sum to at most 1.
        """

    def count_tokens(self, text: str) -> int:
        """Approximate token count; backends with a tokenizer override it."""
        return max(1, math.ceil(len(text) / 4))

    def truncate(self, text: str, max_tokens: int) -> str:
        """Cut ``text`` to at most ``max_tokens`` tokens (character estimate by default)."""
        limit = max_tokens * 4
        return text if len(text) <= limit else text[:limit]

    def close(self) -> None:
        """Free memory held by the model (GPU memory, llama.cpp context)."""

    def __enter__(self) -> "LLM":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ForwardingLLM(LLM):
    """An LLM that forwards to ``self.inner`` — the base of wrappers that add caching or
    lazy loading without changing what the model computes."""

    inner: LLM

    def generate(self, conversations, params, seeds):
        return self.inner.generate(conversations, params, seeds)

    def generate_each(self, conversations, params, seeds):
        return self.inner.generate_each(conversations, params, seeds)

    def choice_logprobs(self, conversations, choices, assistant_prefix=""):
        return self.inner.choice_logprobs(conversations, choices, assistant_prefix)

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def truncate(self, text: str, max_tokens: int) -> str:
        return self.inner.truncate(text, max_tokens)


def continuation_ids(encode: Callable[[str], list[int]], text: str, base: list[int], choice: str,
                     encode_alone: Callable[[str], list[int]] | None = None) -> list[int]:
    """Token ids of ``choice`` as it continues ``text`` (whose ids are ``base``).

    Tokenizing text + choice keeps merges across the boundary right; when the tokenizer
    rewrites the end of ``text`` instead, fall back to the choice tokenized alone.
    """
    full = encode(text + choice)
    if full[: len(base)] == base and len(full) > len(base):
        return full[len(base) :]
    return (encode_alone or encode)(choice)


def trie_choice_logprobs(
    choice_ids: Sequence[Sequence[int]],
    next_logprobs: Callable[[tuple[int, ...]], Sequence[float]],
) -> list[float]:
    """Exact log-probabilities of token sequences from next-token distributions.

    ``next_logprobs(prefix)`` returns the log-softmax over the vocabulary after the prompt
    followed by ``prefix`` (a tuple of choice tokens). It is called once per distinct proper
    prefix of the choices (the internal nodes of their trie), so ``"1"`` ... ``"10"`` cost two
    evaluations, ``"A"``/``"B"`` one. When a choice is a proper prefix of another, the mass of
    continuing into the longer choices is removed from it.
    """
    choice_ids = [tuple(c) for c in choice_ids]
    if any(len(c) == 0 for c in choice_ids):
        raise ValueError("a choice tokenized to nothing")
    internal = sorted({c[:i] for c in choice_ids for i in range(len(c))}, key=len)
    dists = {prefix: next_logprobs(prefix) for prefix in internal}
    out = []
    choice_set = set(choice_ids)
    for c in choice_ids:
        lp = sum(float(dists[c[:i]][c[i]]) for i in range(len(c)))
        if c in dists:  # c is itself a prefix of a longer choice
            nxt = {d[len(c)] for d in choice_set if len(d) > len(c) and d[: len(c)] == c}
            cont = sum(math.exp(float(dists[c][t])) for t in nxt)
            lp += math.log(max(1e-12, 1.0 - min(cont, 1.0)))
        out.append(lp)
    return out


class Timer:
    """Context manager that adds elapsed seconds to a backend's stats."""

    def __init__(self, stats: CallStats, calls: int = 1) -> None:
        self.stats, self.calls = stats, calls

    def __enter__(self) -> "Timer":
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.stats.add(calls=self.calls, seconds=time.perf_counter() - self.t0)
