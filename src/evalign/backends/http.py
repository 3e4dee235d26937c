"""HTTP helpers of the OpenAI-compatible backend: retry policy, Retry-After, and reading
request and response bodies (chat messages, usage, generations, choice log-probabilities,
server error messages). No state: :class:`~evalign.backends.openai_compat.OpenAICompatLLM`
holds the client, the budget and the key."""

from __future__ import annotations

import email.utils
import json
import re
import math
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from evalign.backends.base import Conversation

if TYPE_CHECKING:
    import httpx

DEFAULT_API_BASE = "https://api.openai.com/v1"
#: Log-probability given to a choice that is not among the returned top tokens.
MISSING_LOGPROB = math.log(1e-6)
TOP_LOGPROBS = 20
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
#: Longest Retry-After honoured in one wait; a longer one is waited in steps of this.
MAX_RETRY_AFTER_S = 600.0
RETRY_STATUSES = frozenset({408, 409, 429})
#: Tokens allowed per message and per request for chat-template markup and default system
#: prompts, on top of the content's UTF-8 bytes, when bounding a prompt's tokens.
TEMPLATE_TOKENS_PER_MESSAGE = 8
TEMPLATE_TOKENS_PER_REQUEST = 64


class Retryable(Exception):
    """An attempt failed in a way another attempt may fix."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason, self.retry_after = reason, retry_after


class Malformed(Exception):
    """A 2xx body that is not the JSON shape expected (retried)."""


def prompt_token_bound(messages: Sequence[dict[str, str]]) -> int:
    """An upper bound on a chat prompt's tokens: byte-level tokenizers never emit more tokens
    than bytes, plus an allowance for the chat template."""
    content = sum(len(str(m.get("content", "")).encode("utf-8")) for m in messages)
    return content + TEMPLATE_TOKENS_PER_MESSAGE * len(messages) + TEMPLATE_TOKENS_PER_REQUEST


def parse_retry_after(headers: httpx.Headers) -> float | None:
    """Seconds to wait from ``retry-after-ms``, ``Retry-After`` (seconds or an HTTP date)."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            v = float(raw_ms) / 1000.0
            if math.isfinite(v) and v >= 0:
                return v
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    raw = raw.strip()
    try:
        v = float(raw)
        return v if math.isfinite(v) and v >= 0 else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def match_choices(top_logprobs: Sequence[dict[str, Any]], choices: Sequence[str]) -> list[float]:
    """Log-probability per choice from one position's top tokens.

    A token matches a choice when both are equal after stripping whitespace (``" A"`` is
    ``"A"``); several matching tokens are summed in probability. A choice with no match gets
    ``log(1e-6)``. Only first tokens are seen, so a multi-token choice (``"10"`` in a
    tokenizer without a ``"10"`` token) reads as missing.
    """
    out = []
    for choice in choices:
        want = choice.strip()
        lps = [float(t["logprob"]) for t in top_logprobs if str(t.get("token", "")).strip() == want]
        lps = [lp for lp in lps if not math.isnan(lp)]
        if not lps:
            out.append(MISSING_LOGPROB)
            continue
        m = max(lps)
        out.append(m if m == -math.inf else m + math.log(sum(math.exp(lp - m) for lp in lps)))
    return out


def retry_delay(attempt: int, retry_after: float | None, draw: Callable[[], float]) -> float:
    """Seconds before retry ``attempt + 1``: the server's Retry-After (at most
    ``MAX_RETRY_AFTER_S``), else full-jitter backoff with ``draw()`` uniform in [0, 1)."""
    if retry_after is not None:
        return min(retry_after, MAX_RETRY_AFTER_S)
    return draw() * min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt)


def chat_messages(conv: Conversation) -> list[dict[str, str]]:
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in conv]


def usage_of(data: Any) -> dict[str, Any]:
    u = data.get("usage") if isinstance(data, dict) else None
    return u if isinstance(u, dict) else {}


def usage_counts(data: Any) -> tuple[int | None, int | None]:
    """(prompt, completion) tokens from ``usage``; None where the server did not say."""
    u = usage_of(data)
    out = []
    for k in ("prompt_tokens", "completion_tokens"):
        v = u.get(k)
        out.append(int(v) if isinstance(v, (int, float)) and v >= 0 else None)
    return out[0], out[1]


def parse_generation(data: Any) -> tuple[str, str, dict[str, Any]]:
    choice = data["choices"][0]
    message = choice["message"]
    text = message.get("content")
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise Malformed("choices[0].message.content is not a string")
    finish = "length" if choice.get("finish_reason") == "length" else "stop"
    return text, finish, usage_of(data)


#: A key as servers echo it back masked ("sk-proj-abcd****wxyz", "sk-...wxyz", "sk-abcd…").
_MASKED_KEY = re.compile(r"\b(?:sk|rk|pk)-[A-Za-z0-9_\-]*(?:[*.\u2026]{2,}|\u2026)[A-Za-z0-9_\-]*")


def redact_secret(text: str, secret: str | None, mark: str) -> str:
    """``text`` with the secret replaced by ``mark`` wherever it appears: whole, cut short
    (a long secret's first 8 characters and whatever follows them), or echoed back masked."""
    if secret:
        text = text.replace(secret, mark)
        if len(secret) >= 16:
            text = re.sub(re.escape(secret[:8]) + r"[^\s\"',;)]*", mark, text)
    return _MASKED_KEY.sub(mark, text)


def server_message(resp: httpx.Response, redact: Callable[[str], str] = lambda s: s) -> str:
    """The error message in an error response (OpenAI/vLLM/llama.cpp shapes), on one line,
    passed through ``redact`` before it is cut to length (so no secret survives half cut)."""
    text = resp.text
    msg: Any = text
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            msg = err.get("message") or json.dumps(err)
        elif isinstance(err, str):
            msg = err
        else:
            msg = data.get("message") or data.get("detail") or text
    msg = redact(" ".join(str(msg).split()))
    if not msg:
        msg = "(empty body)"
    return msg if len(msg) <= 300 else msg[:297] + "..."
