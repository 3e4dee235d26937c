"""creator_rewrites: evolved prompts/s of ``creator.evolve`` (evol_instruct, 2 rounds, 8 parents).

evalign: ``creator.evolve`` on the built-in creator (llama.cpp), each round one batched
``generate`` call; the llama.cpp backend runs the conversations one after another on one
sequence, keeping the KV prefix shared with the previous call.

baseline: the same rewrites — the exact conversations evolve sent, with the same per-call
seeds and sampling settings — as one-at-a-time ``Llama.create_chat_completion`` calls.

There is no target: on one llama.cpp sequence both do the same work. The item measures the
bound instead: a decode step reads every weight once, so one sequence's decode rate is at
most memory bandwidth / bytes of weights per token; and it probes what several sequences
decoded in one ``llama_decode`` batch (what a batched backend would do) gain per token.
"""

from __future__ import annotations

import time
from pathlib import Path

import common
import machine

CREATOR = "qwen2.5-coder-1.5b-instruct"
N_CTX = 2048
MAX_NEW, TEMPERATURE, TOP_P = 128, 0.7, 0.95  # the quickstart preset's creator.sampling
ROUNDS = 2


def batched_decode_probe(raw, prompt_tokens: list[int], widths=(1, 2, 4, 8), steps: int = 48) -> dict[int, float]:
    """Decode tokens/s when ``B`` sequences advance together in one ``llama_decode`` batch.

    Each sequence first evaluates ``prompt_tokens`` (not timed), then ``steps`` greedy steps
    are decoded for all B sequences at once (timed). Uses llama.cpp's multi-sequence API on a
    second context of the same model.
    """
    import os

    import llama_cpp
    import numpy as np

    out: dict[int, float] = {}
    threads = max(1, len(os.sched_getaffinity(0)))
    n_vocab = raw.n_vocab()
    for width in widths:
        cp = llama_cpp.llama_context_default_params()
        cp.n_ctx = (len(prompt_tokens) + steps + 8) * width
        cp.n_batch = cp.n_ubatch = 512
        cp.n_seq_max = width
        cp.n_threads = cp.n_threads_batch = threads
        ctx = llama_cpp.llama_init_from_model(raw.model, cp)
        if not ctx:
            raise RuntimeError("llama_init_from_model failed")
        batch = llama_cpp.llama_batch_init(512, 0, width)
        try:
            def put(i: int, tok: int, pos: int, seq: int, logits: bool) -> None:
                batch.token[i] = tok
                batch.pos[i] = pos
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = seq
                batch.logits[i] = int(logits)

            last = []
            for s in range(width):  # prefill each sequence (not timed)
                for start in range(0, len(prompt_tokens), 512):
                    chunk = prompt_tokens[start:start + 512]
                    batch.n_tokens = len(chunk)
                    for i, t in enumerate(chunk):
                        put(i, t, start + i, s, start + i == len(prompt_tokens) - 1)
                    if llama_cpp.llama_decode(ctx, batch) != 0:
                        raise RuntimeError("llama_decode failed (prefill)")
                logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, -1), shape=(n_vocab,))
                last.append(int(logits.argmax()))
            pos = len(prompt_tokens)
            t0 = time.perf_counter()
            for step in range(steps):
                batch.n_tokens = width
                for s in range(width):
                    put(s, last[s], pos + step, s, True)
                if llama_cpp.llama_decode(ctx, batch) != 0:
                    raise RuntimeError("llama_decode failed (decode)")
                for s in range(width):
                    logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, s), shape=(n_vocab,))
                    last[s] = int(logits.argmax())
            out[width] = width * steps / (time.perf_counter() - t0)
        finally:
            llama_cpp.llama_batch_free(batch)
            llama_cpp.llama_free(ctx)
        common.log(f"  batched decode probe: {width} sequence(s): {out[width]:.1f} tokens/s")
    return out


