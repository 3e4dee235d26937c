"""A small OpenAI-compatible server for tests, with a scriptable fault queue.

    with FakeOpenAIServer() as srv:
        srv.add_faults("429", ("429", 2.5), "500", "drop", ("delay", 1.0))
        llm = OpenAICompatLLM(ModelSpec(model="fake", backend="openai", api_base=srv.url))

Each request to ``POST /v1/chat/completions`` takes the next fault from the queue (FIFO), if
any; otherwise (and after a ``delay``) it answers deterministically from the messages and the
seed. Faults:

``("delay", s)``   wait s seconds, then answer normally (a client timeout shorter than s fails)
``"429"``          429 without Retry-After; ``("429", s)`` with ``Retry-After: s``
``"500"``/``"503"`` server errors (``("503", s)`` adds Retry-After)
``"drop"``         close the connection without any response
``"truncated"``    a 200 whose body is cut short of its Content-Length, then close
``"malformed"``    a 200 with a JSON body that does not parse
``"no_choices"``   a 200 with valid JSON missing ``choices``
``"401"``          an OpenAI-style 401 that echoes the received key (to test redaction)
``"400"``/``"404"`` client errors

Every request is recorded (path, headers, JSON body, the fault applied) and the peak number
of requests handled at once is kept in ``max_concurrent``. Only 127.0.0.1 is served, on a
free port, from a daemon thread; everything stops when the context exits.
"""

from __future__ import annotations

import hashlib
import json
import math
import socket
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Fault = str | tuple[str, float]


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: Any
    fault: Fault | None = None
    #: The ``usage`` object of a successful answer (None when a fault replaced it).
    usage: dict[str, int] | None = None


@dataclass
class FakeState:
    model: str = "fake-model"
    default_delay: float = 0.0
    #: When set, returned as ``top_logprobs`` (list of (token, logprob)) for every request.
    top_logprobs: list[tuple[str, float]] | None = None
    faults: deque = field(default_factory=deque)
    requests: list[RecordedRequest] = field(default_factory=list)
    active: int = 0
    max_concurrent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)


def fake_tokens(text: str) -> int:
    """The fake server's token count: words (at most the UTF-8 bytes)."""
    return len(text.split())


def fake_answer(messages: list[dict[str, str]], seed: Any) -> str:
    blob = json.dumps([messages, seed], sort_keys=True).encode()
    h = hashlib.sha256(blob).hexdigest()
    last = messages[-1]["content"] if messages else ""
    return f"answer {h[:8]} to {' '.join(last.split()[:6])} seed {seed} " + " ".join(
        f"w{h[i:i + 2]}" for i in range(8, 40, 2)
    )


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, format: str, *args: Any) -> None:  # silence stderr
        pass

    def do_POST(self) -> None:  # noqa: N802
        st = self.server.state
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None
        with st.lock:
            fault = st.faults.popleft() if st.faults else None
            self.record = RecordedRequest(self.path, dict(self.headers.items()), body, fault)
            st.requests.append(self.record)
            st.active += 1
            st.max_concurrent = max(st.max_concurrent, st.active)
        try:
            self._serve(st, body, fault)
        finally:
            with st.lock:
                st.active -= 1

    def _serve(self, st: FakeState, body: Any, fault: Fault | None) -> None:
        kind, arg = (fault if isinstance(fault, tuple) else (fault, None)) if fault else (None, None)
        delay = st.default_delay + (float(arg) if kind == "delay" and arg is not None else 0.0)
        if delay and st.stopping.wait(delay):
            return self._drop()
        if self.path.rstrip("/") != "/v1/chat/completions":
            return self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
        if kind in ("429", "500", "503"):
            headers = {"Retry-After": f"{arg:g}"} if arg is not None else {}
            msg = {"429": "Rate limit reached", "500": "internal error", "503": "overloaded"}[kind]
            return self._json(int(kind), {"error": {"message": msg, "type": "server_error"}}, headers)
        if kind == "401":
            auth = self.headers.get("Authorization", "")
            key = auth.removeprefix("Bearer ")
            return self._json(401, {"error": {"message": f"Incorrect API key provided: {key}.",
                                              "type": "invalid_request_error"}})
        if kind == "400":
            return self._json(400, {"error": {"message": "bad request: max_tokens too large"}})
        if kind == "404":
            return self._json(404, {"error": {"message": "The model `nope` does not exist"}})
        if kind == "drop":
            return self._drop()
        if kind == "malformed":
            return self._raw(200, b'{"id": "x", "choices": [{"message": {"content": "unterminated')
        if kind == "truncated":
            payload = json.dumps(self._answer(st, body)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            return self._drop()
        if kind == "no_choices":
            return self._json(200, {"id": "x", "object": "chat.completion"})
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return self._json(400, {"error": {"message": "messages is required"}})
        answer = self._answer(st, body)
        self.record.usage = answer["usage"]
        return self._json(200, answer)

    # -- responses

    def _answer(self, st: FakeState, body: dict[str, Any]) -> dict[str, Any]:
        messages = body["messages"]
        text = fake_answer(messages, body.get("seed"))
        for s in body.get("stop") or []:
            if s and s in text:
                text = text[: text.index(s)]
        words = text.split()
        max_tokens = body.get("max_tokens")
        finish = "stop"
        if isinstance(max_tokens, int) and len(words) > max_tokens:
            words, finish = words[:max_tokens], "length"
        text = " ".join(words)
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": finish,
        }
        if body.get("logprobs"):
            k = int(body.get("top_logprobs") or 0)
            if st.top_logprobs is not None:
                table = list(st.top_logprobs)
            else:
                h = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).digest()
                raw = [(tok, -0.5 * ((h[i] % 16) + i)) for i, tok in enumerate(["A", " B", "1", "2", "yes"])]
                z = math.log(sum(math.exp(lp) for _, lp in raw))
                table = [(tok, lp - z) for tok, lp in raw]
            top = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in table[:k]]
            first = top[0]["token"] if top else ""
            choice["logprobs"] = {"content": [{"token": first, "logprob": top[0]["logprob"] if top else 0.0,
                                               "top_logprobs": top}]}
        prompt_tokens = sum(fake_tokens(m.get("content", "")) for m in messages) + 1
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "model": body.get("model", st.model),
            "choices": [choice],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": len(words),
                "total_tokens": prompt_tokens + len(words),
            },
        }

    def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._raw(status, json.dumps(obj).encode(), headers)

    def _raw(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)
        self.wfile.flush()

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.wfile.flush()
        except OSError:
            pass
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    state: FakeState

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out or close keep-alive connections are expected here.
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class FakeOpenAIServer:
    """Context manager running the fake server on 127.0.0.1 (a free port)."""

    def __init__(self, *, model: str = "fake-model", default_delay: float = 0.0) -> None:
        self.state = FakeState(model=model, default_delay=default_delay)
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- scripting and inspection

    def add_faults(self, *faults: Fault) -> None:
        with self.state.lock:
            self.state.faults.extend(faults)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self.state.lock:
            return list(self.state.requests)

    @property
    def max_concurrent(self) -> int:
        return self.state.max_concurrent

    @property
    def pending_faults(self) -> int:
        with self.state.lock:
            return len(self.state.faults)

    def set_top_logprobs(self, table: list[tuple[str, float]] | None) -> None:
        self.state.top_logprobs = table

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    # -- lifecycle

    def __enter__(self) -> "FakeOpenAIServer":
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.state = self.state
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.state.stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
