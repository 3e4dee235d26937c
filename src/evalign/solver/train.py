"""Preference training through TRL: DPO (and IPO) with ``DPOTrainer``, SPPO with a subclass of
it (solver/sppo.py), SimPO with the
experimental ``CPOTrainer``, ORPO with ``ORPOTrainer`` (the mapping is solver/losses.py);
optional LoRA through peft.

The reference model is the policy at the start of the iteration (TRL copies the model it is
given); with ``precompute_ref_logprobs`` its log-probabilities are computed once before
training instead of at every step. The result is a plain HF checkpoint directory written
atomically (LoRA adapters are merged), so the next iteration, vLLM and llama.cpp
converters can all read it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

from evalign import faults
from evalign.config import OnlineConfig, TrainConfig
from evalign.errors import EvalignError
from evalign.fsutil import atomic_dir, atomic_write_text
from evalign.hashing import file_sha256
from evalign.registry import LOSSES

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    checkpoint: str
    n_pairs: int
    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)
    skipped: bool = False
    reason: str = ""
    packing: dict | None = None  # solver/packing.py's counts, when the packed forward ran

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("checkpoint", "n_pairs", "steps", "seconds", "losses", "skipped", "reason",
                                              "packing")}


def _mixed_bf16(cfg: TrainConfig) -> bool:
    """bf16 compute by default on GPUs and on CPUs with native bf16 (1.4x faster than fp32
    there, losses within noise; see docs/performance.md)."""
    import torch

    from evalign.backends.transformers_backend import cpu_has_bf16

    if cfg.dtype != "auto":
        return cfg.dtype == "bfloat16"
    return torch.cuda.is_available() or cpu_has_bf16()


def _weights_dtype(cfg: TrainConfig):
    """Trainable weights and optimizer state stay fp32; bf16 compute runs under autocast, so
    small updates (the paper's lr is 5e-7) do not round away. With LoRA the frozen base may
    be bf16 on a GPU: only the fp32 adapters are updated. (Under DeepSpeed ZeRO-3 the
    launcher's job, DeepSpeed keeps its own fp32 master weights.)"""
    import torch

    if cfg.lora.enabled and _mixed_bf16(cfg) and torch.cuda.is_available():
        return torch.bfloat16
    return torch.float32


#: Per-pair numbers a loss may need besides the texts (SPPO's win probabilities, solver/sppo.py).
PAIR_EXTRAS = ("chosen_win_prob", "rejected_win_prob")


def to_dataset(pairs: Sequence[dict]):
    """Conversational preference format that every TRL preference trainer reads, plus the
    pairs' ``PAIR_EXTRAS`` where they carry them (TRL's tokenization keeps extra columns)."""
    from datasets import Dataset

    extras = [k for k in PAIR_EXTRAS if pairs and all(p.get(k) is not None for p in pairs)]
    return Dataset.from_list([
        {
            "prompt": [{"role": "user", "content": p["prompt"]}],
            "chosen": [{"role": "assistant", "content": p["chosen"]}],
            "rejected": [{"role": "assistant", "content": p["rejected"]}],
            **{k: float(p[k]) for k in extras},
        }
        for p in pairs
    ])


class DivergedError(EvalignError):
    """Training produced a non-finite loss, gradient norm or weight; nothing of it is kept."""

    def __init__(self, cfg: TrainConfig | OnlineConfig, step: int, what: str) -> None:
        section = "solver.online" if isinstance(cfg, OnlineConfig) else "solver.train"
        super().__init__(
            f"training diverged at step {step}: {what}; lower {section}.learning_rate "
            f"(now {cfg.learning_rate:g}) and rerun; no checkpoint was kept"
        )


def watch_finite():
    """A TrainerCallback that stops training at the first logged non-finite loss or gradient
    norm (TRL logs both every step here); its ``problem`` is then (step, "loss nan")."""
    from transformers import TrainerCallback

    class WatchFinite(TrainerCallback):
        problem: tuple[int, str] | None = None

        def on_log(self, args, state, control, logs=None, **kwargs):
            for name in ("loss", "grad_norm"):
                try:
                    value = float((logs or {})[name])
                except (KeyError, TypeError, ValueError):
                    continue
                if self.problem is None and not math.isfinite(value):
                    self.problem = (int(state.global_step), f"{name} {value}")
                    control.should_training_stop = True

    return WatchFinite()


def nonfinite_tensors(named) -> list[str]:
    """Names of the tensors in ``named`` ((name, tensor) pairs) holding an inf or nan."""
    import torch

    return [name for name, t in named if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all())]


def check_finite(cfg: TrainConfig | OnlineConfig, trainer, model=None) -> None:
    """Raise :class:`DivergedError` if training logged a non-finite loss or gradient norm, or
    (given ``model``) a weight is non-finite."""
    watch = next((c for c in trainer.callback_handler.callbacks if hasattr(c, "problem")), None)
    if watch is not None and watch.problem is not None:
        raise DivergedError(cfg, *watch.problem)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    bad = next((i for i, v in enumerate(losses) if not math.isfinite(v)), None)
    if bad is not None:
        raise DivergedError(cfg, bad + 1, f"loss {losses[bad]}")
    if model is not None:
        names = nonfinite_tensors(model.named_parameters())
        if names:
            raise DivergedError(cfg, int(trainer.state.global_step),
                                f"{len(names)} weight tensors non-finite (first: {names[0]})")


def checkpointing_field(args_class=None) -> str:
    """The TrainingArguments field that switches activation checkpointing on:
    ``activation_checkpointing`` from transformers 5.23, ``gradient_checkpointing`` before it
    (5.23 keeps the old name as a deprecated alias). Read off the dataclass's fields, which TRL's
    configs inherit."""
    if args_class is None:
        from transformers import TrainingArguments as args_class
    names = {f.name for f in fields(args_class)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


def run_arguments(cfg: TrainConfig, workdir: str, seed: int, quiet: bool) -> dict:
    """The TRL config arguments of every evalign training run, preference or online: where it
    works, precision and checkpointing (from ``cfg``), seeds, logging every step, no saving."""
    import torch

    return {
        "output_dir": workdir,
        checkpointing_field(): cfg.gradient_checkpointing,
        "bf16": _mixed_bf16(cfg),
        "use_cpu": not torch.cuda.is_available(),
        "seed": seed,
        "data_seed": seed,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": quiet,
        "remove_unused_columns": False,
    }


def trainer_arguments(cfg: TrainConfig, workdir: str, seed: int, quiet: bool) -> dict:
    """The TRL config arguments every preference loss shares (solver/losses.py adds its own)."""
    # TrainConfig's names -> TRL's: lr_scheduler -> lr_scheduler_type, warmup_ratio -> warmup_steps
    # (a float below 1 is a fraction of the steps), epochs -> num_train_epochs, batch_size ->
    # per_device_train_batch_size, gradient_checkpointing -> checkpointing_field(), dtype -> bf16.
    return {
        **run_arguments(cfg, workdir, seed, quiet),
        "learning_rate": cfg.learning_rate,
        "lr_scheduler_type": cfg.lr_scheduler,
        "warmup_steps": cfg.warmup_ratio,
        "num_train_epochs": cfg.epochs,
        "per_device_train_batch_size": cfg.batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "max_length": cfg.max_length,
        "beta": cfg.beta,
        **({"optim": cfg.optimizer} if cfg.optimizer != "adamw" else {}),  # adamw: TRL's default AdamW
    }


def lora_config(cfg: TrainConfig):
    """peft's LoraConfig for ``cfg.lora``, or None when LoRA is off."""
    if not cfg.lora.enabled:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
        target_modules=cfg.lora.target_modules, task_type="CAUSAL_LM",
    )


def load_trainable(base_path: str, cfg: TrainConfig):
    """(tokenizer, model) of ``base_path`` for training: a pad token, the weights' dtype."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, AutoModelForCausalLM.from_pretrained(base_path, dtype=_weights_dtype(cfg), use_safetensors=True)


def save_trained(trainer, tokenizer, cfg: TrainConfig, checked: TrainConfig | OnlineConfig, tmp: Path,
                 workdir: str) -> None:
    """Write a finished trainer's policy into the checkpoint being built at ``tmp``: LoRA
    merged, every weight finite (else DivergedError naming ``checked``'s learning rate), the
    trainer's work directory removed."""
    import shutil

    trained = trainer.model
    if cfg.lora.enabled:
        trained = trained.merge_and_unload()
    check_finite(checked, trainer, trained)
    trained.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(workdir, ignore_errors=True)
    faults.point("checkpoint:written")


def _trainer(cfg: TrainConfig, model, tokenizer, dataset, workdir: str, seed: int, quiet: bool):
    common = trainer_arguments(cfg, workdir, seed, quiet)
    loss = LOSSES.get(cfg.loss)
    trainer = loss.build(cfg, common, model=model, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=lora_config(cfg))
    trainer.add_callback(watch_finite())
    return trainer


def train_preference(
    base_path: str,
    pairs: Sequence[dict],
    cfg: TrainConfig,
    out_dir: str | os.PathLike[str],
    *,
    seed: int = 0,
    quiet: bool = False,
) -> TrainResult:
    """Train ``base_path`` on ``pairs`` (dicts with prompt/chosen/rejected) into ``out_dir``.

    Fewer pairs than ``cfg.min_pairs``: training is skipped and the base policy is kept. A
    non-finite loss, gradient norm or weight stops training with :class:`DivergedError` and
    leaves no ``out_dir``.
    """
    t0 = time.perf_counter()
    if len(pairs) < cfg.min_pairs:
        reason = f"only {len(pairs)} preference pairs (< train.min_pairs={cfg.min_pairs}); kept the previous policy"
        log.warning(reason)
        return TrainResult(base_path, len(pairs), 0, 0.0, skipped=True, reason=reason)

    import transformers

    transformers.set_seed(seed)
    tokenizer, model = load_trainable(base_path, cfg)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir, what="checkpoint") as tmp:
        workdir = str(tmp / "_trainer")
        trainer = _trainer(cfg, model, tokenizer, to_dataset(pairs), workdir, seed, quiet)
        trainer.train()
        save_trained(trainer, tokenizer, cfg, cfg, tmp, workdir)
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        steps = int(trainer.state.global_step)
        packing = dict(trainer.packing_stats) if getattr(trainer, "packing_stats", None) else None
        atomic_write_text(tmp / "evalign_train.json", json.dumps(
            {"base": base_path, "n_pairs": len(pairs), "steps": steps, "losses": losses,
             "packing": packing, "config": cfg.model_dump(mode="json"), "seed": seed}, indent=1))
    seconds = time.perf_counter() - t0
    log.info("trained %d pairs in %d steps (%.1fs), loss %s", len(pairs), steps, seconds,
             f"{losses[0]:.4f}->{losses[-1]:.4f}" if losses else "n/a")
    if packing and packing["padded_positions"]:
        log.info("packed forward: %d batches, %d positions instead of %d padded (%.0f%%)", packing["batches"],
                 packing["packed_positions"], packing["padded_positions"],
                 100 * packing["packed_positions"] / packing["padded_positions"])
    return TrainResult(str(out_dir), len(pairs), steps, seconds, losses, packing=packing)


def expected_steps(n_pairs: int, cfg: TrainConfig, processes: int = 1) -> int:
    per_step = cfg.batch_size * cfg.gradient_accumulation_steps * processes
    return max(1, math.ceil(n_pairs / per_step)) * max(1, math.ceil(cfg.epochs))


#: Up to this many bytes of weights a checkpoint's fingerprint hashes whole files; above it
#: (7B+ models: minutes of hashing on every resume) each file's size and safetensors header.
FULL_HASH_BYTES = 4 << 30


def weights_fingerprint(directory: str | os.PathLike[str]) -> dict[str, dict]:
    """{file: {"size", "sha256", "of"}} of a checkpoint's weight files (``*.safetensors`` and
    their index): ``of`` is "file" (the whole file's sha256; checkpoints up to
    ``FULL_HASH_BYTES``) or "header" (the safetensors header: tensor names, shapes, offsets;
    with the size it catches a truncated or replaced file, not an edit in place)."""
    d = Path(directory)
    files = sorted(p for p in d.iterdir() if p.is_file() and p.name.endswith((".safetensors", ".safetensors.index.json")))
    whole = sum(p.stat().st_size for p in files) <= FULL_HASH_BYTES
    out = {}
    for p in files:
        by_file = whole or not p.name.endswith(".safetensors")
        out[p.name] = {"size": p.stat().st_size, "sha256": file_sha256(p) if by_file else _header_sha256(p),
                       "of": "file" if by_file else "header"}
    return out


def _header_sha256(path: Path) -> str:
    import hashlib

    with open(path, "rb") as fh:
        head = fh.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else 0
        return hashlib.sha256(head + fh.read(min(n, 100 << 20))).hexdigest()


def weights_problem(directory: str | os.PathLike[str], recorded: dict[str, dict] | None) -> str | None:
    """Why the checkpoint in ``directory`` is not the one fingerprinted as ``recorded`` (None:
    it is). Without a record (runs from before fingerprints) it must hold weight files."""
    d = Path(directory)
    if not d.is_dir():
        return f"checkpoint {d} is missing"
    try:
        now = weights_fingerprint(d)
    except OSError as e:
        return f"checkpoint {d} cannot be read ({e.strerror})"
    if not any(name.endswith(".safetensors") for name in now):
        return f"checkpoint {d} holds no .safetensors weights"
    if recorded is None:
        return None
    for name, rec in sorted(recorded.items()):
        cur = now.get(name)
        if cur is None:
            return f"checkpoint {d}: {name} is missing"
        if cur["size"] != rec["size"]:
            return f"checkpoint {d}: {name} has {cur['size']} bytes, {rec['size']} when trained"
        if cur["sha256"] != rec["sha256"]:
            return f"checkpoint {d}: {name} changed since it was trained (sha256 differs)"
    return None
