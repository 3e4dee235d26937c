"""The llama.cpp backend's AMX probe: a CPU that lists AMX but faults on it must not kill
the process that loads a model."""

from __future__ import annotations

import subprocess

import pytest

from evalign.backends import llamacpp_backend as lcb

llama_cpp = pytest.importorskip("llama_cpp")


@pytest.fixture
def gguf(tmp_path, monkeypatch):
    monkeypatch.setenv("EVALIGN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(lcb.PROBE_ENV, raising=False)
    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF")
    return path


def _child(returncode, calls):
    def run(argv, **kw):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, returncode)
    return run


def test_a_cpu_without_amx_needs_no_probe(gguf, monkeypatch):
    calls = []
    monkeypatch.setattr(lcb, "_cpu_flags", lambda: {"avx2", "avx512f"})
    monkeypatch.setattr(lcb.subprocess, "run", _child(0, calls))
    assert lcb.extra_buffers_run(gguf) is True and calls == []


def test_a_child_killed_by_amx_turns_the_extra_buffers_off_once(gguf, monkeypatch, caplog):
    calls = []
    monkeypatch.setattr(lcb, "_cpu_flags", lambda: {"amx_tile", "avx512f"})
    monkeypatch.setattr(lcb.subprocess, "run", _child(-4, calls))  # SIGILL
    assert lcb.extra_buffers_run(gguf) is False
    assert "fail on this CPU" in caplog.text
    assert calls[0][-2:] == ["--probe", str(gguf)]
    assert lcb.extra_buffers_run(gguf) is False and len(calls) == 1  # the answer is cached


def test_a_working_amx_keeps_them_and_the_environment_overrides(gguf, monkeypatch):
    calls = []
    monkeypatch.setattr(lcb, "_cpu_flags", lambda: {"amx_tile"})
    monkeypatch.setattr(lcb.subprocess, "run", _child(0, calls))
    assert lcb.extra_buffers_run(gguf) is True and len(calls) == 1
    monkeypatch.setenv(lcb.PROBE_ENV, "0")
    assert lcb.extra_buffers_run(gguf) is False and len(calls) == 1


def test_loading_without_extra_buffers_sets_the_parameter_and_restores_the_default():
    lib = llama_cpp.llama_cpp
    default = lib.llama_model_default_params
    with lcb._extra_buffers(False):
        assert lib.llama_model_default_params().use_extra_bufts is False
    assert lib.llama_model_default_params is default
    assert lib.llama_model_default_params().use_extra_bufts is True
    with lcb._extra_buffers(True):
        assert lib.llama_model_default_params is default


@pytest.mark.slow
def test_a_score_does_not_depend_on_what_was_scored_before():
    """Resume identity: llama.cpp's results depend on how tokens are batched, so a prompt must
    be evaluated the same way whatever the KV cache held (here: other answers to the same
    question, in two orders, and a generation in between)."""
    from evalign import weights
    from evalign.backends.base import GenParams

    llm = lcb.LlamaCppLLM(weights.gguf_path("qwen2.5-coder-1.5b-instruct"))  # the built-in judge
    # Long enough that the shared question spans several blocks and the answers end in
    # different blocks: what is reused, and how the rest is batched, differs per order.
    question = ("Explain why the sky is blue in two sentences, for a curious child of seven who has "
                "just asked why it is not green or purple instead, and who already knows that sunlight "
                "contains every colour of the rainbow and that air is made of tiny molecules. ") * 2
    answers = ["Air scatters blue light the most.",
               "Sunlight is made of every colour. When it enters the air, the tiny molecules bounce the "
               "short blue waves around much more than the long red ones, so blue light reaches your "
               "eyes from every direction of the sky. Violet is scattered even more, but the sun sends "
               "less of it and our eyes see it poorly, so the sky looks blue rather than purple.",
               "The sky reflects the ocean.", "I don't know. " * 30]

    def conv(a):
        return [{"role": "user", "content": f"{question}\nAnswer: {a}\nRate it from 1 to 10."}]

    def grades(order):
        return {i: llm.choice_logprobs([conv(answers[i])], [str(k) for k in range(1, 11)], "Rating: ")[0]
                for i in order}

    forward = grades([0, 1, 2, 3])
    text = llm.generate([conv(answers[0])], GenParams(12, 0.7, 0.9), [3])[0][0].text
    backward = grades([3, 2, 1, 0])
    alone = {}
    for i in range(4):
        llm.llm.reset()
        llm._canonical = []
        alone[i] = grades([i])[i]
    assert forward == backward == alone
    grades([2])
    assert llm.generate([conv(answers[0])], GenParams(12, 0.7, 0.9), [3])[0][0].text == text


@pytest.mark.slow
def test_logits_do_not_depend_on_a_prefix_left_in_the_cache():
    """A long prompt whose first 45 tokens were left in the cache by another prompt (a
    prefix that ends inside a block) gives bitwise the logits it gives from an empty cache."""
    import numpy as np

    from evalign import weights

    llm = lcb.LlamaCppLLM(weights.gguf_path("qwen2.5-coder-1.5b-instruct"))
    text = " ".join(f"Step {i}: add {i * 7 % 13} apples to the basket and count them again." for i in range(40))
    first = llm.encode(text)[:300]
    other = first[:45] + llm.encode(" Something else entirely, written to differ here.")[:20] + first[65:]

    def logprobs(tokens):
        llm._evaluate(tokens[:-1])
        llm.llm.eval(tokens[-1:])
        return llm._next_logprobs()

    cold = logprobs(first)
    logprobs(other)
    assert np.array_equal(logprobs(first), cold)
    logprobs(first[:200])  # a shorter prompt, whole blocks shared
    assert np.array_equal(logprobs(first), cold)
