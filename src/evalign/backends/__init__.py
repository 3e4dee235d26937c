"""Backends behind one ``LLM`` protocol, and :func:`load_llm` to build one from a ModelSpec.

``backend: auto`` picks llama.cpp for GGUF files and built-in models (the fast CPU path),
vLLM when a GPU and vLLM are present, transformers otherwise.
"""

from __future__ import annotations

import atexit
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

from evalign.backends.base import LLM, BackendTraits, CallStats, Conversation, Generation, GenParams, Message
from evalign.backends.registry import backend_info, traits_of

if TYPE_CHECKING:
    from evalign.config import ModelSpec

__all__ = ["LLM", "BackendTraits", "CallStats", "Conversation", "Generation", "GenParams", "Message",
           "backend_info", "load_llm", "resolve_backend", "traits_of"]

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
    from evalign import weights

    if weights.is_builtin(spec.model) or str(spec.model).endswith(".gguf"):
        return "llamacpp"
    if _gpu_available() and _installed("vllm"):
        return "vllm"
    return "transformers"


def _gpu_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False


def _installed(backend: str) -> bool:
    """Whether the optional package a backend needs is importable (without importing it)."""
    import importlib.util

    requires = backend_info(backend).requires
    return requires is None or importlib.util.find_spec(requires) is not None


def load_llm(spec: ModelSpec, *, model_id: str | None = None, budget=None, path: str | Path | None = None) -> LLM:
    """Build the backend a ModelSpec names. ``path`` overrides where weights are read from
    (a trained checkpoint directory); ``model_id`` overrides the cache identity."""
    from evalign import weights

    backend = resolve_backend(spec)
    name = str(path) if path is not None else spec.model
    if path is None:
        weights.check_model_name(name, backend)
    fingerprint = model_id or weights.model_fingerprint(name)
    info = backend_info(backend)
    llm = info.build(spec, name, fingerprint, budget if info.traits.budgeted else None)
    _open.add(llm)
    return llm
