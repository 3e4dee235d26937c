"""vLLM backend: the policy's (and a local judge's) sampling on GPUs, through vLLM's
offline API (``vllm.LLM`` + ``SamplingParams``).

Generation
    Prompts are rendered with the tokenizer's own chat template and passed as token ids
    (``{"prompt_token_ids": ...}``), so a template that writes ``<bos>`` itself does not get
    a second one from vLLM's tokenizer. Every (prompt, seed) is one request with ``n=1``
    and ``SamplingParams(seed=sample_seed(seed, conversation) & 0x7FFFFFFF)``: sample j of a
    prompt depends on (model, prompt, params, seed), never on which other requests share the
    engine's batch in its random draws. Automatic prefix caching computes a prompt's KV once
    for its k samples. (vLLM's kernels are not bitwise batch-invariant unless the engine is
    run in its batch-invariant mode, so a logit can differ in its last bits between batch
    compositions; the run store caches every sample, so a rerun reads, not resamples.)

Choice log-probabilities (exact)
    The judge needs log P(choice | prompt) for choices such as "A"/"B" or "1".."10", where
    "1" is a proper prefix of "10" and must lose the mass of continuing with "0"
    (:func:`evalign.backends.base.trie_choice_logprobs`). That function only ever reads the
    log-probability of a trie *edge* -- token t after prefix p -- so that is all we ask
    vLLM for: one request per edge, prompt = prompt + p, ``max_tokens=1``,
    ``temperature=0``, ``allowed_token_ids=[t]``, ``logprobs=1``. vLLM (V1 engine) computes
    the returned log-probabilities from the raw logits *before* the allowed-token whitelist
    and temperature ("raw_logprobs", the default ``logprobs_mode``), and always returns the
    sampled token's entry; since t is the only token allowed, it is the sampled token and
    its value is the exact, full-vocabulary log P(t | prompt + p). All edges of a prompt
    share its prefix, so with prefix caching they cost one prefill plus a token each.

    Why not ``prompt_logprobs``: it bypasses the prefix cache (a full prefill per choice),
    computes the LM head at every prompt position, and has had correctness issues together
    with prefix caching (vllm-project/vllm#42019). Why not ``logprobs=-1``: a full-vocabulary
    dict per request is slow. An engine that instead returned post-whitelist values would
    give exactly 0.0 for every edge; :func:`check_raw_logprobs` detects that (two sibling
    edges cannot both have probability 1) and raises instead of returning wrong verdicts.

Data parallelism
    vLLM's offline ``LLM`` class runs one engine per process; data parallel replicas are
    separate processes. ``data_parallel_size > 1`` is passed to ``vllm.LLM`` only when the
    installed version names it as an explicit constructor argument; otherwise it is a
    config error that points to ``run.executor: ray`` (one engine per Ray worker), which is
    how evalign runs replicas (docs/scaling.md).
"""

from __future__ import annotations

import gc
import inspect
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from evalign.errors import BackendError, ConfigError, ModelNotFoundError
from evalign.backends.base import LLM, BackendTraits, Conversation, Generation, GenParams, sample_seed, trie_choice_logprobs

log = logging.getLogger(__name__)

SEED_MASK = 0x7FFFFFFF
#: Set inside Ray workers (backends.ray_pool): vLLM then keeps its tensor-parallel workers
#: as local processes on the GPUs Ray gave the worker instead of asking Ray for more.
RAY_WORKER_ENV = "EVALIGN_RAY_WORKER"

Edge = tuple[tuple[int, ...], int]


# ---------------------------------------------------------------------------- pure helpers


