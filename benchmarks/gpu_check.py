"""Per-stage GPU throughput of evalign's own code paths, and one eva iteration (gpu_check.sh runs it).

NOT RUN ON A GPU YET. Tried on CPU only (no CUDA: tiny
sizes, the figures meaningless), under transformers 5.24 and 5.17. Made for one H200 (torch
2.11, transformers 5.17, no TRL, no vLLM, no network) within 8 minutes all told.

Stages, each timed on its own after a short untimed warm-up, each with what ran, its
throughput, its achieved TFLOP/s and that as a fraction of ``--peak-tflops`` (default 790,
the H200's dense bf16 peak):

1. ``sample``: policy sampling through ``TransformersLLM.generate`` (evalign's decode loop)
   in bf16: a random Llama-3.2-1B-shaped policy (1.24B parameters, 128k vocabulary, the
   Llama-3-style byte tokenizer of ``evalign.testing``), 128 seed prompts x 4 samples x 256
   new tokens, 256 rows per batch, T 0.7, top-p 0.9. Random weights never stop early, so
   every row decodes all 256 tokens. Also reported: weight bytes read per second (decode
   forwards x the weights' bytes), against ``--hbm-tbps`` (4.8 TB/s), decode's real bound.
2. ``reward``: ``ClassifierReward.score`` on an ArmoRM-shaped random model (remote code of
   ``make_armorm_style_reward_model``: Llama-3-8B backbone, 19 objectives, gating network;
   7.5B parameters, 15 GB in bf16) built from its config directly on the GPU (no weights
   written), 512 (prompt, response) chats of 100-300 + 200-800 tokens, 16 per batch.
   ``--rm-size 1b`` (Llama-3.2-1B body) for a quicker run; ``--reward DIR`` loads a real one.
3. ``dpo``: ``train_preference`` (in-process; TRL's DPOTrainer with evalign's packed,
   prefix-sharing batches, reference log-probabilities precomputed, bf16 autocast over fp32
   weights, AdamW) on the stage-1 policy: 512 synthetic pairs (64-256-token prompts,
   128-512-token answers), 8 pairs x 8 accumulation = 64 per update (the paper's), 1 epoch.
   Timed apart: loading, TRL's setup (tokenizing, hashing the weights), the reference pass,
   the training loop and writing the checkpoint. ``packing`` tells whether the packed fast
   path ran (its counters from the train result).
4. ``e2e`` (``--e2e auto``: only when the time left allows): one eva iteration through the
   library (``Runner.run_arm``): seed prompts -> sample -> reward (pointwise judge = the
   policy, or ``--reward``) -> creator (the policy rewrites 25%, 2 evolutions) -> sample +
   reward the evolved prompts -> pairs -> DPO (``--launcher accelerate`` by default).

FLOPs (model FLOPs of the tokens each path must compute; padding and recomputation are not
counted). N_body = parameters outside the embedding and LM head, N_head = vocab x hidden,
L layers, d = attention heads x head dim; a sequence of S tokens costs 2·L·d·S² in causal
attention (QK^T and AV, half the square), a decode step at context c costs 4·L·d·c:

* sample: 2·N_body·(P + G) + 2·N_head·(prompts + G) + attention, P prompt tokens (each prompt
  is encoded once for its samples; prefill keeps the last position's logits), G generated.
* reward: 2·N_body·T + attention over each chat, T = tokens scored (the heads are negligible).
* dpo, per epoch: training 3·(2·N_body·U + 2·N_head·C + attention), the reference pass once
  1·(the same), U = Σ(prompt + chosen + rejected) tokens (the packed pass computes the shared
  prompt once; TRL's padded path would compute it twice), C = Σ(chosen + rejected) tokens
  (the packed LM head runs on label positions only). No activation checkpointing, so no
  recompute.

Estimated H200 times at the defaults, from those FLOPs at a conservative 30-40% of 790 TFLOP/s
(237-316 TFLOP/s) where the stage is compute-bound: setup (wheels, imports, building and
saving the 1B policy) 30-50 s; sample 3.7e14 FLOP, ~1.5 s of compute but decode is bound by
per-step latency (2 batches x 256 steps x ~30-50 ms, the loop's per-row host syncs
included): 15-30 s; reward 5.2e15 FLOP: 16-22 s, + ~10 s building the 8B model; dpo 3.0e15
(training) + 1.0e15 (reference) FLOP: 13-17 s, + ~30-50 s of loading, tokenizing, TRL's
weight hash and writing a 5 GB fp32 checkpoint; e2e 90-150 s. About 4-5.5 minutes in all;
the script stops starting stages when its --budget (set by gpu_check.sh to fit 8 minutes)
runs out, and writes OUT/gpu_check.json after every stage (OUT/gpu_check.md: the table).

Without CUDA every stage runs at tiny sizes (code paths only) and the end-to-end iteration is
skipped unless ``--e2e on``; it prints "no GPU: ..." saying so.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import json
import math
import os
import platform
import random
import shutil
import sys
import time
import traceback
from pathlib import Path

T0 = time.perf_counter()
REPO = Path(__file__).resolve().parents[1]


def log(msg: str) -> None:
    print(f"[gpu_check {time.perf_counter() - T0:6.1f}s] {msg}", flush=True)


# ---------------------------------------------------------------------------- shapes

#: Llama shapes: hidden, layers, heads, kv heads, intermediate, vocab, tied embeddings.
POLICY_SHAPES = {
    "tiny": dict(hidden=64, layers=2, heads=4, kv=2, inter=128, vocab=512, tied=True),
    "1b": dict(hidden=2048, layers=16, heads=32, kv=8, inter=8192, vocab=128256, tied=True),  # Llama-3.2-1B
    "3b": dict(hidden=3072, layers=28, heads=24, kv=8, inter=8192, vocab=128256, tied=True),  # Llama-3.2-3B
}
#: ArmoRM-shaped reward models: the Llama body plus 19 objectives and a 3 x 1024 gating network.
RM_SHAPES = {
    "tiny": dict(hidden=64, layers=2, heads=4, kv=2, inter=128, vocab=512, objectives=5, gating=32, gating_layers=2),
    "1b": dict(hidden=2048, layers=16, heads=32, kv=8, inter=8192, vocab=128256, objectives=19, gating=1024,
               gating_layers=3),
    "8b": dict(hidden=4096, layers=32, heads=32, kv=8, inter=14336, vocab=128256, objectives=19, gating=1024,
               gating_layers=3),  # ArmoRM-Llama3-8B
}

GPU_SIZES = dict(policy="1b", rm="8b", sample_prompts=128, samples=4, max_new_tokens=256, sample_batch=256,
                 rm_items=512, rm_batch=16, rm_prompt=(100, 300), rm_response=(200, 800),
                 dpo_pairs=512, dpo_batch=8, dpo_accum=8, dpo_prompt=(64, 256), dpo_response=(128, 512),
                 e2e_prompts=64, e2e_samples=4, e2e_new_tokens=256)
TINY_SIZES = dict(policy="tiny", rm="tiny", sample_prompts=8, samples=2, max_new_tokens=16, sample_batch=8,
                  rm_items=16, rm_batch=4, rm_prompt=(20, 60), rm_response=(20, 80),
                  dpo_pairs=16, dpo_batch=4, dpo_accum=1, dpo_prompt=(16, 48), dpo_response=(16, 64),
                  e2e_prompts=8, e2e_samples=2, e2e_new_tokens=16)


def param_split(model) -> tuple[int, int]:
    """(N_body, N_head): parameters outside the input embedding and LM head, and the LM head's."""
    emb = model.get_input_embeddings().weight
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    head = out.weight if out is not None else None
    skip = {id(emb)} | ({id(head)} if head is not None else set())
    body = sum(p.numel() for p in model.parameters() if id(p) not in skip)
    return body, (head.numel() if head is not None else 0)


