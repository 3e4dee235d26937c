"""llama.cpp backend (llama-cpp-python): GGUF models on CPU, the fast path for the built-in
creator and judge.

One sequence is evaluated at a time, so throughput comes from reusing the KV cache: a call
keeps the blocks of tokens it shares with what the cache holds. Callers that order their work
so consecutive prompts share a prefix (the k responses of one prompt under one judge template;
both orders of a pairwise judgment) pay mostly for the new tokens.

Results depend only on the tokens asked about, never on what was evaluated before: llama.cpp's
floating-point results depend on how tokens are batched, so a prompt is always evaluated the
same way (:meth:`LlamaCppLLM._evaluate`) — whole aligned blocks of ``BLOCK`` tokens, then the
rest in one batch — and only whole blocks that were evaluated that way are reused. A resumed
run therefore scores and samples exactly as an uninterrupted one.

Some virtual machines list AMX in /proc/cpuinfo but stop a process at its first tile
instruction (SIGILL), which llama.cpp's repacked weight buffers use on such CPUs. Where the
CPU lists AMX, a child process first evaluates one token with those buffers
(:func:`extra_buffers_run`, cached per CPU, kernel, llama.cpp build and model); if it dies, the
model loads without them (same results, no repacking). ``EVALIGN_LLAMACPP_EXTRA_BUFFERS=0|1``
skips the probe.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from evalign.errors import ModelNotFoundError
from evalign.fsutil import atomic_write_text
from evalign.hashing import stable_hash
from evalign.backends.base import LLM, BackendTraits, Conversation, Generation, GenParams, continuation_ids, sample_seed, trie_choice_logprobs

log = logging.getLogger(__name__)


class LlamaCppLLM(LLM):
    traits = BackendTraits(device="cpu", weights="gguf")

    def __init__(
        self,
        gguf_path: str | Path,
        *,
        model_id: str | None = None,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        chat_template: str | None = None,
        n_batch: int = 512,
    ) -> None:
        super().__init__()
        try:
            from llama_cpp import Llama
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter
        except ImportError:
            raise ModelNotFoundError(
                'the llamacpp backend needs llama-cpp-python; install it with: pip install -e ".[cpu]"'
            ) from None
        if n_batch % self.BLOCK:
            raise ValueError(f"n_batch must be a multiple of {self.BLOCK} (got {n_batch})")
        self.path = Path(gguf_path)
        self.model_id = model_id or f"gguf:{self.path.name}"
        threads = n_threads or max(1, len(os.sched_getaffinity(0)))
        self.extra_buffers = extra_buffers_run(self.path)
        with _extra_buffers(self.extra_buffers):
            self.llm = Llama(
                model_path=str(self.path),
                n_ctx=n_ctx,
                n_threads=threads,
                n_threads_batch=threads,
                n_batch=n_batch,
                logits_all=False,
                verbose=False,
            )
        template = self.llm.metadata.get("tokenizer.chat_template") or chat_template
        if not template:
            raise ModelNotFoundError(
                f"model '{self.path.name}' has no chat template in its GGUF; set chat_template in its model config"
            )
        eos_id, bos_id = self.llm.token_eos(), self.llm.token_bos()
        self._formatter = Jinja2ChatFormatter(
            template,
            eos_token=self.llm._model.token_get_text(eos_id) if eos_id != -1 else "",
            bos_token=self.llm._model.token_get_text(bos_id) if bos_id != -1 else "",
        )
        self.n_ctx = n_ctx
        self.n_vocab = self.llm.n_vocab()
        self._canonical: list[int] = []  # tokens whose KV holds whole canonical blocks

    # ------------------------------------------------------------------ text helpers

    def render(self, conversation: Conversation, assistant_prefix: str = "") -> str:
        return self._formatter(messages=list(conversation)).prompt + assistant_prefix

    def encode(self, text: str) -> list[int]:
        # The chat template already wrote any BOS token it wants.
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def count_tokens(self, text: str) -> int:
        return len(self._encode_plain(text))

    def truncate(self, text: str, max_tokens: int) -> str:
        ids = self._encode_plain(text)
        if len(ids) <= max_tokens:
            return text
        return self.llm.detokenize(ids[:max_tokens]).decode("utf-8", errors="ignore")

    def _fit(self, tokens: list[int], reserve: int) -> list[int]:
        """Keep the prompt inside the context window by dropping its middle."""
        room = self.n_ctx - reserve - 1
        if len(tokens) <= room:
            return tokens
        log.warning("prompt of %d tokens cut to %d to fit n_ctx=%d", len(tokens), room, self.n_ctx)
        head = room // 4
        return tokens[:head] + tokens[len(tokens) - (room - head) :]

    # ------------------------------------------------------------------ generation

    def generate(
        self, conversations: Sequence[Conversation], params: GenParams, seeds: Sequence[int]
    ) -> list[list[Generation]]:
        out = []
        for conv in conversations:
            tokens = self._fit(self.encode(self.render(conv)), params.max_new_tokens)
            row = []
            for seed in seeds:
                # All but the last prompt token the canonical way; llama-cpp-python then reuses
                # them and decodes the last one (and every new token) alone.
                self._evaluate(tokens[:-1])
                res = self.llm.create_completion(
                    prompt=tokens,
                    max_tokens=params.max_new_tokens,
                    temperature=params.temperature,
                    top_p=params.top_p,
                    top_k=0,
                    min_p=0.0,
                    repeat_penalty=1.0,
                    seed=sample_seed(seed, conv) & 0x7FFFFFFF,
                    stop=list(params.stop) or [],
                )
                choice = res["choices"][0]
                usage = res["usage"]
                row.append(
                    Generation(
                        text=choice["text"].strip(),
                        seed=seed,
                        prompt_tokens=usage["prompt_tokens"],
                        completion_tokens=usage["completion_tokens"],
                        finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
                    )
                )
                self.stats.add(calls=1, prompt_tokens=usage["prompt_tokens"],
                               completion_tokens=usage["completion_tokens"])
            out.append(row)
        return out

    # ------------------------------------------------------------------ choice log-probs

    #: Tokens per reusable block of the KV cache (a multiple divides n_batch).
    BLOCK = 32

    def _evaluate(self, tokens: list[int]) -> None:
        """Put exactly ``tokens`` in the KV cache, computed the canonical way: whole blocks at
        positions that are multiples of ``BLOCK``, then the remainder in one batch. Whole blocks
        already computed so (``self._canonical``) are kept; nothing else is.

        The missing whole blocks go to llama.cpp in one call (split by ``n_batch``, itself a
        multiple of ``BLOCK``): its CPU kernels give bitwise the same KV and logits for any split
        of a prompt into batches of whole blocks, but not for batches of a few tokens (a
        different kernel), which is what the blocks guard against. One call instead of one per
        block: 1.16x the grade calls per second (benchmarks: judge_scoring)."""
        llm = self.llm
        canonical = self._canonical
        common = 0
        for a, b in zip(canonical, tokens):
            if a != b:
                break
            common += 1
        keep = (min(common, len(tokens)) // self.BLOCK) * self.BLOCK
        llm.n_tokens = keep
        full = (len(tokens) // self.BLOCK) * self.BLOCK
        if full > keep:
            llm.eval(tokens[keep:full])
        if full < len(tokens):
            llm.eval(tokens[full:])
        self._canonical = list(tokens[:full])

    def _next_logprobs(self) -> np.ndarray:
        """log-softmax of the logits after the last evaluated token."""
        import llama_cpp

        ptr = llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        logits = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).astype(np.float64)
        m = logits.max()
        return logits - (m + np.log(np.exp(logits - m).sum()))

    def _logprobs_after(self, base: list[int], extra: Sequence[int]) -> np.ndarray:
        """Next-token log-probs after ``base + extra``: ``base`` the canonical way (its last
        token evaluated alone, so an empty ``extra`` has fresh logits), ``extra`` in one batch
        on top of it."""
        if not extra:
            self._evaluate(base[:-1])
            self.llm.eval(base[-1:])
        else:
            self.llm.n_tokens = len(base)
            self.llm.eval(list(extra))
        return self._next_logprobs()

    def choice_logprobs(
        self, conversations: Sequence[Conversation], choices: Sequence[str], assistant_prefix: str = ""
    ) -> list[list[float]]:
        results = []
        for conv in conversations:
            text = self.render(conv, assistant_prefix)
            base = self._fit(self.encode(text), 8)
            choice_ids = [continuation_ids(self.encode, text, base, c, self._encode_plain) for c in choices]
            # The trie asks the empty prefix first, so ``base`` is in the cache for the others.
            results.append(trie_choice_logprobs(choice_ids, lambda p: self._logprobs_after(base, p)))
            self.stats.add(calls=1, prompt_tokens=len(base))
        return results

    def _encode_plain(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)

    def close(self) -> None:
        if getattr(self, "llm", None) is not None:
            self.llm.close()
            self.llm = None  # type: ignore[assignment]


# ---------------------------------------------------------------------------- AMX probe

PROBE_ENV = "EVALIGN_LLAMACPP_EXTRA_BUFFERS"


def _cpu_flags() -> set[str]:
    line = next((ln for ln in _cpuinfo().splitlines() if ln.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="ignore")
    except OSError:
        return ""


def extra_buffers_run(gguf_path: str | Path) -> bool:
    """Whether llama.cpp's extra (repacked) weight buffers run on this machine for this model.

    Only asked where the CPU lists ``amx_tile``; the answer comes from a child process that
    loads the model and evaluates one token, so a SIGILL kills the child, not the caller.
    """
    forced = os.environ.get(PROBE_ENV)
    if forced in ("0", "1"):
        return forced == "1"
    if "amx_tile" not in _cpu_flags():
        return True
    import llama_cpp

    from evalign.weights import cache_dir

    path = Path(gguf_path)
    cpu = next((ln for ln in _cpuinfo().splitlines() if ln.startswith("model name")), "")
    key = stable_hash([cpu, platform.release(), llama_cpp.__version__, str(Path(llama_cpp.__file__).parent),
                       path.name, path.stat().st_size if path.exists() else 0])
    record = cache_dir() / "llamacpp-probe" / f"{key}.json"
    if record.is_file():
        with contextlib.suppress(ValueError, KeyError):
            return bool(json.loads(record.read_text())["extra_buffers_run"])
    try:
        rc = subprocess.run([sys.executable, "-m", "evalign.backends.llamacpp_backend", "--probe", str(path)],
                            capture_output=True, timeout=600).returncode
    except subprocess.TimeoutExpired:
        rc = -1
    ok = rc == 0
    if not ok:
        log.warning("llama.cpp's repacked (AMX) weight buffers fail on this CPU (probe exit %s); "
                    "loading %s without them", rc, path.name)
    atomic_write_text(record, json.dumps({"extra_buffers_run": ok, "probe_exit": rc, "cpu": cpu}))
    return ok


@contextlib.contextmanager
def _extra_buffers(enabled: bool) -> Iterator[None]:
    """Load models with llama.cpp's extra buffer types on or off (llama-cpp-python builds its
    model parameters from ``llama_model_default_params`` and exposes no argument for them)."""
    if enabled:
        yield
        return
    import llama_cpp.llama_cpp as lib

    default = lib.llama_model_default_params

    def without_extra_buffers():
        params = default()
        params.use_extra_bufts = False
        return params

    lib.llama_model_default_params = without_extra_buffers
    try:
        yield
    finally:
        lib.llama_model_default_params = default


def _probe(gguf_path: str) -> int:
    from llama_cpp import Llama

    llm = Llama(model_path=gguf_path, n_ctx=64, n_batch=64, verbose=False)
    llm.eval(llm.tokenize(b"Hello, world", add_bos=True))
    return 0


if __name__ == "__main__" and sys.argv[1:2] == ["--probe"]:
    sys.exit(_probe(sys.argv[2]))