def explicit_params(fn: Callable[..., Any]) -> set[str]:
    """Names a callable takes explicitly (``**kwargs`` does not count)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # pragma: no cover - builtins
        return set()
    return {
        name for name, p in sig.parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and name != "self"
    }


def engine_kwargs(spec, path: str, llm_params: set[str] | None = None, *, in_ray_worker: bool = False) -> dict[str, Any]:
    """Keyword arguments for ``vllm.LLM`` from a ModelSpec.

    ``llm_params`` are the names ``vllm.LLM.__init__`` takes explicitly; it decides whether
    ``data_parallel_size`` can be passed (see the module docstring).
    """
    kw: dict[str, Any] = {
        "model": str(path),
        "tensor_parallel_size": spec.tensor_parallel_size,
        "gpu_memory_utilization": spec.gpu_memory_utilization,
        "enable_prefix_caching": spec.enable_prefix_caching,
        "dtype": spec.dtype,  # "auto" lets vLLM use the checkpoint's torch_dtype
        "trust_remote_code": spec.trust_remote_code,
        "seed": 0,  # per-request seeds decide every sample
    }
    if spec.max_model_len is not None:
        kw["max_model_len"] = spec.max_model_len
    if spec.revision is not None:
        kw["revision"] = spec.revision
    if spec.data_parallel_size > 1:
        if llm_params is not None and "data_parallel_size" in llm_params:
            kw["data_parallel_size"] = spec.data_parallel_size
        else:
            raise ConfigError(
                f"model '{spec.model}': data_parallel_size={spec.data_parallel_size}, but the installed vLLM's "
                "offline LLM runs one engine per process; set data_parallel_size: 1 and run.executor: ray with "
                f"run.ray.num_workers: {spec.data_parallel_size} (one engine replica per Ray worker)"
            )
    if in_ray_worker and spec.tensor_parallel_size > 1:
        kw["distributed_executor_backend"] = "mp"
    if llm_params is not None and "logprobs_mode" in llm_params:
        kw["logprobs_mode"] = "raw_logprobs"  # the default; pinned because choice_logprobs relies on it
    return kw


def sampling_kwargs(params: GenParams, seed: int, conversation: Conversation) -> dict[str, Any]:
    """``SamplingParams`` keywords for sample ``seed`` of ``conversation`` (one request)."""
    kw: dict[str, Any] = {
        "n": 1,
        "seed": sample_seed(seed, conversation) & SEED_MASK,
        "temperature": float(params.temperature),
        "top_p": float(params.top_p) if params.temperature > 0 else 1.0,
        "max_tokens": int(params.max_new_tokens),
        "skip_special_tokens": True,
    }
    if params.stop:
        kw["stop"] = list(params.stop)
    return kw


def edge_sampling_kwargs(token: int) -> dict[str, Any]:
    """``SamplingParams`` keywords that read log P(token | prompt) exactly (module docstring)."""
    return {"n": 1, "max_tokens": 1, "temperature": 0.0, "allowed_token_ids": [int(token)], "logprobs": 1}


def trie_edges(choice_ids: Sequence[Sequence[int]]) -> list[Edge]:
    """Every (prefix, next token) edge of the choices' token trie, each once, in a stable
    order: what :func:`trie_choice_logprobs` reads."""
    seen: dict[Edge, None] = {}
    for c in choice_ids:
        c = tuple(int(t) for t in c)
        if not c:
            raise ValueError("a choice tokenized to nothing")
        for i in range(len(c)):
            seen.setdefault((c[:i], c[i]), None)
    return list(seen)


class _SparseDist(Mapping):
    """The next-token log-probabilities known after one prefix (only the trie's edges)."""

    def __init__(self, prefix: tuple[int, ...], values: dict[int, float]) -> None:
        self.prefix, self.values = prefix, values

    def __getitem__(self, token: int) -> float:
        try:
            return self.values[int(token)]
        except KeyError:
            raise KeyError(f"no log-probability for token {token} after prefix {self.prefix}") from None

    def __iter__(self):
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)


def choice_logprobs_from_edges(choice_ids: Sequence[Sequence[int]], edge_logprobs: Mapping[Edge, float]) -> list[float]:
    """Exact choice log-probabilities from the log-probability of every trie edge."""
    by_prefix: dict[tuple[int, ...], dict[int, float]] = {}
    for (prefix, token), lp in edge_logprobs.items():
        by_prefix.setdefault(tuple(prefix), {})[int(token)] = float(lp)
    return trie_choice_logprobs(choice_ids, lambda p: _SparseDist(p, by_prefix.get(tuple(p), {})))


