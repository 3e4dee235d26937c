"""OpenAI-compatible backend against a local fake server: retries, budget, key hygiene."""

from __future__ import annotations

import json
import logging
import math
import random
import secrets
import traceback
from email.utils import format_datetime
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from evalign.backends.base import GenParams, sample_seed
from evalign.backends.budget import Budget
from evalign.backends.openai_compat import (
    BACKOFF_BASE_S,
    MISSING_LOGPROB,
    OpenAICompatLLM,
    match_choices,
    parse_retry_after,
    prompt_token_bound,
)
from evalign.config import BudgetConfig, ModelSpec
from evalign.errors import BackendError, BudgetExceededError, ConfigError

from fake_openai_server import FakeOpenAIServer, fake_answer

KEY_ENV = "EVALIGN_TEST_API_KEY"


def conv(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]


def make(srv: FakeOpenAIServer, budget: Budget | None = None, sleeps: list | None = None, **spec_kw):
    spec_kw.setdefault("max_concurrency", 4)
    spec_kw.setdefault("timeout_s", 5.0)
    spec_kw.setdefault("max_retries", 3)
    spec = ModelSpec(model="fake-model", backend="openai", api_base=srv.url, **spec_kw)
    sink = sleeps if sleeps is not None else []
    return OpenAICompatLLM(spec, budget, sleep=sink.append, rng=random.Random(0))


PARAMS = GenParams(max_new_tokens=64, temperature=0.5, top_p=0.9)


@pytest.fixture
def srv():
    with FakeOpenAIServer() as s:
        yield s


# ---------------------------------------------------------------------------- generation


def test_generate_round_trip_and_order(srv):
    convs = [conv(f"question number {i}") for i in range(5)]
    seeds = [11, 22, 33]
    with make(srv) as llm:
        out = llm.generate(convs, GenParams(max_new_tokens=64, temperature=0.5, top_p=0.9, stop=("@@",)), seeds)
        assert llm.model_id == f"openai:fake-model@{srv.url}"
        assert llm.stats.calls == 15
    assert [len(row) for row in out] == [3] * 5
    for c, row in zip(convs, out):
        for seed, g in zip(seeds, row):
            wire_seed = sample_seed(seed, c) & 0x7FFFFFFF
            assert g.text == fake_answer(c, wire_seed)
            assert g.seed == seed
            assert g.finish_reason == "stop"
            assert g.completion_tokens == len(g.text.split())
            assert g.prompt_tokens == sum(len(m["content"].split()) for m in c) + 1
    reqs = srv.requests
    assert len(reqs) == 15 and all(r.path == "/v1/chat/completions" for r in reqs)
    body = reqs[0].body
    assert body["model"] == "fake-model"
    assert body["temperature"] == 0.5 and body["top_p"] == 0.9 and body["max_tokens"] == 64
    assert body["stop"] == ["@@"]
    assert isinstance(body["seed"], int) and 0 <= body["seed"] < 2**31
    assert "Authorization" not in reqs[0].headers  # no api_key_env: no header
    # same seed on different prompts -> different wire seeds
    assert len({r.body["seed"] for r in reqs}) == 15


def test_finish_reason_length_and_empty_batch(srv):
    with make(srv) as llm:
        [[g]] = llm.generate([conv("hi")], GenParams(max_new_tokens=3), [0])
        assert g.finish_reason == "length" and g.completion_tokens == 3
        assert llm.generate([], PARAMS, [0, 1]) == []


FAULTS = ["429", "500", "503", "drop", "truncated", "malformed", "no_choices", ("delay", 1.0)]


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f if isinstance(f, str) else f[0])
def test_every_fault_is_retried_then_succeeds(srv, fault):
    sleeps: list[float] = []
    srv.add_faults(fault)
    with make(srv, sleeps=sleeps, timeout_s=0.3, max_concurrency=1) as llm:
        [[g]] = llm.generate([conv("hello there")], PARAMS, [7])
    c = conv("hello there")
    assert g.text == fake_answer(c, sample_seed(7, c) & 0x7FFFFFFF)
    assert len(srv.requests) == 2 and srv.requests[0].fault == fault
    assert len(sleeps) == 1 and 0 <= sleeps[0] <= BACKOFF_BASE_S