def billions(n: float) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e8 else f"{n / 1e6:.2f}M"


def attn_dims(config) -> tuple[int, int]:
    """(layers, heads x head dim) of a Llama-style config."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return config.num_hidden_layers, config.num_attention_heads * head_dim


def words() -> list[str]:
    text = (REPO / "src/evalign/data/seed_prompts.jsonl").read_text(encoding="utf-8")
    return sorted({w for w in text.replace('"', " ").split() if w.isascii() and w.isalpha()}) or ["word"]


def text_of(n_chars: int, rng: random.Random, vocab: list[str]) -> str:
    """About ``n_chars`` characters of words (ASCII: one token each in the byte-level tokenizer)."""
    out, size = [], 0
    while size < n_chars:
        w = rng.choice(vocab)
        out.append(w)
        size += len(w) + 1
    return " ".join(out)[:n_chars].rstrip() or "x"


def seed_prompts(n: int) -> list[str]:
    rows = [json.loads(line)["prompt"] for line in
            (REPO / "src/evalign/data/seed_prompts.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    return [rows[i % len(rows)] + ("" if i < len(rows) else f" (variant {i // len(rows)})") for i in range(n)]


# ---------------------------------------------------------------------------- GPU helpers


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def reset_peak() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_gib() -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 1) if torch.cuda.is_available() else None


def free_gpu() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def build_policy(shape: dict, work: Path, device: str):
    """A random Llama-shaped causal LM in bf16 (fp32 on CPU) with the Llama-3-style tokenizer,
    built on ``device`` and saved to ``work/policy`` (bf16 safetensors) for the DPO stage."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from evalign.testing import make_llama3_style_tokenizer

    target = work / "policy"
    tok = make_llama3_style_tokenizer(target)
    cfg = LlamaConfig(vocab_size=max(shape["vocab"], len(tok)), hidden_size=shape["hidden"],
                      intermediate_size=shape["inter"], num_hidden_layers=shape["layers"],
                      num_attention_heads=shape["heads"], num_key_value_heads=shape["kv"],
                      max_position_embeddings=8192, rope_theta=500000.0, tie_word_embeddings=shape["tied"],
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=None)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(target, safe_serialization=True)
    return model.eval(), tok, target


