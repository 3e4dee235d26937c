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
from evalign.store import RunStore, key_of, sha


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
    params: GenParams,
    seeds: Sequence[int],
    *,
    description: str = "generating",
    chunk: int = 16,
) -> tuple[list[list[Generation]], int]:
    """Generations for every conversation and seed, and how many were newly generated."""
    if store is None:
        with track(description, len(conversations) * len(seeds), "samples") as advance:
            out = []
            for i in range(0, len(conversations), chunk):
                part = llm.generate(conversations[i : i + chunk], params, seeds)
                out.extend(part)
                advance(len(part) * len(seeds))
        return out, len(conversations) * len(seeds)

    keys = [[generation_key(llm.model_id, c, params, s) for s in seeds] for c in conversations]
    hits = store.cached("generations", [k for row in keys for k in row])
    results: list[list[Generation | None]] = [[None] * len(seeds) for _ in conversations]
    todo: list[int] = []
    for i, row in enumerate(keys):
        for j, k in enumerate(row):
            if k in hits:
                h = hits[k]
                results[i][j] = Generation(h["text"], h["seed"], h["prompt_tokens"] or 0,
                                           h["completion_tokens"] or 0, h["finish_reason"] or "stop")
        if any(r is None for r in results[i]):
            todo.append(i)
    new = 0
    with track(description, len(todo) * len(seeds), "samples") as advance:
        for start in range(0, len(todo), chunk):
            idx = todo[start : start + chunk]
            gens = llm.generate([conversations[i] for i in idx], params, seeds)
            rows = []
            for i, row in zip(idx, gens):
                for j, g in enumerate(row):
                    if results[i][j] is None:
                        results[i][j] = g
                        new += 1
                    rows.append({
                        "key": keys[i][j], "model_id": llm.model_id,
                        "prompt_sha": conversation_sha(conversations[i]), "params_sha": params_sha(params),
                        "sample_index": j, "seed": g.seed, "text": g.text, "prompt_tokens": g.prompt_tokens,
                        "completion_tokens": g.completion_tokens, "finish_reason": g.finish_reason,
                    })
            store.put("generations", rows)
            advance(len(idx) * len(seeds))
    return results, new  # type: ignore[return-value]


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