def test_two_faults_in_a_row_back_off_exponentially_with_jitter(srv):
    sleeps: list[float] = []
    srv.add_faults("500", "503", "429")
    with make(srv, sleeps=sleeps, max_concurrency=1) as llm:
        llm.generate([conv("x")], PARAMS, [0])
    rng = random.Random(0)
    assert sleeps == pytest.approx([rng.random() * BACKOFF_BASE_S * 2**i for i in range(3)])


def test_retry_after_is_honoured(srv):
    sleeps: list[float] = []
    srv.add_faults(("429", 2.5), ("503", 0.25))
    with make(srv, sleeps=sleeps, max_concurrency=1) as llm:
        llm.generate([conv("x")], PARAMS, [0])
    assert sleeps == [2.5, 0.25]
    assert len(srv.requests) == 3


def test_parse_retry_after_forms():
    assert parse_retry_after(httpx.Headers({"Retry-After": "3"})) == 3.0
    assert parse_retry_after(httpx.Headers({"retry-after-ms": "1500", "Retry-After": "9"})) == 1.5
    assert parse_retry_after(httpx.Headers({})) is None
    assert parse_retry_after(httpx.Headers({"Retry-After": "soon"})) is None
    when = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    assert 25 <= parse_retry_after(httpx.Headers({"Retry-After": when})) <= 31


def test_gives_up_after_max_retries_with_one_line_error(srv):
    sleeps: list[float] = []
    srv.add_faults("500", "500", "500", "500")
    with make(srv, sleeps=sleeps, max_retries=2, max_concurrency=1) as llm:
        with pytest.raises(BackendError) as ei:
            llm.generate([conv("x")], PARAMS, [0])
    msg = str(ei.value)
    assert "\n" not in msg
    assert "fake-model" in msg and "3 attempt" in msg and "HTTP 500" in msg and "internal error" in msg
    assert len(srv.requests) == 3 and len(sleeps) == 2
    assert ei.value.__cause__ is None and ei.value.__context__ is None


def test_connection_refused_is_retried_then_reported():
    sleeps: list[float] = []
    with FakeOpenAIServer() as s:
        url = s.url
    spec = ModelSpec(model="m", backend="openai", api_base=url, max_retries=2, timeout_s=2)
    with OpenAICompatLLM(spec, sleep=sleeps.append, rng=random.Random(1)) as llm:
        with pytest.raises(BackendError, match="cannot connect"):
            llm.generate([conv("x")], PARAMS, [0])
    assert len(sleeps) == 2


@pytest.mark.parametrize("fault,status", [("401", 401), ("400", 400), ("404", 404)])
def test_client_errors_are_not_retried(srv, fault, status):
    sleeps: list[float] = []
    srv.add_faults(fault)
    with make(srv, sleeps=sleeps) as llm:
        with pytest.raises(BackendError) as ei:
            llm.generate([conv("x")], PARAMS, [0])
    msg = str(ei.value)
    assert "\n" not in msg and "fake-model" in msg and f"HTTP {status}" in msg
    assert len(srv.requests) == 1 and sleeps == []


def test_concurrency_bound_holds():
    with FakeOpenAIServer(default_delay=0.15) as s:
        with make(s, max_concurrency=3) as llm:
            out = llm.generate([conv(f"q{i}") for i in range(4)], PARAMS, [0, 1, 2])
        assert sum(len(r) for r in out) == 12
        assert 2 <= s.max_concurrent <= 3


# ---------------------------------------------------------------------------- budget


def test_call_budget_is_never_exceeded(srv):
    budget = Budget(BudgetConfig(max_calls=4))
    with make(srv, budget, max_concurrency=3) as llm:
        with pytest.raises(BudgetExceededError) as ei:
            llm.generate([conv(f"q{i}") for i in range(10)], PARAMS, [0])
    assert len(srv.requests) == 4
    assert budget.calls == 4
    msg = str(ei.value)
    assert "\n" not in msg and "max_calls=4" in msg
    assert "raise budget.max_calls in the config and rerun to resume" in msg


def test_token_budget_is_never_exceeded(srv):
    convs = [conv(f"question {i} about something") for i in range(12)]
    worst = prompt_token_bound(convs[0]) + PARAMS.max_new_tokens
    limit = int(worst * 4.5)
    budget = Budget(BudgetConfig(max_tokens=limit))
    with make(srv, budget, max_concurrency=4) as llm:
        with pytest.raises(BudgetExceededError, match="budget.max_tokens"):
            llm.generate(convs, PARAMS, [0])
    served = [r.usage for r in srv.requests]
    assert served and all(u is not None for u in served)
    spent = sum(u["total_tokens"] for u in served)
    assert spent == budget.tokens <= limit
    assert len(served) < len(convs)