def full_vocab_copy(policy: Path, target: Path) -> Path:
    """The random policy (weights linked, not copied) with a tokenizer that has a token for
    every id of its vocabulary (``<|rN|>`` fillers after the byte-level ones), so that what it
    samples decodes to text of as many tokens and the loop's judge, creator and pairs see
    non-empty answers. Only the end-to-end iteration uses it: loading a 128k-token added
    vocabulary takes seconds."""
    from tokenizers import AddedToken
    from transformers import AutoConfig, AutoTokenizer

    target.mkdir(parents=True, exist_ok=True)
    for f in policy.glob("*.safetensors*"):
        if not (target / f.name).exists():
            (target / f.name).symlink_to(f)
    for name in ("config.json", "generation_config.json"):
        shutil.copyfile(policy / name, target / name)
    tok = AutoTokenizer.from_pretrained(policy)
    vocab = AutoConfig.from_pretrained(policy).vocab_size
    tok.add_tokens([AddedToken(f"<|r{i}|>", normalized=False, special=False) for i in range(vocab - len(tok))])
    tok.save_pretrained(target)
    return target


# ---------------------------------------------------------------------------- stages


def stage_sample(args, sz, work: Path, device: str, built: dict) -> dict:
    from evalign.backends.base import GenParams
    from evalign.backends.transformers_backend import TransformersLLM

    if args.policy:
        llm = TransformersLLM(args.policy, dtype="bfloat16", batch_size=sz["sample_batch"])
        what_model = f"{args.policy}"
    else:
        t = time.perf_counter()
        model, tok, path = build_policy(POLICY_SHAPES[sz["policy"]], work, device)
        built["policy_dir"] = str(path)
        built["policy_build_seconds"] = round(time.perf_counter() - t, 1)
        log(f"built and saved a random {sz['policy']} policy in {built['policy_build_seconds']}s at {path}")
        llm = TransformersLLM(str(path), model=model, tokenizer=tok, dtype="bfloat16", batch_size=sz["sample_batch"])
        what_model = f"random Llama {sz['policy']}-shaped"
    model = llm.model
    n_body, n_head = param_split(model)
    layers, d_attn = attn_dims(model.config)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    forwards = [0]
    hook = model.register_forward_pre_hook(lambda *_: forwards.__setitem__(0, forwards[0] + 1))

    convs = [[{"role": "user", "content": p}] for p in seed_prompts(sz["sample_prompts"])]
    params = GenParams(max_new_tokens=sz["max_new_tokens"], temperature=0.7, top_p=0.9)
    seeds = list(range(sz["samples"]))
    llm.generate(convs[:2], GenParams(max_new_tokens=4, temperature=0.7, top_p=0.9), seeds)  # warm-up
    before = llm.stats.snapshot()
    forwards[0] = 0
    reset_peak()
    sync()
    t = time.perf_counter()
    out = llm.generate(convs, params, seeds)
    sync()
    sec = time.perf_counter() - t
    hook.remove()
    after = llm.stats.snapshot()
    P = int(after["prompt_tokens"] - before["prompt_tokens"])
    G = int(after["completion_tokens"] - before["completion_tokens"])
    plens = [llm.count_tokens(llm.render(c)) for c in convs]
    glens = [g.completion_tokens for row in out for g in row]
    # attention: prefill 2·L·d·P² per prompt; decode 4·L·d·c per generated token at context c
    attn = sum(2 * layers * d_attn * p * p for p in plens)
    attn += sum(4 * layers * d_attn * (p * g + g * g / 2) for p, row in zip(plens, out)
                for g in (x.completion_tokens for x in row))
    flops = 2 * n_body * (P + G) + 2 * n_head * (len(convs) + G) + attn
    row = {
        "stage": "sample", "seconds": round(sec, 2),
        "what": (f"TransformersLLM.generate, {what_model} ({billions(n_body + n_head)} params: body "
                 f"{billions(n_body)} + head {billions(n_head)}), {str(model.dtype).replace('torch.', '')}, "
                 f"{len(convs)} prompts x {len(seeds)} samples x {params.max_new_tokens} new tokens, "
                 f"{llm.batch_size} rows/batch"),
        "prompts": len(convs), "samples": len(seeds), "prompt_tokens": P, "generated_tokens": G,
        "mean_prompt_tokens": round(sum(plens) / len(plens), 1), "stopped_early": sum(g < params.max_new_tokens
                                                                                     for g in glens),
        "forwards": forwards[0], "tokens_per_s": round(G / sec, 1), "flops": flops,
        "weight_bytes": weight_bytes, "weight_read_tbps": round(forwards[0] * weight_bytes / sec / 1e12, 3),
        "peak_gib": peak_gib(), "throughput": f"{G / sec:,.0f} generated tok/s",
    }
    llm.close()
    del llm, model
    free_gpu()
    return row


