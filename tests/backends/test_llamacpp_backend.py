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