def test_cost_budget(srv):
    cfg = BudgetConfig(max_cost_usd=0.1, price_per_million_input=100.0, price_per_million_output=200.0)
    budget = Budget(cfg)
    with make(srv, budget, max_concurrency=1) as llm:
        with pytest.raises(BudgetExceededError, match="budget.max_cost_usd"):
            llm.generate([conv(f"q{i}") for i in range(50)], PARAMS, [0])
    assert 0.05 < budget.cost_usd <= 0.1
    served = [r.usage for r in srv.requests]
    assert budget.cost_usd == pytest.approx(
        sum(u["prompt_tokens"] * 100 + u["completion_tokens"] * 200 for u in served) / 1e6
    )
    with pytest.raises(ConfigError, match="price_per_million"):
        Budget(BudgetConfig(max_cost_usd=1.0))


def test_persisted_budget_reloads_and_raising_the_limit_resumes(srv, tmp_path):
    path = tmp_path / "run" / "api_budget.json"
    b1 = Budget(BudgetConfig(max_calls=3), path)
    with make(srv, b1, max_concurrency=1) as llm:
        llm.generate([conv("a"), conv("b"), conv("c")], PARAMS, [0])
        with pytest.raises(BudgetExceededError):
            llm.generate([conv("d")], PARAMS, [0])
    assert json.loads(path.read_text())["calls"] == 3
    tokens_before = b1.tokens

    b2 = Budget(BudgetConfig(max_calls=3), path)  # resumed run, same limit
    assert (b2.calls, b2.tokens) == (3, tokens_before)
    with make(srv, b2) as llm, pytest.raises(BudgetExceededError):
        llm.generate([conv("d")], PARAMS, [0])
    assert len(srv.requests) == 3

    b3 = Budget(BudgetConfig(max_calls=5), path)  # limit raised in the config
    with make(srv, b3, max_concurrency=1) as llm:
        llm.generate([conv("d"), conv("e")], PARAMS, [0])
    assert b3.calls == 5 and len(srv.requests) == 5
    assert Budget(BudgetConfig(), path).calls == 5
    assert [p.name for p in path.parent.iterdir()] == ["api_budget.json"]  # no temp files left


def test_in_flight_reservation_counts_after_a_kill(tmp_path):
    path = tmp_path / "b.json"
    b = Budget(BudgetConfig(max_tokens=1000), path)
    b.reserve(100, 50)  # the process dies before the response
    again = Budget(BudgetConfig(max_tokens=1000), path)
    assert again.calls == 1 and again.tokens == 150
    r = again.reserve(10, 10)
    again.commit(r, 3, 4)
    assert again.tokens == 157 and again.snapshot()["in_flight_calls"] == 0


def test_unknown_outcome_is_charged_at_worst_case(srv):
    budget = Budget(BudgetConfig())
    srv.add_faults(("delay", 1.0))
    with make(srv, budget, timeout_s=0.3, max_concurrency=1) as llm:
        llm.generate([conv("x")], PARAMS, [0])
    ok = srv.requests[1].usage
    assert budget.calls == 2
    assert budget.tokens == prompt_token_bound(conv("x")) + PARAMS.max_new_tokens + ok["total_tokens"]


def test_http_errors_count_a_call_but_no_tokens(srv):
    budget = Budget(BudgetConfig())
    srv.add_faults("429")
    with make(srv, budget) as llm:
        llm.generate([conv("x")], PARAMS, [0])
    assert budget.calls == 2 and budget.tokens == srv.requests[1].usage["total_tokens"]


# ---------------------------------------------------------------------------- API key hygiene


def _all_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc.args)