def stage_reward(args, sz, work: Path, device: str, built: dict) -> dict:
    import torch

    from evalign.config import ModelSpec
    from evalign.judge.reward import ClassifierReward
    from evalign.testing import make_armorm_style_reward_model

    shape = RM_SHAPES[sz["rm"]]
    if args.reward:
        rm = ClassifierReward(ModelSpec(model=args.reward, backend="transformers", dtype="bfloat16",
                                        trust_remote_code=True), batch_size=sz["rm_batch"])
        what_model = args.reward
    else:
        t = time.perf_counter()
        on_gpu = device.startswith("cuda")
        from_config = args.rm_build == "config" or (args.rm_build == "auto" and on_gpu)
        path = make_armorm_style_reward_model(
            work / f"armorm-{sz['rm']}", hidden=shape["hidden"], layers=shape["layers"], heads=shape["heads"],
            kv_heads=shape["kv"], intermediate=shape["inter"], vocab_size=shape["vocab"],
            num_objectives=shape["objectives"], gating_hidden=shape["gating"], gating_layers=shape["gating_layers"],
            dtype="bfloat16" if on_gpu else "float32", weights=not from_config)
        spec = ModelSpec(model=str(path), backend="transformers", dtype="bfloat16" if on_gpu else "float32",
                         trust_remote_code=True)
        if from_config:  # built from its config on the GPU: no 15 GB written and read back
            from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

            from evalign.hf_compat import restore_removed_doc_names

            restore_removed_doc_names(("llama",))
            config = AutoConfig.from_pretrained(path, trust_remote_code=True)
            torch.manual_seed(0)
            with torch.device(device):
                model = AutoModelForSequenceClassification.from_config(
                    config, trust_remote_code=True, dtype=torch.bfloat16 if on_gpu else torch.float32)
            rm = ClassifierReward(spec, batch_size=sz["rm_batch"], model=model,
                                  tokenizer=AutoTokenizer.from_pretrained(path))
            how = f"built from its config on the {'GPU' if on_gpu else 'CPU'}"
        else:  # the loading path ClassifierReward takes for a real checkpoint
            rm = ClassifierReward(spec, batch_size=sz["rm_batch"])
            how = "saved and loaded through ClassifierReward"
        sync()
        built["rm_build_seconds"] = round(time.perf_counter() - t, 1)
        log(f"ArmoRM-shaped {sz['rm']} reward model {how} in {built['rm_build_seconds']}s")
        what_model = f"random ArmoRM-shaped {sz['rm']} ({how})"
    model = rm.model
    n_body, _ = param_split(model)
    layers, d_attn = attn_dims(model.config)
    n_all = sum(p.numel() for p in model.parameters())
    rng, vocab = random.Random(0), words()
    prompts = [text_of(rng.randint(*sz["rm_prompt"]), rng, vocab) for _ in range(sz["rm_items"])]
    responses = [[text_of(rng.randint(*sz["rm_response"]), rng, vocab)] for _ in range(sz["rm_items"])]
    lens = [len(rm.encode(p, rs[0])) for p, rs in zip(prompts, responses)]
    rm.score(prompts[:2], responses[:2])  # warm-up (no store: nothing cached)
    reset_peak()
    sync()
    t = time.perf_counter()
    scores = rm.score(prompts, responses)
    sync()
    sec = time.perf_counter() - t
    T = sum(lens)
    flops = 2 * n_body * T + sum(2 * layers * d_attn * s * s for s in lens)
    finite = all(math.isfinite(s) for row in scores for s in row)
    row = {
        "stage": "reward", "seconds": round(sec, 2),
        "what": (f"ClassifierReward.score, {what_model}, {billions(n_all)} params (body {billions(n_body)}), "
                 f"{str(model.dtype).replace('torch.', '')}, {len(prompts)} chats of {min(lens)}-{max(lens)} "
                 f"tokens (mean {T / len(lens):.0f}), {rm.batch_size} per batch"),
        "items": len(prompts), "tokens": T, "scores_finite": finite, "flops": flops,
        "items_per_s": round(len(prompts) / sec, 2), "tokens_per_s": round(T / sec, 1), "peak_gib": peak_gib(),
        "throughput": f"{len(prompts) / sec:,.1f} chats/s, {T / sec:,.0f} tok/s",
    }
    rm.close()
    del rm, model
    free_gpu()
    return row


