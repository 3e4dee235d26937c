"""Generation through the run store's cache.

Every (model, conversation, sampling params, seed) is generated once per run directory:
chunks are committed as they finish, so a killed stage loses at most one chunk, a rerun
costs nothing, and arms that ask for the same samples share them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from evalign.backends.base import LLM, Conversation, ForwardingLLM, Generation, GenParams
from evalign.progress import track
from evalign.hashing import key_of, sha
from evalign.store import CacheThrough, RunStore


def conversation_sha(conversation: Conversation) -> str:
    return sha(json.dumps(conversation, ensure_ascii=False, sort_keys=True))


def params_sha(params: GenParams) -> str:
    return sha(json.dumps([params.max_new_tokens, params.temperature, params.top_p, list(params.stop)]), 16)


def generation_key(model_id: str, conversation: Conversation, params: GenParams, seed: int) -> str:
    return key_of("gen", model_id, conversation_sha(conversation), params_sha(params), seed)


def cached_generate(
    store: RunStore | None,
    llm: LLM,
    conversations: Sequence[Conversation],
    params: GenParams | Sequence[GenParams],
    seeds: Sequence[int],
    *,
    description: str = "generating",
    chunk: int = 16,
) -> tuple[list[list[Generation]], int]:
    """Generations for every conversation and seed, and how many were newly generated.

    ``params`` is one set for all conversations, or one per conversation (then the missing
    ones go to ``llm.generate_each``, which samples mixed params in one batch where it can).
    """
    each = None if isinstance(params, GenParams) else list(params)
    if each is not None and len(each) != len(conversations):
        raise ValueError(f"{len(conversations)} conversations but {len(each)} sampling params")
    row_params = each or [params] * len(conversations)
    keys = [[generation_key(llm.model_id, c, p, s) for s in seeds] for c, p in zip(conversations, row_params)]
    look = CacheThrough(store, "generations", keys, _generation)

    def row(i: int, j: int, g: Generation) -> dict:
        return {"model_id": llm.model_id, "prompt_sha": conversation_sha(conversations[i]),
                "params_sha": params_sha(row_params[i]), "sample_index": j, "seed": g.seed, "text": g.text,
                "prompt_tokens": g.prompt_tokens, "completion_tokens": g.completion_tokens,
                "finish_reason": g.finish_reason}

    def generate(idx: list[int]) -> list[list[Generation]]:
        convs = [conversations[i] for i in idx]
        if each is None:
            return llm.generate(convs, params, seeds)  # type: ignore[arg-type]
        return llm.generate_each(convs, [each[i] for i in idx], seeds)

    with track(description, len(look.missing) * len(seeds), "samples") as advance:
        for idx in look.chunks(chunk):
            look.fill(idx, generate(idx), row)
            advance(len(idx) * len(seeds))
    return look.values, look.new


def _generation(h) -> Generation:
    return Generation(h["text"], h["seed"], h["prompt_tokens"] or 0, h["completion_tokens"] or 0,
                      h["finish_reason"] or "stop")


def user(text: str) -> Conversation:
    return [{"role": "user", "content": text}]


class CachedLLM(ForwardingLLM):
    """An LLM whose ``generate`` goes through the run store's cache (e.g. the creator's
    rewrites, so a killed evolve stage does not pay for its finished calls twice)."""

    def __init__(self, inner: LLM, store: RunStore | None, description: str = "generating") -> None:
        super().__init__()
        self.inner, self.store, self.description = inner, store, description
        self.model_id = inner.model_id
        self.exact_logprobs = inner.exact_logprobs
        self.new_calls = 0

    def generate(self, conversations, params, seeds):
        out, new = cached_generate(self.store, self.inner, conversations, params, seeds,
                                   description=self.description)
        self.new_calls += new
        return out

    def generate_each(self, conversations, params, seeds):
        return self.generate(conversations, list(params), seeds)
