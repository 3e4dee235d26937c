"""A scripted ``LLM`` for tests and dry runs: outputs come from Python functions.

Used wherever the behaviour under test is not the model's (the creator's parsing and
filters, the judge's position-swap logic, the loop's resume), so tests are fast and exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from evalign.backends.base import LLM, BackendTraits, Conversation, Generation, GenParams
from evalign.hashing import sha

GenerateFn = Callable[[Conversation, int], str]
ChoiceFn = Callable[[Conversation, Sequence[str], str], Sequence[float]]


def echo_generate(conversation: Conversation, seed: int) -> str:
    """Default script: a deterministic, seed-dependent reply to the last user message."""
    last = conversation[-1]["content"]
    tag = sha(f"{seed}:{last}", 6)
    return f"Reply {tag} to: {last[:60]}"


def uniform_choices(conversation: Conversation, choices: Sequence[str], prefix: str) -> list[float]:
    return [-math.log(len(choices))] * len(choices)


def hashed_choices(conversation: Conversation, choices: Sequence[str], prefix: str) -> list[float]:
    """Deterministic, varied preferences: log-softmax of hash-derived scores."""
    text = _flat(conversation) + prefix
    raw = [int(sha(f"{text}|{c}", 8), 16) / 2**32 * 4 for c in choices]
    top = max(raw)
    norm = math.log(sum(math.exp(r - top) for r in raw)) + top
    return [r - norm for r in raw]


def rewrite_generate(conversation: Conversation, seed: int) -> str:
    """A creator stand-in: the prompt between <prompt> tags with a seed-dependent constraint."""
    import re

    text = conversation[-1]["content"]
    # the data block, tags on lines of their own (the instructions also name the tags in prose)
    m = re.search(r"^<prompt>\n(.*?)\n</prompt>$", text, re.S | re.M)
    base = m.group(1).strip() if m else "Write something useful."
    return f"{base} Answer in exactly {3 + seed % 5} numbered steps, citing variant {seed % 97}."


#: Named scripts for ``backend: scripted`` (``model`` picks one); tests may register more.
SCRIPTS: dict[str, tuple[GenerateFn, ChoiceFn]] = {
    "echo": (echo_generate, hashed_choices),
    "uniform": (echo_generate, uniform_choices),
    "rewrite": (rewrite_generate, hashed_choices),
}


def register_script(name: str, generate_fn: GenerateFn = echo_generate, choice_fn: ChoiceFn = hashed_choices) -> None:
    SCRIPTS[name] = (generate_fn, choice_fn)


class ScriptedLLM(LLM):
    traits = BackendTraits(device="none", weights=None)

    def __init__(
        self,
        generate_fn: GenerateFn = echo_generate,
        choice_fn: ChoiceFn = hashed_choices,
        model_id: str = "scripted",
    ) -> None:
        super().__init__()
        self.generate_fn = generate_fn
        self.choice_fn = choice_fn
        self.model_id = model_id
        self.requests: list[Conversation] = []  # every conversation seen, for assertions

    def generate(
        self, conversations: Sequence[Conversation], params: GenParams, seeds: Sequence[int]
    ) -> list[list[Generation]]:
        out = []
        for conv in conversations:
            row = []
            for seed in seeds:
                self.requests.append(conv)
                text = self.generate_fn(conv, seed)
                words = text.split()
                if len(words) > params.max_new_tokens:
                    text = " ".join(words[: params.max_new_tokens])
                row.append(Generation(text, seed, self.count_tokens(_flat(conv)), len(text.split())))
                self.stats.add(calls=1, completion_tokens=len(text.split()))
            out.append(row)
        return out

    def choice_logprobs(
        self, conversations: Sequence[Conversation], choices: Sequence[str], assistant_prefix: str = ""
    ) -> list[list[float]]:
        out = []
        for conv in conversations:
            self.requests.append(conv)
            out.append(list(self.choice_fn(conv, choices, assistant_prefix)))
            self.stats.add(calls=1)
        return out

    def count_tokens(self, text: str) -> int:
        return max(1, len(text.split()))

    def truncate(self, text: str, max_tokens: int) -> str:
        words = text.split()
        return text if len(words) <= max_tokens else " ".join(words[:max_tokens])


def _flat(conv: Conversation) -> str:
    return "\n".join(m["content"] for m in conv)
