"""Every backend, registered once in :data:`evalign.registry.BACKENDS`.

An entry names the module and class that implement the backend and carries the class's
declared :class:`~evalign.backends.base.BackendTraits`, so callers can ask what a backend is
(API or local, GPU or CPU, which weights) without importing it: the module, and the optional
package behind it (llama-cpp-python, vLLM), is imported only when a model is built. A test
checks that each entry's traits are its class's own.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from evalign import weights
from evalign.backends.base import LLM, BackendTraits
from evalign.errors import ConfigError
from evalign.registry import BACKENDS

if TYPE_CHECKING:
    from evalign.config import ModelSpec

#: ``build(spec, name, model_id, budget)``: ``name`` is the model or checkpoint path to read,
#: ``model_id`` the cache identity, ``budget`` the run's API budget (budgeted backends only).
Build = Callable[["ModelSpec", str, str, Any], LLM]


@dataclass(frozen=True)
class BackendInfo:
    name: str
    module: str
    cls_name: str
    traits: BackendTraits
    build: Build
    #: The optional package the backend imports (None: core dependencies only).
    requires: str | None = None

    def cls(self) -> type[LLM]:
        return getattr(importlib.import_module(self.module), self.cls_name)


def backend_info(name: str) -> BackendInfo:
    """The registered backend ``name`` (a resolved name, not ``auto``)."""
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend '{name}'")
    return BACKENDS.get(name)


def traits_of(name: str) -> BackendTraits:
    return backend_info(name).traits


def _transformers(spec: ModelSpec, name: str, model_id: str, budget: Any) -> LLM:
    from evalign.backends.transformers_backend import TransformersLLM

    return TransformersLLM(
        weights.resolve_hf_dir(name),
        model_id=model_id,
        dtype=spec.dtype,
        chat_template=spec.chat_template,
        trust_remote_code=spec.trust_remote_code,
        revision=spec.revision,
        batch_size=spec.batch_size,
    )


def _llamacpp(spec: ModelSpec, name: str, model_id: str, budget: Any) -> LLM:
    from evalign.backends.llamacpp_backend import LlamaCppLLM

    return LlamaCppLLM(
        weights.resolve_gguf(name),
        model_id=model_id,
        n_ctx=spec.n_ctx,
        n_threads=spec.n_threads,
        chat_template=spec.chat_template,
    )


def _openai(spec: ModelSpec, name: str, model_id: str, budget: Any) -> LLM:
    from evalign.backends.openai_compat import OpenAICompatLLM

    return OpenAICompatLLM(spec, budget=budget)


def _vllm(spec: ModelSpec, name: str, model_id: str, budget: Any) -> LLM:
    from evalign.backends.vllm_backend import VllmLLM

    return VllmLLM(spec, path=weights.resolve_hf_dir(name), model_id=model_id)


def _scripted(spec: ModelSpec, name: str, model_id: str, budget: Any) -> LLM:
    from evalign.backends.scripted import SCRIPTS, ScriptedLLM

    if spec.model not in SCRIPTS:
        raise ConfigError(f"no scripted model '{spec.model}'; registered: {', '.join(SCRIPTS)}")
    gen_fn, choice_fn = SCRIPTS[spec.model]
    return ScriptedLLM(gen_fn, choice_fn, model_id=model_id)


for _info in (
    BackendInfo("transformers", "evalign.backends.transformers_backend", "TransformersLLM",
                BackendTraits(device="gpu-if-present", weights="hf"), _transformers),
    BackendInfo("llamacpp", "evalign.backends.llamacpp_backend", "LlamaCppLLM",
                BackendTraits(device="cpu", weights="gguf"), _llamacpp, requires="llama_cpp"),
    BackendInfo("openai", "evalign.backends.openai_compat", "OpenAICompatLLM",
                BackendTraits(exact_logprobs=False, remote_api=True, device="remote", weights=None), _openai),
    BackendInfo("vllm", "evalign.backends.vllm_backend", "VllmLLM",
                BackendTraits(device="gpu", weights="hf", tensor_parallel=True), _vllm, requires="vllm"),
    BackendInfo("scripted", "evalign.backends.scripted", "ScriptedLLM",
                BackendTraits(device="none", weights=None), _scripted),
):
    BACKENDS.register(_info.name, _info)