@contextlib.contextmanager
def dpo_probes(marks: dict):
    """Timestamps inside train_preference: the trainer built (after TRL's tokenizing, weight hash
    and reference pass), the reference pass, the training loop; and the trainer itself."""
    import trl
    from transformers import TrainerCallback

    import evalign.solver.train as train_mod

    real_trainer, real_ref = train_mod._trainer, trl.DPOTrainer._precompute_ref_logps

    class Clock(TrainerCallback):
        def on_train_begin(self, *a, **k):
            sync()
            marks["train_begin"] = time.perf_counter()

        def on_train_end(self, *a, **k):
            sync()
            marks["train_end"] = time.perf_counter()

    def trainer(*a, **k):
        marks["loaded"] = time.perf_counter()
        tr = real_trainer(*a, **k)
        tr.add_callback(Clock())
        marks["built"] = time.perf_counter()
        marks["trainer"] = tr
        return tr

    def precompute(self, *a, **k):
        sync()
        t = time.perf_counter()
        out = real_ref(self, *a, **k)
        sync()
        marks["ref_seconds"] = marks.get("ref_seconds", 0.0) + time.perf_counter() - t
        return out

    train_mod._trainer, trl.DPOTrainer._precompute_ref_logps = trainer, precompute
    try:
        yield
    finally:
        train_mod._trainer, trl.DPOTrainer._precompute_ref_logps = real_trainer, real_ref


def stage_dpo(args, sz, work: Path, device: str, built: dict) -> dict:
    from evalign.config import TrainConfig
    from evalign.solver.train import train_preference

    base = args.policy or built.get("policy_dir")
    if not base:
        raise RuntimeError("no policy checkpoint (the sample stage builds it; run it too or give --policy)")
    rng, vocab = random.Random(1), words()
    pairs = [{"prompt": text_of(rng.randint(*sz["dpo_prompt"]), rng, vocab),
              "chosen": text_of(rng.randint(*sz["dpo_response"]), rng, vocab),
              "rejected": text_of(rng.randint(*sz["dpo_response"]), rng, vocab)} for _ in range(sz["dpo_pairs"])]
    cfg = TrainConfig(loss="dpo", beta=0.05, learning_rate=5e-7, epochs=1, batch_size=sz["dpo_batch"],
                      gradient_accumulation_steps=sz["dpo_accum"], max_length=1024,
                      dtype="bfloat16" if device.startswith("cuda") else "auto",
                      gradient_checkpointing=False, precompute_ref_logprobs=True, packed_batches=True, min_pairs=2)
    from evalign.solver.train import _mixed_bf16

    precision = "bf16 autocast over fp32 weights" if _mixed_bf16(cfg) else "fp32"
    marks: dict = {}
    reset_peak()
    t0 = time.perf_counter()
    with dpo_probes(marks):
        res = train_preference(base, pairs, cfg, work / "dpo-out", seed=0, quiet=True)
    sync()
    end = time.perf_counter()
    tr = marks.pop("trainer")
    ds = tr.train_dataset
    lp, lc, lr = ([len(x) for x in ds[c]] for c in ("prompt_ids", "chosen_ids", "rejected_ids"))
    lc = [min(c, cfg.max_length - p) for p, c in zip(lp, lc)]  # the collator's truncation (none at these sizes)
    lr = [min(r, cfg.max_length - p) for p, r in zip(lp, lr)]
    model = tr.model
    n_body, n_head = param_split(model)
    layers, d_attn = attn_dims(model.config)
    del tr, model
    U = sum(p + c + r for p, c, r in zip(lp, lc, lr))
    C = sum(c + r for c, r in zip(lc, lr))
    attn = sum(2 * layers * d_attn * (p + c) ** 2 + 4 * layers * d_attn * r * p + 2 * layers * d_attn * r * r
               for p, c, r in zip(lp, lc, lr))
    fwd = 2 * n_body * U + 2 * n_head * C + attn
    epochs = cfg.epochs
    train_s = marks["train_end"] - marks["train_begin"]
    ref_s = marks.get("ref_seconds", 0.0)
    packing = res.packing
    took = bool(packing and packing.get("batches", 0) and not packing.get("unpacked_batches", 0))
    row = {
        "stage": "dpo", "seconds": round(end - t0, 2),
        "what": (f"train_preference (TRL DPOTrainer, packed batches, reference precomputed), "
                 f"{billions(n_body + n_head)} params, {precision}, {len(pairs)} pairs "
                 f"(mean prompt {sum(lp) / len(lp):.0f} + answers {C / len(lp) / 2:.0f} tokens), "
                 f"{cfg.batch_size} x {cfg.gradient_accumulation_steps} pairs per update, {res.steps} updates"),
        "pairs": res.n_pairs, "steps": res.steps, "unique_tokens": U, "label_tokens": C,
        "packing": packing, "packing_fast_path": took,
        "phases_s": {"load": round(marks["loaded"] - t0, 2), "trl_setup": round(marks["built"] - marks["loaded"] - ref_s, 2),
                     "reference_pass": round(ref_s, 2), "train_loop": round(train_s, 2),
                     "save": round(end - marks["train_end"], 2)},
        "flops": 3 * fwd * epochs, "flops_seconds": round(train_s, 2),
        "ref_flops": fwd, "ref_tflops": round(fwd / ref_s / 1e12, 2) if ref_s else None,
        "tokens_per_s": round(U * epochs / train_s, 1), "pairs_per_s": round(len(pairs) * epochs / train_s, 2),
        "losses": [round(x, 4) for x in res.losses[:3]] + (["..."] if len(res.losses) > 3 else []),
        "peak_gib": peak_gib(),
        "throughput": f"{len(pairs) * epochs / train_s:,.1f} pairs/s, {U * epochs / train_s:,.0f} tok/s in the loop",
    }
    shutil.rmtree(work / "dpo-out", ignore_errors=True)
    free_gpu()
    if not took:
        log(f"dpo: the packed fast path was NOT taken: {packing}")
    return row


