"""policy_sampling: k samples per prompt from the built-in policy, tokens/s.

evalign: ``TransformersLLM.generate`` (one prompt encoding shared by its k samples, rows of
several prompts batched, per-row seeded nucleus sampling, finished rows leave the batch;
bf16 on CPUs with native bf16) on 64 seed prompts x 4 samples x 128 new tokens, with the
presets' ``policy.batch_size: 32``. A second evalign row forces fp32 to split the gain
into batching and bf16, and to check bf16 outputs stay sane.

baseline: transformers ``model.generate`` one prompt at a time (do_sample, temperature 0.7,
top_p 0.9, top_k off as in evalign, num_return_sequences=4, max_new_tokens 128), the model in
its default fp32. It is slow, so it runs on the first 16 of the same prompts and the rates
are compared.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import common
import machine

MODEL = "smollm2-135m-instruct"
MAX_NEW = 128
K = 4
TEMPERATURE, TOP_P = 0.7, 0.9
SEEDS = [1000 + j for j in range(K)]
BASELINE_PROMPTS = 16


def seed_prompts(n: int) -> list[str]:
    from evalign.config import PromptsConfig
    from evalign.prompts import load_prompts

    return [r.text for r in load_prompts(PromptsConfig(source="builtin:seed", limit=n), seed=0)]


def responses_cache_path(n_prompts: int) -> Path:
    return common.RESULTS / "cache" / f"policy_responses_{n_prompts}x{K}x{MAX_NEW}.json"


def distinct_ratio(token_lists: list[list[int]]) -> float:
    """Mean over samples of distinct tokens / tokens (1.0 = no repetition; loops drive it down)."""
    vals = [len(set(t)) / len(t) for t in token_lists if t]
    return sum(vals) / max(1, len(vals))


def evalign_generate(path: str, prompts: list[str], dtype: str, batch_size: int = 32) -> dict:
    import torch

    from evalign.backends.base import GenParams
    from evalign.backends.transformers_backend import TransformersLLM
    from evalign.generation import user

    llm = TransformersLLM(path, model_id=MODEL, dtype=dtype, batch_size=batch_size)
    convs = [user(p) for p in prompts]
    params = GenParams(MAX_NEW, TEMPERATURE, TOP_P)
    llm.generate(convs[:2], GenParams(8, TEMPERATURE, TOP_P), SEEDS)  # warm-up (kernel selection)
    t0 = time.perf_counter()
    gens = llm.generate(convs, params, SEEDS)
    seconds = time.perf_counter() - t0
    flat = [g for row in gens for g in row]
    tokens = sum(g.completion_tokens for g in flat)
    toks = [llm.encode(g.text) for g in flat]
    out = {"dtype": str(llm.dtype).replace("torch.", ""), "seconds": seconds, "tokens": tokens,
           "tokens_per_s": tokens / seconds, "samples": len(flat),
           "mean_tokens": tokens / len(flat), "distinct": distinct_ratio(toks),
           "length_stops": sum(g.finish_reason == "length" for g in flat),
           "texts": [[g.text for g in row] for row in gens]}
    del llm
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return out


def hf_generate(path: str, prompts: list[str]) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()  # its default dtype: fp32
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos]) | {tok.eos_token_id}
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    kw = dict(do_sample=True, temperature=TEMPERATURE, top_p=TOP_P, top_k=0, num_return_sequences=K,
              max_new_tokens=MAX_NEW, pad_token_id=pad)

    def one(p: str) -> list[list[int]]:
        enc = tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                      return_tensors="pt", return_dict=True)
        with torch.inference_mode():
            out = model.generate(**enc, **kw)
        rows = []
        for r in out[:, enc["input_ids"].shape[1]:].tolist():
            cut = next((i for i, t in enumerate(r) if t in eos), len(r))
            rows.append(r[:cut])
        return rows

    torch.manual_seed(0)
    one(prompts[0][:40])  # warm-up
    t0 = time.perf_counter()
    samples = [r for p in prompts for r in one(p)]
    seconds = time.perf_counter() - t0
    tokens = sum(len(r) for r in samples)
    return {"dtype": str(model.dtype).replace("torch.", ""), "seconds": seconds, "tokens": tokens,
            "tokens_per_s": tokens / seconds, "samples": len(samples), "mean_tokens": tokens / len(samples),
            "distinct": distinct_ratio(samples), "length_stops": sum(len(r) == MAX_NEW for r in samples)}


def run(args) -> dict:
    from evalign.weights import materialize

    n_prompts = 16 if args.quick else 64
    path = str(materialize(MODEL))
    prompts = seed_prompts(64)[:n_prompts]
    mach = machine.summary(quick=args.quick)
    common.log(f"machine: {machine.describe(mach)}")

    common.log(f"evalign bf16/auto on {n_prompts} prompts x {K} samples x {MAX_NEW} tokens")
    ev = evalign_generate(path, prompts, "auto")
    common.log(f"  {ev['tokens_per_s']:.1f} tok/s ({ev['dtype']}, {ev['seconds']:.1f}s)")
    # the generated responses, reused by judge_scoring (same prompts, seeds, params)
    common.write_json(responses_cache_path(n_prompts), {"model": MODEL, "prompts": prompts, "seeds": SEEDS,
                                                         "max_new_tokens": MAX_NEW, "responses": ev.pop("texts")})
    common.log("evalign fp32")
    ev32 = evalign_generate(path, prompts, "float32")
    ev32.pop("texts")
    common.log(f"  {ev32['tokens_per_s']:.1f} tok/s")
    n_base = min(BASELINE_PROMPTS, n_prompts)
    common.log(f"transformers model.generate, one prompt at a time, {n_base} prompts")
    hf = hf_generate(path, prompts[:n_base])
    common.log(f"  {hf['tokens_per_s']:.1f} tok/s")

    def rel(a: float, b: float) -> float:
        return abs(a - b) / b if b else float("inf")

    len_dev, dist_dev = rel(ev["mean_tokens"], ev32["mean_tokens"]), rel(ev["distinct"], ev32["distinct"])
    sane = len_dev <= 0.2 and dist_dev <= 0.2
    rows = [
        common.row(f"evalign generate ({ev['dtype']}) vs HF generate one prompt at a time (fp32)", "tokens/s",
                   ev["tokens_per_s"], hf["tokens_per_s"], target=common.Target(">=", 5.0, unit="x"),
                   baseline_label=f"{n_base} prompts", key="evalign_vs_hf",
                   note=f"evalign on {n_prompts} prompts, baseline on the first {n_base}: rates compared"),
        common.row("evalign generate fp32 vs HF generate one prompt at a time (fp32)", "tokens/s",
                   ev32["tokens_per_s"], hf["tokens_per_s"], baseline_label=f"{n_base} prompts", key="fp32_vs_hf"),
        common.row(f"bf16 gain: evalign {ev['dtype']} vs evalign fp32", "tokens/s", ev["tokens_per_s"],
                   ev32["tokens_per_s"], key="bf16_vs_fp32"),
        common.row(f"sanity: {ev['dtype']} mean tokens/sample vs fp32 (within 20%)", "tokens", ev["mean_tokens"],
                   ev32["mean_tokens"], target=common.Target("within", 0.2), key="sanity_len",
                   note=f"|dev| {len_dev:.1%}"),
        common.row(f"sanity: {ev['dtype']} distinct-token ratio vs fp32 (within 20%)", "ratio", ev["distinct"],
                   ev32["distinct"], target=common.Target("within", 0.2), key="sanity_distinct",
                   note=f"|dev| {dist_dev:.1%}"),
    ]

    # bound: FLOPs per generated token vs measured GEMM throughput
    params = 134.5e6  # SmolLM2-135M matmul weights incl. the tied output head (576 x 49152)
    flop_tok = 2 * params
    bf16_peak = mach["gemm_bf16_decode_flops"] if ev["dtype"] == "bfloat16" else mach["gemm_fp32_decode_flops"]
    notes = [
        f"Rates on different prompt counts: evalign {n_prompts} prompts x {K} samples, the one-at-a-time "
        f"baseline the first {n_base} of them x {K} (num_return_sequences={K}); generated tokens / wall seconds, "
        f"EOS excluded, model load and a warm-up call excluded on both sides.",
        f"Mean generated tokens/sample: evalign {ev['dtype']} {ev['mean_tokens']:.1f}, fp32 {ev32['mean_tokens']:.1f}, "
        f"HF {hf['mean_tokens']:.1f}; distinct-token ratio {ev['distinct']:.3f} / {ev32['distinct']:.3f} / "
        f"{hf['distinct']:.3f}; samples cut at {MAX_NEW} tokens: {ev['length_stops']} / {ev32['length_stops']} / "
        f"{hf['length_stops']} of {ev['samples']} / {ev32['samples']} / {hf['samples']}. "
        f"bf16 outputs {'stay' if sane else 'do NOT stay'} within 20% of fp32 on both.",
        f"Machine: {machine.describe(mach)}.",
    ]
    bounds = [
        f"Compute: a generated token costs ~{flop_tok / 1e9:.2f} GFLOP (2 x 134.5M matmul weights, attention "
        f"extra). At the decode-shaped GEMM rate ({bf16_peak / 1e9:.0f} GFLOP/s, {ev['dtype']}) that is a ceiling of "
        f"~{bf16_peak / flop_tok:.0f} tokens/s for batched decode; evalign reaches {ev['tokens_per_s']:.0f} "
        f"({ev['tokens_per_s'] / (bf16_peak / flop_tok):.0%} of it). The one-at-a-time baseline runs "
        f"{K}-row steps, which are latency- (Python, kernel launch) rather than FLOP-bound.",
    ]
    return {"rows": rows, "notes": notes, "bounds": bounds,
            "details": {"evalign": ev, "evalign_fp32": ev32, "hf": hf, "machine": mach,
                        "prompts": n_prompts, "baseline_prompts": n_base}}


if __name__ == "__main__":
    import argparse

    a = argparse.Namespace(quick=True, workdir=Path("/tmp/bench_policy"))
    print(json.dumps(run(a), indent=1, default=str))
