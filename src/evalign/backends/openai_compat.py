"""OpenAI-compatible HTTP backend: the OpenAI API, vLLM and llama.cpp servers.

One ``POST {api_base}/chat/completions`` per (conversation, seed), sent from a thread pool of
``max_concurrency`` workers over one pooled ``httpx.Client``. Built to run unattended on a
paid API:

* **Retries.** Timeouts, connection errors (a server that drops the connection included),
  HTTP 408/409/429/5xx and malformed or truncated JSON bodies are retried up to
  ``max_retries`` times with exponential backoff and full jitter (``uniform(0, min(30,
  0.5 * 2**attempt))`` seconds), or exactly the server's ``Retry-After`` when it sends one.
  Any other status (400, 401, 403, 404, ...) fails at once with a one-line
  :class:`~evalign.errors.BackendError` naming the model, the status and the server's message.
* **API key.** Read from the environment variable named by ``api_key_env`` at request time
  and sent only in the ``Authorization`` header; it is never stored on the object and is
  redacted from every message this module raises or logs.
* **Budget.** With a :class:`~evalign.backends.budget.Budget`, every HTTP attempt first
  reserves its worst case (one call; the prompt's UTF-8 byte count plus template overhead,
  an upper bound on its tokens, plus ``max_tokens``) and then settles it: with the server's
  ``usage`` on success, with no tokens for an HTTP error status (APIs do not bill those), and
  at the worst case when the outcome is unknown (timeout, dropped connection, malformed body),
  since the server may have finished and billed the request.
* **Determinism.** ``seed`` is sent per request (the sample seed mixed with the conversation,
  31 bits for llama.cpp). vLLM and llama.cpp honour it; the OpenAI API only "mostly" does.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar
from urllib.parse import urlparse

import httpx

from evalign.errors import BackendError
from evalign.backends.base import LLM, BackendTraits, Conversation, Generation, GenParams, Timer, sample_seed
from evalign.backends.budget import Budget, Reservation
from evalign.backends.http import (
    BACKOFF_BASE_S,
    DEFAULT_API_BASE,
    MISSING_LOGPROB,
    RETRY_STATUSES,
    TOP_LOGPROBS,
    Malformed,
    Retryable,
    chat_messages,
    match_choices,
    parse_generation,
    parse_retry_after,
    prompt_token_bound,
    retry_delay,
    redact_secret,
    server_message,
    usage_counts,
    usage_of,
)

__all__ = ["BACKOFF_BASE_S", "DEFAULT_API_BASE", "MISSING_LOGPROB", "OpenAICompatLLM", "match_choices",
           "parse_retry_after", "prompt_token_bound"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class OpenAICompatLLM(LLM):
    """An ``LLM`` served over an OpenAI-compatible ``/chat/completions`` endpoint.

    ``OpenAICompatLLM(ModelSpec(model="gpt-4o", backend="openai", api_key_env="OPENAI_API_KEY"),
    budget=Budget(cfg.budget, path=...))``; ``api_base`` defaults to the OpenAI API, point it
    at ``http://host:8000/v1`` for vLLM or llama.cpp's ``llama-server``.

    ``choice_logprobs`` asks for one token with ``top_logprobs: 20`` and reads the choices
    from it (so ``exact_logprobs`` is False: a choice outside the top 20 gets ``log(1e-6)``).
    A non-empty ``assistant_prefix`` is sent as a trailing assistant message with
    ``continue_final_message: true, add_generation_prompt: false``, which vLLM and llama.cpp
    servers honour as a prefill. The official OpenAI API ignores prefills (a trailing assistant
    message is read as a finished turn; it also rejects the two extra keys, so they are not
    sent there): judges on it should use generated verdicts (``eval.judge_mode: generate``).

    ``sleep`` and ``rng`` (backoff jitter) are injectable so tests run fast and
    deterministically; ``transport`` is passed to ``httpx.Client``.
    """

    traits = BackendTraits(exact_logprobs=False, remote_api=True, device="remote", weights=None)
    exact_logprobs = traits.exact_logprobs

    def __init__(
        self,
        spec: Any,
        budget: Budget | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__()
        self.model: str = spec.model
        self.api_base: str = (getattr(spec, "api_base", None) or DEFAULT_API_BASE).rstrip("/")
        self.api_key_env: str | None = getattr(spec, "api_key_env", None)
        self.max_concurrency: int = int(getattr(spec, "max_concurrency", 8))
        self.timeout_s: float = float(getattr(spec, "timeout_s", 120.0))
        self.max_retries: int = int(getattr(spec, "max_retries", 6))
        self.budget = budget
        self.model_id = f"openai:{self.model}@{self.api_base}"
        parsed = urlparse(self.api_base)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise BackendError(
                f"model {self.model}: api_base {self.api_base!r} is not an http(s) URL; "
                "use e.g. http://localhost:8000/v1"
            )
        self._official = parsed.hostname == "api.openai.com"
        self._url = f"{self.api_base}/chat/completions"
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()
        self._rng_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self.max_concurrency)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._warned_prefill = False
        self._client = httpx.Client(
            timeout=httpx.Timeout(self.timeout_s),
            limits=httpx.Limits(
                max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency
            ),
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, api_base={self.api_base!r})"

    # ------------------------------------------------------------------ LLM protocol

    def generate(
        self, conversations: Sequence[Conversation], params: GenParams, seeds: Sequence[int]
    ) -> list[list[Generation]]:
        jobs = [(conv, int(seed)) for conv in conversations for seed in seeds]

        def one(job: tuple[Conversation, int]) -> Generation:
            conv, seed = job
            messages = chat_messages(conv)
            body: dict[str, Any] = {
                "model": self.model,
                "messages": messages,
                "temperature": float(params.temperature),
                "top_p": float(params.top_p),
                "max_tokens": int(params.max_new_tokens),
                "seed": sample_seed(seed, conv) & 0x7FFFFFFF,
            }
            if params.stop:
                body["stop"] = list(params.stop)
            data = self._post(body, prompt_token_bound(messages), int(params.max_new_tokens), parse_generation)
            text, finish, usage = data
            text = self._scrub(text)
            p = usage.get("prompt_tokens")
            c = usage.get("completion_tokens")
            gen = Generation(
                text=text,
                seed=seed,
                prompt_tokens=int(p) if p is not None else sum(self.count_tokens(m["content"]) for m in messages),
                completion_tokens=int(c) if c is not None else (self.count_tokens(text) if text else 0),
                finish_reason=finish,
            )
            self.stats.add(prompt_tokens=gen.prompt_tokens, completion_tokens=gen.completion_tokens)
            return gen

        with Timer(self.stats, calls=len(jobs)):
            flat = self._map(one, jobs)
        k = len(seeds)
        return [flat[i * k : (i + 1) * k] for i in range(len(conversations))]

    def choice_logprobs(
        self, conversations: Sequence[Conversation], choices: Sequence[str], assistant_prefix: str = ""
    ) -> list[list[float]]:
        if not choices:
            return [[] for _ in conversations]
        if assistant_prefix and self._official and not self._warned_prefill:
            self._warned_prefill = True
            log.warning(
                "%s: the OpenAI API ignores assistant prefills, so choice log-probabilities after "
                "%r are unreliable; use eval.judge_mode: generate for judges on it",
                self.model,
                assistant_prefix[:40],
            )

        def one(conv: Conversation) -> list[float]:
            messages = chat_messages(conv)
            body: dict[str, Any] = {
                "model": self.model,
                "max_tokens": 1,
                "temperature": 0.0,
                "logprobs": True,
                "top_logprobs": TOP_LOGPROBS,
                "seed": 0,
            }
            if assistant_prefix:
                messages.append({"role": "assistant", "content": assistant_prefix})
                if not self._official:
                    body["continue_final_message"] = True
                    body["add_generation_prompt"] = False
            body["messages"] = messages
            top, usage = self._post(body, prompt_token_bound(messages), 1, self._parse_top_logprobs)
            self.stats.add(
                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                completion_tokens=int(usage.get("completion_tokens") or 0),
            )
            return match_choices(top, choices)

        with Timer(self.stats, calls=len(conversations)):
            return self._map(one, list(conversations))

    def close(self) -> None:
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    # ------------------------------------------------------------------ HTTP with retries

    def _post(self, body: dict[str, Any], prompt_bound: int, max_new: int, parse: Callable[[Any], T]) -> T:
        """POST one request, retrying what can be retried; returns ``parse(json_body)``."""
        attempts = self.max_retries + 1
        last = "no attempt made"
        for attempt in range(attempts):
            try:
                return self._attempt(body, prompt_bound, max_new, parse)
            except Retryable as r:
                last = r.reason
                if attempt + 1 >= attempts:
                    break
                delay = retry_delay(attempt, r.retry_after, self._jitter)
                log.warning(
                    "%s: %s; retry %d/%d in %.1f s", self.model, last, attempt + 1, self.max_retries, delay
                )
                self._sleep(delay)
        raise BackendError(
            f"model {self.model} at {self.api_base}: gave up after {attempts} attempt(s); last error: "
            f"{last}; check the server, or raise max_retries/timeout_s in the model spec"
        )

    def _jitter(self) -> float:
        with self._rng_lock:
            return self._rng.random()

    def _attempt(self, body: dict[str, Any], prompt_bound: int, max_new: int, parse: Callable[[Any], T]) -> T:
        headers = self._headers()
        res: Reservation | None = self.budget.reserve(prompt_bound, max_new) if self.budget else None
        settled = False

        def settle(prompt: int | None, completion: int | None, *, sent: bool = True) -> None:
            nonlocal settled
            if res is not None and not settled:
                if sent:
                    self.budget.commit(res, prompt, completion)  # type: ignore[union-attr]
                else:
                    self.budget.release(res)  # type: ignore[union-attr]
            settled = True

        try:
            with self._slots:
                try:
                    resp = self._client.post(self._url, json=body, headers=headers)
                except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                    settle(0, 0, sent=False)
                    raise Retryable(
                        f"cannot connect to {self.api_base} ({type(exc).__name__}: {self._redact(str(exc))})"
                    ) from None
                except httpx.TimeoutException:
                    settle(None, None)
                    raise Retryable(f"no response within timeout_s={self.timeout_s:g}") from None
                except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
                    settle(0, 0, sent=False)
                    raise BackendError(
                        f"model {self.model}: bad api_base {self.api_base!r} ({self._redact(str(exc))})"
                    ) from None
                except httpx.TransportError as exc:
                    settle(None, None)
                    raise Retryable(
                        f"connection failed ({type(exc).__name__}: {self._redact(str(exc)) or 'dropped'})"
                    ) from None
            status = resp.status_code
            if 200 <= status < 300:
                try:
                    data = json.loads(resp.content)
                    out = parse(data)
                except BackendError:
                    settle(*usage_counts(data))
                    raise
                except (Malformed, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
                    settle(None, None)
                    detail = str(exc) if isinstance(exc, Malformed) else type(exc).__name__
                    raise Retryable(f"malformed response body ({self._redact(detail)[:200]})") from None
                settle(*usage_counts(data))
                return out
            settle(0, 0)  # an error status is not billed
            msg = self._redact(server_message(resp, self._redact))
            if status in RETRY_STATUSES or status >= 500:
                raise Retryable(f"HTTP {status}: {msg}", parse_retry_after(resp.headers))
            raise BackendError(
                f"model {self.model} at {self.api_base}: HTTP {status} {resp.reason_phrase}: {msg}"
                f"{self._hint(status)}"
            )
        finally:
            if not settled:  # interrupted mid-request: the server may have billed it
                settle(None, None)

    def _headers(self) -> dict[str, str]:
        key = self._api_key()
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _api_key(self) -> str | None:
        if not self.api_key_env:
            return None
        key = os.environ.get(self.api_key_env, "").strip()
        if not key:
            raise BackendError(
                f"model {self.model}: environment variable {self.api_key_env} (api_key_env) is not set; "
                f"export {self.api_key_env}=<your key>, or drop api_key_env for a server without auth"
            )
        return key

    def _set_key(self) -> str | None:
        if not self.api_key_env:
            return None
        return os.environ.get(self.api_key_env, "").strip() or None

    def _redact(self, text: str) -> str:
        """Remove the API key (whole, cut short or echoed masked) from ``text``, on one line."""
        return redact_secret(" ".join(str(text).split()), self._set_key(), "***")

    def _scrub(self, text: str) -> str:
        """A reply with the API key, should the server echo it, replaced by ``[redacted]``:
        replies are returned to callers that store them in the run."""
        key = self._set_key()
        return redact_secret(text, key, "[redacted]") if key else text

    def _hint(self, status: int) -> str:
        env = f"${self.api_key_env}" if self.api_key_env else "api_key_env"
        return {
            401: f"; check the API key in {env}",
            403: f"; the key in {env} has no access to this model",
            404: "; check the model name and that api_base ends in /v1",
        }.get(status, "")

    def _parse_top_logprobs(self, data: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        choice = data["choices"][0]
        lp = choice.get("logprobs")
        if lp is None:
            if isinstance(choice.get("message"), dict):
                raise BackendError(
                    f"model {self.model} at {self.api_base}: the server returned no logprobs; "
                    "use a server that supports them or set eval.judge_mode: generate"
                )
            raise Malformed("no choices[0].logprobs")
        content = lp["content"]
        if not content:
            raise Malformed("empty logprobs.content")
        top = content[0]["top_logprobs"]
        if not isinstance(top, list) or not all(isinstance(t, dict) and "logprob" in t for t in top):
            raise Malformed("top_logprobs is not a list of {token, logprob}")
        return top, usage_of(data)

    # ------------------------------------------------------------------ thread pool

    def _map(self, fn: Callable[[Any], T], items: Sequence[Any]) -> list[T]:
        """``[fn(x) for x in items]`` on at most ``max_concurrency`` threads, in order.

        The first failure (in item order among those finished) cancels what has not started,
        waits for the requests in flight (so the budget is settled when it returns) and is
        raised. A KeyboardInterrupt does not wait.
        """
        if not items:
            return []
        if len(items) == 1 or self.max_concurrency == 1:
            return [fn(x) for x in items]
        pool = self._get_pool()
        futures: list[Future[T]] = [pool.submit(fn, x) for x in items]
        try:
            wait(futures, return_when=FIRST_EXCEPTION)
            for f in futures:
                if f.done() and not f.cancelled() and f.exception() is not None:
                    raise f.exception()  # type: ignore[misc]
            return [f.result() for f in futures]
        except Exception:
            for f in futures:
                f.cancel()
            wait(futures)
            raise
        except BaseException:
            for f in futures:
                f.cancel()
            raise

    def _get_pool(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="evalign-openai")
            return self._pool