def stage_e2e(args, sz, work: Path, device: str, built: dict) -> dict:
    from evalign.config import load_config
    from evalign.run.loop import Runner
    from evalign.run.session import open_run

    policy = args.policy or built.get("policy_dir")
    if not policy:
        raise RuntimeError("no policy checkpoint (the sample stage builds it; run it too or give --policy)")
    if not args.policy:
        policy = str(full_vocab_copy(Path(policy), work / "policy-e2e"))
    judge = args.judge or policy
    have_vllm = importlib.util.find_spec("vllm") is not None
    backend = args.backend if args.backend != "auto" else ("vllm" if have_vllm else "transformers")
    accel = work / "accelerate_1gpu.yaml"
    accel.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: 'NO'\nmixed_precision: bf16\n"
                     f"use_cpu: {'false' if device.startswith('cuda') else 'true'}\ndebug: false\nnum_machines: 1\n"
                     "machine_rank: 0\nnum_processes: 1\nmain_training_function: main\n")
    judge_spec = {"model": judge, "backend": "transformers", "dtype": "bfloat16", "batch_size": 32}
    reward = ({"kind": "classifier", "model": {"model": args.reward, "backend": "transformers", "dtype": "bfloat16",
                                               "trust_remote_code": True}}
              if args.reward else {"kind": "judge_pointwise", "model": judge_spec, "max_response_tokens": 256})
    run_dir = work / "e2e-run"
    shutil.rmtree(run_dir, ignore_errors=True)
    cfg = load_config(overrides={
        "run": {"name": "gpu-check", "seed": 0, "iterations": 1, "output_dir": str(run_dir)},
        "policy": {"model": policy, "backend": backend, "dtype": "bfloat16", "batch_size": 64,
                   "gpu_memory_utilization": args.gpu_memory_utilization, "max_model_len": 2048},
        "prompts": {"source": "builtin:seed", "limit": sz["e2e_prompts"]},
        "creator": {"enabled": True, "first_iteration": 1, "model": judge_spec, "sample_fraction": 0.25,
                    "num_evolutions": 2, "sampling": {"max_new_tokens": min(160, sz["e2e_new_tokens"]),
                                                      "temperature": 0.7, "top_p": 0.95}},
        "solver": {
            "num_samples": sz["e2e_samples"],
            "sampling": {"max_new_tokens": sz["e2e_new_tokens"], "temperature": 0.7, "top_p": 0.9},
            "reward": reward,
            "train": {"loss": "dpo", "beta": 0.05, "learning_rate": 5.0e-7, "epochs": 1, "batch_size": 4,
                      "gradient_accumulation_steps": 4, "max_length": 1024, "dtype": "bfloat16",
                      "gradient_checkpointing": True, "precompute_ref_logprobs": True, "min_pairs": 2,
                      "launcher": args.launcher, "accelerate_config": str(accel), "num_processes": 1},
        },
        "eval": {"enabled": False},
    })
    rows = []
    t0 = time.perf_counter()
    with open_run(cfg, with_eval=False) as s:
        runner = Runner(cfg, s.store, s.pool)
        inner = runner.stage

        def totals():
            r = s.store.db.execute("SELECT count(*), coalesce(sum(prompt_tokens),0), coalesce(sum(completion_tokens),0) "
                                   "FROM generations").fetchone()
            return int(r[0]), int(r[1]), int(r[2])

        def timed(name, arm, iteration, inputs, fn, *rest, **kw):
            b, t = totals(), time.perf_counter()
            res = inner(name, arm, iteration, inputs, fn, *rest, **kw)
            a = totals()
            r = {"stage": name, "seconds": round(time.perf_counter() - t, 2), "generations": a[0] - b[0],
                 "completion_tokens": a[2] - b[2]}
            if name.startswith("reward"):
                r["items"] = int(res.get("n", 0))
            if name == "train":
                r.update(pairs=int(res.get("n_pairs", 0)), steps=int(res.get("steps", 0)))
            rows.append(r)
            log(f"  e2e {name}: {r}")
            return res

        runner.stage = timed  # type: ignore[method-assign]
        runner.run_arm("eva", cfg)
    sec = time.perf_counter() - t0
    shutil.rmtree(run_dir, ignore_errors=True)
    free_gpu()
    return {"stage": "e2e", "seconds": round(sec, 2), "flops": None, "peak_gib": None,
            "what": (f"Runner.run_arm (one eva iteration), policy backend {backend}, {sz['e2e_prompts']} prompts x "
                     f"{sz['e2e_samples']} samples x {sz['e2e_new_tokens']} tokens, reward "
                     f"{'classifier' if args.reward else 'pointwise judge (the policy)'}, train launcher {args.launcher}"),
            "stages": rows, "throughput": " · ".join(f"{r['stage']} {r['seconds']:.0f}s" for r in rows)}