def test_api_key_never_leaks(srv, monkeypatch, caplog):
    key = "sk-test-" + secrets.token_hex(16)
    monkeypatch.setenv(KEY_ENV, key)
    caplog.set_level(logging.DEBUG)
    budget = Budget(BudgetConfig(max_calls=7))
    sleeps: list[float] = []
    llm = make(srv, budget, sleeps=sleeps, api_key_env=KEY_ENV, max_retries=1, max_concurrency=1)
    texts = [repr(llm), str(llm), llm.model_id, repr(llm.__dict__)]
    with llm:
        srv.add_faults("429")
        [[g]] = llm.generate([conv("hi")], PARAMS, [0])  # a logged retry, then success
        texts.append(repr(g))
        texts.append(repr(llm.choice_logprobs([conv("hi")], ["A", "B"])))
        srv.add_faults("401")  # the server echoes the key it received
        with pytest.raises(BackendError) as e401:
            llm.generate([conv("hi")], PARAMS, [0])
        srv.add_faults("500", "500")
        with pytest.raises(BackendError) as egive:
            llm.generate([conv("hi")], PARAMS, [0])
        with pytest.raises(BudgetExceededError) as ebudget:
            llm.generate([conv("hi")] * 3, PARAMS, [0])
    assert "HTTP 401" in str(e401.value) and "***" in str(e401.value)
    assert all(r.headers.get("Authorization") == f"Bearer {key}" for r in srv.requests)
    texts += [_all_text(e401.value), _all_text(egive.value), _all_text(ebudget.value), caplog.text]
    texts += [r.getMessage() for r in caplog.records]
    assert caplog.text  # retries were logged
    for t in texts:
        assert key not in t
        assert key[8:] not in t


def test_key_read_at_request_time_and_missing_key_is_one_clear_line(srv, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with make(srv, api_key_env=KEY_ENV) as llm:
        with pytest.raises(BackendError, match=f"{KEY_ENV}.*not set"):
            llm.generate([conv("x")], PARAMS, [0])
        assert srv.requests == []
        monkeypatch.setenv(KEY_ENV, "k-123")
        llm.generate([conv("x")], PARAMS, [0])
    assert srv.requests[0].headers["Authorization"] == "Bearer k-123"


def test_repr_shows_model_and_api_base_only(srv):
    llm = make(srv)
    assert repr(llm) == f"OpenAICompatLLM(model='fake-model', api_base='{srv.url}')"
    llm.close()
    default = OpenAICompatLLM(ModelSpec(model="gpt-4o", backend="openai"))
    assert default.model_id == "openai:gpt-4o@https://api.openai.com/v1"
    default.close()


# ---------------------------------------------------------------------------- choice log-probabilities


def test_choice_logprobs_matching_and_prefill(srv):
    srv.set_top_logprobs([("A", math.log(0.6)), (" A", math.log(0.1)), ("B\n", math.log(0.2)), ("10", -5.0)])
    with make(srv) as llm:
        assert llm.exact_logprobs is False
        out = llm.choice_logprobs([conv("pick"), conv("again")], ["A", "B", "C", "10"], assistant_prefix="Verdict:")
    for row in out:
        assert row == pytest.approx([math.log(0.7), math.log(0.2), MISSING_LOGPROB, -5.0])
    body = srv.requests[0].body
    assert body["max_tokens"] == 1 and body["logprobs"] is True and body["top_logprobs"] == 20
    assert body["messages"][-1] == {"role": "assistant", "content": "Verdict:"}
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False


def test_choice_logprobs_without_prefix_sends_no_prefill(srv):
    with make(srv) as llm:
        [row] = llm.choice_logprobs([conv("pick")], ["A", "B", "zzz"])
    assert row[2] == MISSING_LOGPROB and row[0] > MISSING_LOGPROB and row[1] > MISSING_LOGPROB
    body = srv.requests[0].body
    assert body["messages"][-1]["role"] == "user"
    assert "continue_final_message" not in body and "add_generation_prompt" not in body


def test_match_choices_unit():
    top = [{"token": " yes", "logprob": -0.1}, {"token": "no", "logprob": -2.3}]
    assert match_choices(top, ["yes", "no", "maybe"]) == pytest.approx([-0.1, -2.3, math.log(1e-6)])


def test_official_api_gets_no_prefill_keys_and_missing_logprobs_is_not_retried(monkeypatch):
    bodies = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json={"choices": [{"message": {"content": "A"}, "logprobs": None}]})

    spec = ModelSpec(model="gpt-4o", backend="openai")
    sleeps: list[float] = []
    with OpenAICompatLLM(spec, sleep=sleeps.append, transport=httpx.MockTransport(handler)) as llm:
        with pytest.raises(BackendError, match="no logprobs.*judge_mode: generate"):
            llm.choice_logprobs([conv("x")], ["A", "B"], assistant_prefix="Answer:")
    assert len(bodies) == 1 and sleeps == []
    assert "continue_final_message" not in bodies[0] and "add_generation_prompt" not in bodies[0]