def check_raw_logprobs(edge_logprobs: Mapping[Edge, float]) -> None:
    """Raise if two sibling edges both read log-probability 0: the engine then returned
    log-probabilities after the allowed-token whitelist, not the model's."""
    zeros: dict[tuple[int, ...], int] = {}
    for (prefix, _token), lp in edge_logprobs.items():
        if lp == 0.0:
            zeros[prefix] = zeros.get(prefix, 0) + 1
    if any(n >= 2 for n in zeros.values()):
        raise BackendError(
            "vLLM returned log-probabilities after the allowed-token filter (every choice read 0.0); "
            "choice_logprobs needs the V1 engine with logprobs_mode='raw_logprobs' (vLLM >= 0.10): upgrade vLLM"
        )


def read_edge_logprob(output: Any, token: int) -> float:
    """The log-probability of ``token`` from a ``RequestOutput`` of an edge request."""
    comp = output.outputs[0]
    steps = comp.logprobs or []
    if not steps or int(token) not in steps[0]:
        raise BackendError(
            f"vLLM returned no log-probability for token {token}; the engine ignored allowed_token_ids/logprobs"
        )
    entry = steps[0][int(token)]
    return float(getattr(entry, "logprob", entry))


def finish_reason(reason: str | None) -> str:
    return "length" if reason == "length" else "stop"


def continuation_ids(encode: Callable[[str], list[int]], text: str, base: list[int], choice: str) -> list[int]:
    """The tokens ``choice`` adds after ``text`` (``base`` = encode(text)), as the model
    would see them when they follow the text (same rule as the transformers backend)."""
    full = encode(text + choice)
    if full[: len(base)] == base and len(full) > len(base):
        return full[len(base) :]
    return encode(choice)


# ---------------------------------------------------------------------------- the backend


