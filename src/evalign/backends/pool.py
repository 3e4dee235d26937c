"""Models for one process: each loaded once, lazily, and shared between roles.

The creator, the reward judge and the evaluation judge are often the same model (the
built-in 1.5B on CPU); the pool loads it once. Models are wrapped in :class:`LazyLLM`, whose
``model_id`` is known from the config alone, so a resumed run whose work is all cached never
loads a model at all. Only one policy checkpoint is kept in memory at a time.

With ``executor="ray"`` (``run.executor``) every local model -- creator, judge, the policy's
sampling -- is served by ``ray.num_workers`` Ray actors (:class:`backends.ray_pool.RayLLM`);
API models stay in the driver, and so does the classifier reward model (``reward.py``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

from evalign import weights
from evalign.backends import load_llm, resolve_backend
from evalign.backends.base import LLM, ForwardingLLM
from evalign.backends.http import DEFAULT_API_BASE
from evalign.backends.registry import traits_of
from evalign.config import ModelSpec

log = logging.getLogger(__name__)


class LazyLLM(ForwardingLLM):
    """An LLM loaded on first use; ``model_id`` and ``exact_logprobs`` are known before."""

    def __init__(self, factory: Callable[[], LLM], model_id: str, exact_logprobs: bool) -> None:
        super().__init__()
        self._factory = factory
        self._inner: LLM | None = None
        self.model_id = model_id
        self.exact_logprobs = exact_logprobs

    @property
    def inner(self) -> LLM:
        if self._inner is None:
            log.info("loading model %s", self.model_id)
            self._inner = self._factory()
            self.stats = self._inner.stats
        return self._inner

    @property
    def loaded(self) -> bool:
        return self._inner is not None

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()
            self._inner = None


def spec_model_id(spec: ModelSpec, path: str | None = None) -> str:
    """The cache identity of a model from its config (no loading)."""
    backend = resolve_backend(spec)
    traits = traits_of(backend)
    if traits.remote_api:
        return f"{backend}:{spec.model}@{spec.api_base or DEFAULT_API_BASE}"
    if traits.weights is None:
        return f"{backend}:{spec.model}"
    return f"{backend}:{weights.model_fingerprint(path or spec.model)}"


class ModelPool:
    def __init__(self, budget=None, *, executor: str = "inprocess", ray_cfg=None) -> None:
        """``executor``: "inprocess" (default) or "ray"; ``ray_cfg``: ``config.RayConfig``
        (address None starts a local cluster of ``num_workers`` CPUs when first needed)."""
        self.budget = budget
        self.executor = executor
        self._shared: dict[str, LazyLLM] = {}
        self._policy: LazyLLM | None = None
        self._ray_started = False
        if executor == "ray":
            from evalign.backends.ray_pool import require_ray
            from evalign.config import RayConfig

            require_ray()
            self.ray_cfg = ray_cfg or RayConfig()
        else:
            self.ray_cfg = ray_cfg

    def _load(self, spec: ModelSpec, model_id: str, path: str | Path | None = None) -> LLM:
        if self.executor == "ray" and traits_of(resolve_backend(spec)).ray_shardable:
            from evalign.backends.ray_pool import RayLLM, ensure_ray

            self._ray_started |= ensure_ray(self.ray_cfg)
            return RayLLM(spec, self.ray_cfg.num_workers, model_id=model_id, path=path)
        return load_llm(spec, model_id=model_id, budget=self.budget, path=path)

    def get(self, spec: ModelSpec) -> LazyLLM:
        """A creator/judge model, shared by every role with an equal spec."""
        key = json.dumps(spec.model_dump(mode="json"), sort_keys=True)
        if key not in self._shared:
            mid = spec_model_id(spec)
            self._shared[key] = LazyLLM(
                lambda: self._load(spec, mid), mid, traits_of(resolve_backend(spec)).exact_logprobs
            )
        return self._shared[key]

    def policy(self, spec: ModelSpec, path: str | Path | None, policy_id: str) -> LazyLLM:
        """The policy at ``path`` (None: the starting model); the previous one is freed."""
        if self._policy is not None and self._policy.model_id == policy_id:
            return self._policy
        if self._policy is not None:
            self._policy.close()
        self._policy = LazyLLM(lambda: self._load(spec, policy_id, path), policy_id, True)
        return self._policy

    def release_policy(self) -> None:
        if self._policy is not None:
            self._policy.close()
            self._policy = None

    def close_shared(self) -> None:
        """Unload creator/judge models; they reload lazily on next use."""
        for llm in self._shared.values():
            llm.close()

    def close(self) -> None:
        self.release_policy()
        self.close_shared()
        self._shared.clear()
        if self._ray_started:
            import ray

            ray.shutdown()
            self._ray_started = False