def run(args) -> dict:
    import llama_cpp

    from evalign import creator
    from evalign.backends.base import GenParams, sample_seed
    from evalign.backends.llamacpp_backend import LlamaCppLLM
    from evalign.weights import gguf_path

    import bench_policy

    n_parents = 4 if args.quick else 8
    texts = bench_policy.seed_prompts(64)[:n_parents]
    parents = [creator.Parent(i + 1, t) for i, t in enumerate(texts)]
    gguf = gguf_path(CREATOR)
    llm = LlamaCppLLM(gguf, model_id=CREATOR, n_ctx=N_CTX)
    raw = llm.llm
    raw.eval(llm.encode(llm.render([{"role": "user", "content": "warm up " * 60}])))
    raw.reset()
    params = GenParams(MAX_NEW, TEMPERATURE, TOP_P)

    sent: list[tuple[list, int, str, int]] = []  # (conversation, seed, text, completion tokens)
    inner_generate = llm.generate

    def recording_generate(convs, p, seeds):
        rows = inner_generate(convs, p, seeds)
        for conv, row in zip(convs, rows):
            for seed, g in zip(seeds, row):
                sent.append((conv, seed, g.text, g.completion_tokens))
        return rows

    llm.generate = recording_generate
    llama_cpp.llama_perf_context_reset(raw.ctx)
    t0 = time.perf_counter()
    evolved = creator.evolve(parents, llm, "evol_instruct", ROUNDS, params, seed=0)
    t_evalign = time.perf_counter() - t0
    pd = llama_cpp.llama_perf_context(raw.ctx)
    usable = sum(bool(e.text) for e in evolved)
    ev_tokens = sum(n for *_, n in sent)
    common.log(f"evalign: {len(evolved)} evolved ({usable} usable) in {t_evalign:.1f}s, {ev_tokens} tokens")

    raw.reset()
    t0 = time.perf_counter()
    base_tokens, same = 0, 0
    for conv, seed, text, _ in sent:
        res = raw.create_chat_completion(messages=conv, max_tokens=MAX_NEW, temperature=TEMPERATURE, top_p=TOP_P,
                                         top_k=0, min_p=0.0, repeat_penalty=1.0,
                                         seed=sample_seed(seed, conv) & 0x7FFFFFFF)
        base_tokens += res["usage"]["completion_tokens"]
        same += res["choices"][0]["message"]["content"].strip() == text
    t_base = time.perf_counter() - t0
    common.log(f"baseline: {len(sent)} calls in {t_base:.1f}s, {base_tokens} tokens; {same} identical texts")

    mach = machine.summary(quick=True)
    wbytes = machine.gguf_weight_bytes(gguf)
    decode_tps = pd.n_eval / (pd.t_eval_ms / 1000) if pd.t_eval_ms else float("nan")
    prompt_tps = pd.n_p_eval / (pd.t_p_eval_ms / 1000) if pd.t_p_eval_ms else float("nan")
    bw_bound = mach["bandwidth_best"] / wbytes["bytes_per_token"]
    probe: dict[int, float] = {}
    try:
        probe_prompt = llm.encode(llm.render(sent[0][0]))[:256]
        probe = batched_decode_probe(raw, probe_prompt, widths=(1, 4) if args.quick else (1, 2, 4, 8))
    except Exception as exc:  # noqa: BLE001 - the probe is informative only
        common.log(f"batched decode probe failed: {type(exc).__name__}: {exc}")

    rows = [
        common.row("evalign creator.evolve vs one-at-a-time create_chat_completion", "evolved prompts/s",
                   len(evolved) / t_evalign, len(sent) / t_base, key="evolve_vs_chat"),
        common.row("same, per generated token", "tokens/s", ev_tokens / t_evalign, base_tokens / t_base,
                   key="evolve_tokens"),
    ]
    if probe.get(1):
        best = max(probe, key=lambda w: probe[w])
        rows.append(common.row(f"probe: {best} sequences per llama_decode vs 1 (greedy decode steps)", "tokens/s",
                               probe[best], probe[1], key="batched_probe",
                               note="not evalign code: what batching sequences in the llama.cpp backend would gain"))
    notes = [
        f"{n_parents} parents x {ROUNDS} rounds: {len(sent)} creator calls, {len(evolved)} evolved prompts "
        f"({usable} usable after parsing); max_new_tokens {MAX_NEW}, temperature {TEMPERATURE}, top_p {TOP_P}.",
        f"Both sides run the same {len(sent)} conversations with the same seeds and sampler settings; "
        f"{same}/{len(sent)} baseline outputs are identical to evalign's ({ev_tokens} vs {base_tokens} generated "
        f"tokens), so the comparison is like for like. No gain is possible on one llama.cpp sequence: the backend "
        f"calls the same create_completion per conversation (the 'batch' is a loop).",
        f"llama.cpp perf counters during evolve: {pd.n_p_eval} prompt tokens at {prompt_tps:.0f} tokens/s, "
        f"{pd.n_eval} generated tokens at {decode_tps:.1f} tokens/s "
        f"({pd.t_eval_ms / 1000:.1f}s of {t_evalign:.1f}s is decode).",
    ]
    if probe:
        notes.append("Batched decode probe (greedy, 48 steps after a 256-token prompt per sequence): "
                     + ", ".join(f"{w} seq: {v:.1f} tok/s" for w, v in probe.items()) + ".")
    bounds = [
        f"Decode is memory-bandwidth bound: each generated token reads the weights once — "
        f"{wbytes['bytes_per_token'] / 1e6:.0f} MB for this Q4_K_M GGUF (file {wbytes['file_bytes'] / 1e6:.0f} MB, "
        f"output head {'tied to' if wbytes['tied_output'] else 'separate from'} the embedding table). Measured "
        f"bandwidth {mach['bandwidth_best'] / 1e9:.1f} GB/s (numpy copy {mach['bandwidth_numpy_copy'] / 1e9:.1f}, torch "
        f"copy {mach['bandwidth_torch_copy'] / 1e9:.1f}; read + write) gives at most {bw_bound:.1f} tokens/s for one "
        f"sequence; measured {decode_tps:.1f} tokens/s ({decode_tps / bw_bound:.0%} of that bound).",
    ]
    if probe.get(1) and len(probe) > 1:
        best = max(probe, key=lambda w: probe[w])
        bounds.append(
            f"Only more sequences per weight read can go past it: {best} sequences in one llama_decode batch reach "
            f"{probe[best]:.1f} tokens/s vs {probe[1]:.1f} for one ({probe[best] / probe[1]:.2f}x). evolve already "
            f"hands a whole round to one generate call, so a multi-sequence llama.cpp backend would take this "
            f"gain without changing the creator.")
    return {"rows": rows, "notes": notes, "bounds": bounds,
            "details": {"parents": n_parents, "calls": len(sent), "evolved": len(evolved), "usable": usable,
                        "seconds": {"evalign": t_evalign, "baseline": t_base}, "tokens": {"evalign": ev_tokens,
                        "baseline": base_tokens}, "identical": same, "decode_tps": decode_tps,
                        "prompt_tps": prompt_tps, "bandwidth_bound_tps": bw_bound, "probe": probe,
                        "machine": mach, "gguf": wbytes}}


if __name__ == "__main__":
    import argparse
    import json

    print(json.dumps(run(argparse.Namespace(quick=True, workdir=Path("/tmp/bench_creator"))), indent=1, default=str))