class VllmLLM(LLM):
    traits = BackendTraits(device="gpu", weights="hf", tensor_parallel=True)

    def __init__(self, spec, *, path: str, model_id: str | None = None, llm=None, sampling_params_cls=None) -> None:
        """``llm`` / ``sampling_params_cls``: an already built ``vllm.LLM``-like engine and its
        ``SamplingParams`` class (tests use fakes); by default both come from vLLM."""
        super().__init__()
        self._sampling_cls = sampling_params_cls
        self.spec = spec
        self.model_id = model_id or str(path)
        if llm is None:
            try:
                import vllm
            except ImportError:
                raise ModelNotFoundError(
                    f"model '{spec.model}' asks for backend vllm, but vLLM is not installed; "
                    'pip install -e ".[gpu]" on a machine with a GPU, or set backend: transformers'
                ) from None
            kwargs = engine_kwargs(spec, path, explicit_params(vllm.LLM.__init__),
                                   in_ray_worker=os.environ.get(RAY_WORKER_ENV) == "1")
            log.info("starting vLLM for %s (%s)", path, {k: v for k, v in kwargs.items() if k != "model"})
            try:
                llm = vllm.LLM(**kwargs)
            except OSError as exc:
                raise ModelNotFoundError(
                    f"model '{path}' could not be loaded with vLLM ({str(exc).splitlines()[0][:160]}); "
                    "check the path or hub id, and network access for hub ids"
                ) from None
        self.llm = llm
        self.tokenizer = llm.get_tokenizer()
        if not hasattr(self.tokenizer, "apply_chat_template"):  # a vLLM wrapper: read the files ourselves
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=spec.trust_remote_code,
                                                           revision=spec.revision)
        engine_cfg = getattr(getattr(llm, "llm_engine", None), "model_config", None)
        self.max_model_len = getattr(engine_cfg, "max_model_len", None) or spec.max_model_len
        if spec.chat_template and not getattr(self.tokenizer, "chat_template", None):
            self.tokenizer.chat_template = spec.chat_template
        if not getattr(self.tokenizer, "chat_template", None):
            raise ModelNotFoundError(f"model '{path}' has no chat template; set chat_template in its model config")

    # ------------------------------------------------------------------ text helpers

    def render(self, conversation: Conversation, assistant_prefix: str = "") -> str:
        text = self.tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        return text + assistant_prefix

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    def truncate(self, text: str, max_tokens: int) -> str:
        ids = self.encode(text)
        return text if len(ids) <= max_tokens else self.tokenizer.decode(ids[:max_tokens])

    def _sampling_params(self, **kw):
        if self._sampling_cls is None:
            from vllm import SamplingParams

            self._sampling_cls = SamplingParams
        return self._sampling_cls(**kw)

    def _run(self, prompts: list[list[int]], sampling: list[Any]) -> list[Any]:
        limit = self.max_model_len
        if isinstance(limit, int):
            longest = max((len(p) for p in prompts), default=0)
            if longest >= limit:
                raise BackendError(
                    f"a prompt of {longest} tokens does not fit max_model_len={limit} of '{self.spec.model}'; "
                    "raise max_model_len in its model config or shorten the inputs (prompts.max_chars, "
                    "eval.max_judge_answer_tokens, reward.max_response_tokens)"
                )
        return self.llm.generate([{"prompt_token_ids": p} for p in prompts], sampling, use_tqdm=False)

    # ------------------------------------------------------------------ generation

    def generate(
        self, conversations: Sequence[Conversation], params: GenParams, seeds: Sequence[int]
    ) -> list[list[Generation]]:
        prompts = [self.encode(self.render(c)) for c in conversations]
        req_prompts, req_params, where = [], [], []
        for i, conv in enumerate(conversations):
            for j, seed in enumerate(seeds):
                req_prompts.append(prompts[i])
                req_params.append(self._sampling_params(**sampling_kwargs(params, seed, conv)))
                where.append((i, j))
        outputs = self._run(req_prompts, req_params) if req_prompts else []
        results: list[list[Generation | None]] = [[None] * len(seeds) for _ in conversations]
        completion = 0
        for (i, j), out in zip(where, outputs):
            comp = out.outputs[0]
            n_tok = len(comp.token_ids)
            completion += n_tok
            results[i][j] = Generation(comp.text.strip(), seeds[j], len(prompts[i]), n_tok,
                                       finish_reason(comp.finish_reason))
        self.stats.add(calls=len(req_prompts), prompt_tokens=sum(len(p) for p in prompts) * len(seeds),
                       completion_tokens=completion)
        return results  # type: ignore[return-value]

    # ------------------------------------------------------------------ choice log-probs

    def choice_logprobs(
        self, conversations: Sequence[Conversation], choices: Sequence[str], assistant_prefix: str = ""
    ) -> list[list[float]]:
        per_conv = []
        req_prompts, req_params, where = [], [], []
        for ci, conv in enumerate(conversations):
            text = self.render(conv, assistant_prefix)
            base = self.encode(text)
            choice_ids = [continuation_ids(self.encode, text, base, c) for c in choices]
            edges = trie_edges(choice_ids)
            per_conv.append((choice_ids, edges))
            for edge in edges:
                prefix, token = edge
                req_prompts.append(base + list(prefix))
                req_params.append(self._sampling_params(**edge_sampling_kwargs(token)))
                where.append((ci, edge))
            self.stats.add(calls=1, prompt_tokens=len(base))
        outputs = self._run(req_prompts, req_params) if req_prompts else []
        values: list[dict[Edge, float]] = [{} for _ in conversations]
        for (ci, edge), out in zip(where, outputs):
            values[ci][edge] = read_edge_logprob(out, edge[1])
        results = []
        for (choice_ids, _edges), edge_lp in zip(per_conv, values):
            check_raw_logprobs(edge_lp)
            results.append(choice_logprobs_from_edges(choice_ids, edge_lp))
        return results

    def close(self) -> None:
        """Free the engine's GPU memory (best effort: vLLM keeps global state)."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is None:
            return
        engine = getattr(llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        for obj in (core, engine):
            shutdown = getattr(obj, "shutdown", None)
            if callable(shutdown):
                try:
                    shutdown()
                except Exception:  # noqa: BLE001 - best effort
                    pass
        del llm, engine, core
        try:
            from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

            destroy_model_parallel()
            destroy_distributed_environment()
        except Exception:  # noqa: BLE001 - absent or already torn down
            pass
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover
            pass
