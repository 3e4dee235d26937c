"""Backends behind one ``LLM`` protocol, and :func:`load_llm` to build one from a ModelSpec.

``backend: auto`` picks llama.cpp for GGUF files and built-in models (the fast CPU path),
vLLM when a GPU and vLLM are present, transformers otherwise.
"""

from __future__ import annotations

import atexit
import weakref
from pathlib import Path

from evalign.config import ModelSpec
from evalign.errors import ConfigError
from evalign.backends.base import LLM, CallStats, Conversation, Generation, GenParams, Message

__all__ = ["LLM", "CallStats", "Conversation", "Generation", "GenParams", "Message", "load_llm", "resolve_backend"]

_open: "weakref.WeakSet[LLM]" = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    # llama.cpp contexts freed during interpreter teardown print tracebacks; free them first.
    for llm in list(_open):
        try:
            llm.close()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


def resolve_backend(spec: ModelSpec) -> str:
    if spec.backend != "auto":
        return spec.backend
    from evalign import weights as models

    if models.is_builtin(spec.model) or str(spec.model).endswith(".gguf"):
        return "llamacpp"
    if _gpu_available() and _has_module("vllm"):
        return "vllm"
    return "transformers"


def _gpu_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def load_llm(spec: ModelSpec, *, model_id: str | None = None, budget=None, path: str | Path | None = None) -> LLM:
    """Build the backend a ModelSpec names. ``path`` overrides where weights are read from
    (a trained checkpoint directory); ``model_id`` overrides the cache identity."""
    from evalign import weights as models

    backend = resolve_backend(spec)
    name = str(path) if path is not None else spec.model
    if path is None:
        models.check_model_name(name, backend)
    fingerprint = model_id or models.model_fingerprint(name)
    llm: LLM
    if backend == "transformers":
        from evalign.backends.transformers_backend import TransformersLLM

        llm = TransformersLLM(
            models.resolve_hf_dir(name),
            model_id=fingerprint,
            dtype=spec.dtype,
            chat_template=spec.chat_template,
            trust_remote_code=spec.trust_remote_code,
            revision=spec.revision,
            batch_size=spec.batch_size,
        )
    elif backend == "llamacpp":
        from evalign.backends.llamacpp_backend import LlamaCppLLM

        llm = LlamaCppLLM(
            models.resolve_gguf(name),
            model_id=fingerprint,
            n_ctx=spec.n_ctx,
            n_threads=spec.n_threads,
            chat_template=spec.chat_template,
        )
    elif backend == "openai":
        from evalign.backends.openai_compat import OpenAICompatLLM

        llm = OpenAICompatLLM(spec, budget=budget)
    elif backend == "vllm":
        from evalign.backends.vllm_backend import VllmLLM

        llm = VllmLLM(spec, path=models.resolve_hf_dir(name), model_id=fingerprint)
    elif backend == "scripted":
        from evalign.backends.scripted import SCRIPTS, ScriptedLLM

        if spec.model not in SCRIPTS:
            raise ConfigError(f"no scripted model '{spec.model}'; registered: {', '.join(SCRIPTS)}")
        gen_fn, choice_fn = SCRIPTS[spec.model]
        llm = ScriptedLLM(gen_fn, choice_fn, model_id=fingerprint)
    else:  # pragma: no cover - pydantic restricts the names
        raise ConfigError(f"unknown backend '{backend}'")
    _open.add(llm)
    return llm
