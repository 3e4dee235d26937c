"""The config sections shared by several stages: a model spec, sampling, API budget, Ray.

Every section forbids unknown keys (a typo is an error naming the key) and validates on
assignment. Fields named by a registry (``backend``) take their choices from it.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from evalign.config.choices import BackendName


class Section(BaseModel):
    # allow_inf_nan=False: an inf or nan (YAML .inf, .nan) in any float field is a config error.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


#: vLLM's share of a GPU unless a model says otherwise (see ModelSpec.gpu_memory_utilization).
DEFAULT_GPU_MEMORY_UTILIZATION = 0.45


class ModelSpec(Section):
    """Which model, on which backend. ``model`` is a built-in name, a local directory or
    file, a Hugging Face hub id, or (backend ``openai``) the API's model name."""

    model: str = Field(
        description="Built-in name, local directory/file, Hugging Face hub id, or the API's model name."
    )
    backend: BackendName = Field(
        "auto", description="Registered backend (evalign.backends.registry), or auto: chosen from the model."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights' dtype; auto: bf16 where the device has it, else fp32 (vLLM: the checkpoint's)."
    )
    chat_template: str | None = Field(
        None, description="Jinja chat template, used only for a model that ships none."
    )
    trust_remote_code: bool = Field(
        False, description="Run the checkpoint's own Python code (ArmoRM needs it); off unless asked."
    )
    revision: str | None = Field(None, description="Hub branch, tag or commit to load (transformers).")
    batch_size: int = Field(16, ge=1, description="Prompts per forward pass (transformers).")
    # llama.cpp
    n_ctx: int = Field(4096, ge=256, description="llama.cpp context window in tokens (prompt + answer).")
    n_threads: int | None = Field(
        None, ge=1, description="llama.cpp CPU threads; None: every core this process may use."
    )
    # OpenAI-compatible HTTP
    api_base: str | None = Field(None, description="Base URL of an OpenAI-compatible API (openai backend).")
    api_key_env: str | None = Field(
        None, description="Name of the environment variable holding the API key (never the key)."
    )
    max_concurrency: int = Field(8, ge=1, description="Requests in flight at once to the API.")
    timeout_s: float = Field(120.0, gt=0, description="Seconds to wait for one API response before retrying.")
    max_retries: int = Field(
        6, ge=0, description="Retries of a failed API call (exponential backoff with jitter)."
    )
    # vLLM
    tensor_parallel_size: int = Field(1, ge=1, description="vLLM: GPUs one engine's weights are split over.")
    data_parallel_size: int = Field(
        1, ge=1, description="vLLM: engine replicas in one process, where the installed vLLM can (else: the Ray executor)."
    )
    # 0.45 leaves a GPU room for a second model beside this engine: another vLLM engine at
    # the same default (a local judge or creator; 2 x 0.45 = 0.9), or the classifier reward
    # model the driver loads on cuda:0 (ArmoRM-8B bf16 + activations ~20 GB = 0.25 of 80 GB),
    # plus ~10% for the CUDA contexts and allocator slack outside vLLM's budget. Under Ray it
    # is also the worker's fractional GPU share (backends/ray_pool.py). docs/scaling.md.
    gpu_memory_utilization: float = Field(
        DEFAULT_GPU_MEMORY_UTILIZATION, gt=0, le=1,
        description="vLLM: fraction of GPU memory the engine may take (weights + KV cache); the default "
        "0.45 leaves room for a reward model or a second engine on the same GPU.",
    )
    enable_prefix_caching: bool = Field(
        True, description="vLLM: reuse the KV cache of a shared prompt prefix (k samples per prompt)."
    )
    max_model_len: int | None = Field(
        None, ge=256, description="vLLM: longest sequence in tokens; None: the model's own limit."
    )

    @field_validator("api_key_env")
    @classmethod
    def _looks_like_a_variable_name(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v):
            raise ValueError(
                "must be the NAME of an environment variable (e.g. OPENAI_API_KEY), not a key"
            )
        return v


def builtin_judge() -> ModelSpec:
    """The CPU default for the creator, the reward judge and the evaluation judge."""
    return ModelSpec(model="qwen2.5-coder-1.5b-instruct", backend="llamacpp")


#: The highest sampling temperature every backend accepts (vLLM's SamplingParams: [0, 2]).
MAX_TEMPERATURE = 2.0


class SamplingConfig(Section):
    """Decoding settings of one generation stage."""

    max_new_tokens: int = Field(256, ge=1, description="Longest generated answer, in tokens.")
    # The bounds are the strictest backend's: vLLM's SamplingParams takes temperature in [0, 2]
    # and top_p in (0, 1], as do OpenAI-compatible APIs; llama.cpp and the transformers
    # backend take any temperature >= 0. A wider config would pass here and fail mid-run.
    temperature: float = Field(
        0.7, ge=0.0, le=MAX_TEMPERATURE,
        description="Sampling temperature; 0 is greedy, at most 2 (vLLM and OpenAI-compatible APIs reject more).",
    )
    top_p: float = Field(0.9, gt=0.0, le=1.0, description="Nucleus sampling: keep this much probability mass.")


class BudgetConfig(Section):
    """Per-run limits for paid API backends; a run stops cleanly before exceeding them."""

    max_calls: int | None = Field(None, ge=0, description="Most API calls in one run; None: no limit.")
    max_tokens: int | None = Field(
        None, ge=0, description="Most API tokens (input + output) in one run; None: no limit."
    )
    max_cost_usd: float | None = Field(
        None, ge=0, description="Most spend in US dollars; needs both prices below. None: no limit."
    )
    price_per_million_input: float | None = Field(
        None, ge=0, description="US dollars per million input tokens, to count cost."
    )
    price_per_million_output: float | None = Field(
        None, ge=0, description="US dollars per million output tokens, to count cost."
    )


class RayConfig(Section):
    """The Ray executor: generation served by worker actors."""

    address: str | None = Field(None, description="Ray cluster address; None starts a local one.")
    num_workers: int = Field(2, ge=1, description="Ray actors serving generation (one vLLM engine each).")