STAGES = {"sample": stage_sample, "reward": stage_reward, "dpo": stage_dpo, "e2e": stage_e2e}
#: Python packages each stage imports beyond torch/transformers (checked before it runs).
NEEDS = {"sample": ("pydantic",), "reward": ("pydantic",), "dpo": ("pydantic", "trl", "peft", "datasets"),
         "e2e": ("pydantic", "trl", "peft", "datasets", "datasketch", "yaml", "rich", "typer", "accelerate")}
#: Seconds a stage needs at the GPU defaults, to decide whether to start it near the budget's end.
RESERVE = {"sample": 40, "reward": 45, "dpo": 90, "e2e": 170}


# ---------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "gpu_check_out"), help="where gpu_check.json goes")
    ap.add_argument("--work", default=None, help="scratch for models and checkpoints (default: a temp dir, removed)")
    ap.add_argument("--stages", nargs="+", choices=list(STAGES), default=["sample", "reward", "dpo", "e2e"])
    ap.add_argument("--e2e", choices=("auto", "on", "off"), default="auto",
                    help="auto: on a GPU, when the time left allows; on: always; off: never")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes even on a GPU (always so without CUDA)")
    ap.add_argument("--policy-size", choices=list(POLICY_SHAPES), default=None)
    ap.add_argument("--rm-size", choices=list(RM_SHAPES), default=None)
    ap.add_argument("--rm-build", choices=("auto", "config", "load"), default="auto",
                    help="random RM: built from its config in place (auto: on a GPU) or saved and loaded")
    ap.add_argument("--peak-tflops", type=float, default=790.0, help="bf16 dense peak (H200: ~790)")
    ap.add_argument("--hbm-tbps", type=float, default=4.8, help="memory bandwidth (H200: 4.8 TB/s)")
    ap.add_argument("--budget", type=float, default=450.0, help="seconds; no stage starts that would not fit")
    ap.add_argument("--policy", default=os.environ.get("EVALIGN_GPU_POLICY"),
                    help="a local HF chat model instead of the random policy (sample, dpo, e2e)")
    ap.add_argument("--reward", default=os.environ.get("EVALIGN_GPU_REWARD"),
                    help="a local classifier reward model instead of the random ArmoRM-shaped one")
    ap.add_argument("--judge", default=None, help="e2e: local judge/creator model (default: the policy)")
    ap.add_argument("--backend", choices=("auto", "vllm", "transformers"), default="auto", help="e2e policy backend")
    ap.add_argument("--launcher", choices=("accelerate", "inprocess"), default=None,
                    help="e2e training launcher (default: accelerate on a GPU, inprocess on CPU)")
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.45)
    for key in ("sample_prompts", "samples", "max_new_tokens", "sample_batch", "rm_items", "rm_batch",
                "dpo_pairs", "dpo_batch", "dpo_accum"):
        ap.add_argument("--" + key.replace("_", "-"), type=int, default=None)
    args = ap.parse_args(argv)

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("EVALIGN_QUIET", "1")
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None:
        print("gpu_check: this Python has no torch or no transformers; nothing can run "
              f"({sys.executable}; set PYTHON= for gpu_check.sh)", flush=True)
        return 1
    for var in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS"):
        os.environ.setdefault(var, "1")  # progress bars would fill the device's output tail
    import torch

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    sz = dict(TINY_SIZES if (args.tiny or not cuda) else GPU_SIZES)
    for key in ("policy", "rm"):
        if getattr(args, f"{key}_size"):
            sz[key] = getattr(args, f"{key}_size")
    for key in ("sample_prompts", "samples", "max_new_tokens", "sample_batch", "rm_items", "rm_batch",
                "dpo_pairs", "dpo_batch", "dpo_accum"):
        if getattr(args, key) is not None:
            sz[key] = getattr(args, key)
    if args.launcher is None:
        args.launcher = "accelerate" if cuda else "inprocess"
    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": cuda,
           "device": torch.cuda.get_device_name(0) if cuda else "cpu"}
    for mod in ("transformers", "trl", "peft", "datasets", "accelerate", "vllm"):
        try:
            env[mod] = (getattr(__import__(mod), "__version__", "?") if importlib.util.find_spec(mod) else None)
        except Exception as exc:  # noqa: BLE001 - a broken install is reported, its stages then fail alone
            env[mod] = f"import failed: {type(exc).__name__}: {str(exc)[:200]}"
    log(f"environment: {env}")
    if not cuda:
        print("no GPU: no CUDA device here, so the H200 sizes are skipped: every stage runs at tiny sizes on the "
              "CPU (code paths only; the throughputs and peak fractions are meaningless)"
              + ("" if args.e2e == "on" else ", and the end-to-end iteration is skipped (--e2e on runs it)"),
              flush=True)
    stages = [s for s in args.stages if s != "e2e" or args.e2e == "on" or (args.e2e == "auto" and cuda)]

    tmp = None
    if args.work:
        work = Path(args.work).resolve()
        work.mkdir(parents=True, exist_ok=True)
    else:
        import tempfile

        tmp = tempfile.mkdtemp(prefix="evalign-gpu-check-")
        work = Path(tmp)
    rows: list[dict] = []
    built: dict = {}
    report = {"env": env, "sizes": sz, "peak_tflops": args.peak_tflops, "hbm_tbps": args.hbm_tbps,
              "flop_formulas": " ".join(__doc__.split("FLOPs (", 1)[1].split("Estimated", 1)[0].split()),
              "stages": rows, "built": built}

    def write():
        report["total_seconds"] = round(time.perf_counter() - T0, 1)
        (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))

    failed = []
    try:
        for name in stages:
            left = args.budget - (time.perf_counter() - T0)
            if cuda and not args.tiny and left < RESERVE[name] and not (name == "e2e" and args.e2e == "on"):
                rows.append({"stage": name, "skipped": f"out of time ({left:.0f}s left of --budget {args.budget:.0f})"})
                log(f"stage {name}: skipped, {left:.0f}s left")
                continue
            missing = [m for m in NEEDS[name] if importlib.util.find_spec(m) is None]
            if missing:
                rows.append({"stage": name, "skipped": f"missing Python packages: {', '.join(missing)}"})
                log(f"stage {name}: skipped, missing Python packages {missing} (carry them as wheels: "
                    "benchmarks/fetch_wheels.sh)")
                failed.append(name)
                continue
            log(f"stage {name}: starting")
            try:
                row = STAGES[name](args, sz, work, device, built)
            except Exception as exc:  # noqa: BLE001 - report and go on with the next stage
                traceback.print_exc()
                row = {"stage": name, "error": f"{type(exc).__name__}: {str(exc)[:500]}"}
                failed.append(name)
                free_gpu()
            if row.get("flops"):
                sec = row.get("flops_seconds", row["seconds"])
                row["tflops"] = round(row["flops"] / sec / 1e12, 3)
                row["of_peak"] = round(row["flops"] / sec / 1e12 / args.peak_tflops, 4)
            rows.append(row)
            log(f"stage {name}: " + ("; ".join(f"{k} {row[k]}" for k in ("error", "seconds", "throughput", "tflops",
                                                                       "peak_gib") if row.get(k) is not None)))
            write()
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        write()

    table = [f"| stage | what ran | s | throughput | TFLOP/s | of {args.peak_tflops:.0f} peak |", "|---|---|---|---|---|---|"]
    for r in rows:
        if "skipped" in r or "error" in r:
            table.append(f"| {r['stage']} | {r.get('skipped') or 'FAILED: ' + r['error'][:200]} | | | | |")
            continue
        extra = ""
        if r["stage"] == "sample":
            extra = (f"; weights read {r['weight_read_tbps']:.2f} TB/s "
                     f"({r['weight_read_tbps'] / args.hbm_tbps:.0%} of {args.hbm_tbps} TB/s)")
        if r["stage"] == "dpo":
            extra = (f"; phases {r['phases_s']}; packed fast path {'taken' if r['packing_fast_path'] else 'NOT taken'}"
                     f"; reference pass {r['ref_tflops']} TFLOP/s")
        tf = f"{r['tflops']:.1f}" if r.get("tflops") is not None else "—"
        frac = f"{r['of_peak']:.1%}" if (r.get("of_peak") is not None and cuda) else "—"
        table.append(f"| {r['stage']} | {r['what']}{extra} | {r['seconds']:.1f} | {r['throughput']} | {tf} | {frac} |")
    total = time.perf_counter() - T0
    table.append(f"\ntotal {total:.0f}s on {env['device']}" + ("" if cuda else " (no GPU: tiny sizes, figures meaningless)"))
    (out / "gpu_check.md").write_text("\n".join(table) + "\n")
    print("\n" + "\n".join(table) + f"; {out / 'gpu_check.json'}, {out / 'gpu_check.md'}")
    if failed:
        print(f"stages that failed or could not run: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
