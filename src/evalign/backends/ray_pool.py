"""The ``run.executor: ray`` path: one model served by N Ray actors.

:class:`RayLLM` is an ``LLM`` whose ``generate`` / ``choice_logprobs`` split each batch over N
workers (Ray actors). Each worker builds its own backend with :func:`load_llm` from the same
ModelSpec, so it runs transformers, vLLM or llama.cpp exactly as the driver would; the
driver reassembles the results in the original order. The caller stays in the driver, so
``generation.cached_generate`` keeps writing the run store there (workers never touch it).

Results equal the in-process ones because a sample depends only on (model, prompt, params,
seed): every backend draws sample j of a prompt from ``sample_seed(seeds[j], prompt)``,
whatever batch it is in. Splitting a batch by prompts (or, for few prompts, by seeds) and
concatenating therefore changes where a sample is computed, not what it is. Choice
log-probabilities are deterministic functions of the prompt.

Placement (one actor = one backend instance):

* vLLM with ``tensor_parallel_size`` tp > 1: ``num_gpus=tp`` per worker; vLLM keeps its tp
  workers as local processes on those GPUs.
* vLLM / transformers on one GPU: ``num_gpus=gpu_memory_utilization`` -- a fractional
  share, so a policy and a local judge whose shares sum to at most 1 can both be placed
  instead of the second model waiting forever for GPUs the first holds. Ray packs fractional
  shares onto one GPU while they fit, so give the policy more than 0.5 (0.55-0.9) for one
  policy worker per GPU; ``RayLLM.placement`` and the log show where workers landed.
* Every worker, on a GPU or not, asks for ``num_cpus=0.25`` (``CPU_SHARE``), so the workers
  of up to four models (policy, creator, reward judge, eval judge) fit the local cluster
  that ``ray.init(num_cpus=num_workers)`` starts; only one model computes at a time because
  the driver waits for each call. (A GPU worker asking for a whole CPU would leave a
  second local GPU model -- a vLLM judge beside the policy -- waiting forever for CPUs
  the policy's workers hold, GPUs free or not.)

Workers are spread over the cluster's nodes (``SPREAD``). On a multi-node cluster every node
needs evalign and the models at the same paths (a shared filesystem for checkpoints).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evalign.errors import BackendError, ConfigError, EvalignError
from evalign.backends.base import LLM, Conversation, Generation, GenParams
from evalign.backends.registry import traits_of

log = logging.getLogger(__name__)

CPU_SHARE = 0.25
START_TIMEOUT_ENV = "EVALIGN_RAY_START_TIMEOUT"


# ---------------------------------------------------------------------------- cluster


def ray_available() -> bool:
    return importlib.util.find_spec("ray") is not None


def require_ray() -> None:
    if not ray_available():
        raise ConfigError('run.executor is "ray" but Ray is not installed; pip install -e ".[ray]" '
                          "or set run.executor: inprocess")


def ensure_ray(ray_cfg) -> bool:
    """Connect to (``ray_cfg.address``) or start (address None: a local cluster with
    ``num_cpus=num_workers``) Ray unless it is already initialised; True if this call did."""
    require_ray()
    import ray

    if ray.is_initialized():
        return False
    if ray_cfg.address:
        log.info("connecting to the Ray cluster at %s", ray_cfg.address)
        try:
            ray.init(address=ray_cfg.address, log_to_driver=_log_to_driver())
        except ConnectionError as exc:
            raise BackendError(f"run.ray.address {ray_cfg.address!r}: cannot connect to a Ray cluster "
                               f"({str(exc).splitlines()[0][:160]}); start one with `ray start --head`") from None
    else:
        opts = local_cluster_options(ray_cfg)
        log.info("starting a local Ray cluster (%g CPUs)", opts["num_cpus"])
        ray.init(**opts)
    return True


def local_cluster_options(ray_cfg) -> dict[str, Any]:
    """``ray.init`` arguments of the local cluster (run.ray.address None); Ray detects the GPUs."""
    return {"num_cpus": ray_cfg.num_workers, "include_dashboard": False, "log_to_driver": _log_to_driver()}


def _log_to_driver() -> bool:
    """Workers' output goes to Ray's log files (/tmp/ray/session_latest/logs), not the
    console, unless EVALIGN_RAY_LOG_TO_DRIVER=1."""
    return os.environ.get("EVALIGN_RAY_LOG_TO_DRIVER", "") not in ("", "0")


def actor_options(spec, backend: str, cluster_gpus: float) -> dict[str, Any]:
    """Resources one worker of ``spec`` asks Ray for (see the module docstring)."""
    traits = traits_of(backend)
    if traits.wants_gpu and cluster_gpus > 0:
        tp = spec.tensor_parallel_size if traits.tensor_parallel else 1
        gpus = float(tp) if tp > 1 else float(spec.gpu_memory_utilization)
        return {"num_cpus": CPU_SHARE, "num_gpus": gpus, "scheduling_strategy": "SPREAD"}
    return {"num_cpus": CPU_SHARE, "num_gpus": 0, "scheduling_strategy": "SPREAD"}


def split(n: int, parts: int) -> list[range]:
    """``range(n)`` cut into at most ``parts`` contiguous, balanced, non-empty pieces."""
    parts = max(1, min(parts, n))
    base, extra = divmod(n, parts)
    out, start = [], 0
    for k in range(parts):
        size = base + (1 if k < extra else 0)
        out.append(range(start, start + size))
        start += size
    return [r for r in out if len(r)]


def plan_generate(n_convs: int, n_seeds: int, workers: int) -> list[tuple[range, range]]:
    """Pieces of a generate call: by prompts; by seeds when there are fewer prompts than
    workers (one judge prompt with 6 samples still uses 6 workers)."""
    if n_convs == 0 or n_seeds == 0:
        return []
    if n_convs >= workers or n_seeds == 1:
        return [(r, range(n_seeds)) for r in split(n_convs, workers)]
    return [(range(n_convs), r) for r in split(n_seeds, workers)]


# ---------------------------------------------------------------------------- the worker


class _Worker:
    """One backend instance inside a Ray actor."""

    def __init__(self, spec, model_id: str | None, path: str | None) -> None:
        from evalign.backends import load_llm
        from evalign.backends.vllm_backend import RAY_WORKER_ENV

        os.environ[RAY_WORKER_ENV] = "1"
        os.environ.setdefault("EVALIGN_QUIET", "1")
        self.llm = load_llm(spec, model_id=model_id, path=path)

    def info(self) -> dict[str, Any]:
        import ray

        return {"model_id": self.llm.model_id, "exact_logprobs": self.llm.exact_logprobs,
                "pid": os.getpid(), "node": os.uname().nodename, "gpus": [str(g) for g in ray.get_gpu_ids()]}

    def generate(self, conversations, params, seeds):
        return self.llm.generate(conversations, params, seeds)

    def choice_logprobs(self, conversations, choices, assistant_prefix):
        return self.llm.choice_logprobs(conversations, choices, assistant_prefix)

    def count_tokens(self, text):
        return self.llm.count_tokens(text)

    def truncate(self, text, max_tokens):
        return self.llm.truncate(text, max_tokens)

    def close(self) -> None:
        self.llm.close()


def _reraise(exc: BaseException, what: str):
    """Turn a worker's failure into the driver's error: a user error stays one line."""
    cause = getattr(exc, "cause", None)
    seen = 0
    while cause is not None and not isinstance(cause, EvalignError) and seen < 5:
        cause, seen = getattr(cause, "cause", None), seen + 1
    if isinstance(cause, EvalignError):
        raise type(cause)(str(cause)) from None
    text = str(exc)
    for line in text.splitlines():
        for name in ("ConfigError", "ModelNotFoundError", "BackendError", "InputError"):
            if line.startswith(f"evalign.errors.{name}: ") or line.startswith(f"{name}: "):
                from evalign import errors

                raise getattr(errors, name)(line.split(": ", 1)[1]) from None
    raise BackendError(f"Ray worker failed while {what}: {text.strip().splitlines()[-1][:300] if text.strip() else exc!r}") from exc


# ---------------------------------------------------------------------------- the driver side


class RayLLM(LLM):
    """An ``LLM`` served by ``num_workers`` Ray actors, each holding its own backend."""

    def __init__(self, spec, num_workers: int, *, model_id: str | None = None, path: str | Path | None = None,
                 options: dict[str, Any] | None = None, start_timeout_s: float | None = None) -> None:
        super().__init__()
        require_ray()
        import ray

        from evalign.backends import resolve_backend

        if not ray.is_initialized():
            raise BackendError("RayLLM needs Ray to be initialised first (backends.ray_pool.ensure_ray)")
        backend = resolve_backend(spec)
        if not traits_of(backend).ray_shardable:
            raise ConfigError("API models are served in the driver (they are already concurrent); "
                              f"use load_llm for backend {backend}")
        self.spec, self.num_workers = spec, int(num_workers)
        if self.num_workers < 1:
            raise ConfigError("run.ray.num_workers must be at least 1")
        opts = options or actor_options(spec, backend, ray.cluster_resources().get("GPU", 0.0))
        actor_cls = ray.remote(_Worker)
        path_s = str(path) if path is not None else None
        self._ray = ray
        self._actors = [actor_cls.options(**opts).remote(spec, model_id, path_s) for _ in range(self.num_workers)]
        self._rr = 0
        timeout = start_timeout_s if start_timeout_s is not None else float(os.environ.get(START_TIMEOUT_ENV, "900"))
        info = self._wait_ready(timeout, opts)
        self.model_id = model_id or info["model_id"]
        self.exact_logprobs = bool(info["exact_logprobs"])
        log.info("model %s on %d Ray workers (%s)", self.model_id, self.num_workers, opts)

    def _wait_ready(self, timeout: float, opts: dict[str, Any]) -> dict[str, Any]:
        ray = self._ray
        refs = [a.info.remote() for a in self._actors]
        deadline = time.monotonic() + timeout
        pending = list(refs)
        while pending:
            _done, pending = ray.wait(pending, num_returns=len(pending), timeout=min(30.0, max(0.1, deadline - time.monotonic())))
            if pending and time.monotonic() >= deadline:
                self.close()
                raise BackendError(
                    f"{len(pending)} of {self.num_workers} Ray workers for '{self.spec.model}' did not start within "
                    f"{timeout:.0f}s; each asks for {({k: v for k, v in opts.items() if k != 'scheduling_strategy'})}, "
                    f"the cluster has {ray.available_resources()} free: lower run.ray.num_workers or "
                    f"gpu_memory_utilization, or add nodes (worker logs: /tmp/ray/session_latest/logs)"
                )
        try:
            infos = ray.get(refs)
        except Exception as exc:  # noqa: BLE001 - re-raised as the user's error or a BackendError
            self.close()
            _reraise(exc, f"loading '{self.spec.model}'")
        placement = sorted({(i["node"], ",".join(i["gpus"]) or "cpu") for i in infos})
        log.info("workers of %s placed on %s", self.spec.model, placement)
        self.placement = [{"node": i["node"], "gpus": i["gpus"], "pid": i["pid"]} for i in infos]
        return infos[0]

    def _call(self, calls: list[tuple[int, str, tuple]], what: str) -> list[Any]:
        """Run ``(piece index, method, args)`` on workers round-robin; results in order."""
        refs = []
        for k, (_i, method, args) in enumerate(calls):
            actor = self._actors[(self._rr + k) % self.num_workers]
            refs.append(getattr(actor, method).remote(*args))
        self._rr = (self._rr + len(calls)) % self.num_workers
        try:
            return self._ray.get(refs)
        except Exception as exc:  # noqa: BLE001
            _reraise(exc, what)

    def generate(
        self, conversations: Sequence[Conversation], params: GenParams, seeds: Sequence[int]
    ) -> list[list[Generation]]:
        t0 = time.perf_counter()
        convs, seeds = list(conversations), list(seeds)
        pieces = plan_generate(len(convs), len(seeds), self.num_workers)
        outs = self._call([(k, "generate", ([convs[i] for i in ci], params, [seeds[j] for j in sj]))
                           for k, (ci, sj) in enumerate(pieces)], "generating")
        results: list[list[Generation | None]] = [[None] * len(seeds) for _ in convs]
        for (ci, sj), out in zip(pieces, outs):
            for i, row in zip(ci, out):
                for j, g in zip(sj, row):
                    results[i][j] = g
        flat = [g for row in results for g in row if g is not None]
        self.stats.add(calls=len(flat), prompt_tokens=sum(g.prompt_tokens for g in flat),
                       completion_tokens=sum(g.completion_tokens for g in flat),
                       seconds=time.perf_counter() - t0)
        return results  # type: ignore[return-value]

    def choice_logprobs(
        self, conversations: Sequence[Conversation], choices: Sequence[str], assistant_prefix: str = ""
    ) -> list[list[float]]:
        t0 = time.perf_counter()
        convs = list(conversations)
        pieces = split(len(convs), self.num_workers)
        outs = self._call([(k, "choice_logprobs", ([convs[i] for i in r], list(choices), assistant_prefix))
                           for k, r in enumerate(pieces)], "reading choice log-probabilities")
        results = [lp for out in outs for lp in out]
        self.stats.add(calls=len(results), seconds=time.perf_counter() - t0)
        return results

    def count_tokens(self, text: str) -> int:
        return self._call([(0, "count_tokens", (text,))], "counting tokens")[0]

    def truncate(self, text: str, max_tokens: int) -> str:
        return self._call([(0, "truncate", (text, max_tokens))], "truncating")[0]

    def close(self) -> None:
        """Stop the workers (their processes exit, which frees GPU memory for training)."""
        actors, self._actors = getattr(self, "_actors", []), []
        if not actors:
            return
        ray = self._ray
        try:
            ray.get([a.close.remote() for a in actors], timeout=60)
        except Exception:  # noqa: BLE001 - best effort; the kill below frees the memory
            pass
        for a in actors:
            try:
                ray.kill(a)
            except Exception:  # noqa: BLE001
                pass
