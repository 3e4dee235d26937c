"""Entry point of a launched training job: ``python -m evalign.solver.train_entry JOB.json``.

Started by :mod:`evalign.solver.launch` under ``accelerate launch``, once per process (rank).
It trains like :func:`evalign.solver.train.train_preference` -- the same TRL trainer built
by ``train._trainer`` from the same TrainConfig, seed and pairs -- but saves the way a
multi-process job must:

* every rank calls ``trainer.save_model``: under DeepSpeed ZeRO-3 that gathers the sharded
  parameters into one 16-bit state dict (the shipped zero3.yaml sets
  ``zero3_save_16bit_model``), under FSDP into a full state dict
  (``fsdp_state_dict_type: FULL_STATE_DICT``); the trainer writes on the main process only;
* only the main process writes the tokenizer, ``evalign_train.json`` and ``result.json``, and
  renames the finished directory into place, so the checkpoint is complete or absent;
* LoRA adapters are saved by the trainer and merged into the base on the main process, on
  CPU (``merge_and_unload`` cannot run on ZeRO-3 shards);
* with bf16 under DDP or FSDP the model is loaded in float32 and trained with bf16 autocast:
  the optimizer then updates float32 master weights. A pure-bf16 AdamW step at the paper's
  lr 5e-7 would round most updates away. DeepSpeed keeps its own fp32 masters, so under
  DeepSpeed with bf16 the model is loaded in bf16; under ZeRO-3 with ``zero3_init_flag``
  (the shipped zero3.yaml) the DeepSpeed config is registered (transformers'
  ``HfDeepSpeedConfig``) before ``from_pretrained``, which then builds the model inside
  ``deepspeed.zero.Init``: each rank holds only its partition, and only rank 0 reads the
  checkpoint's values (9B on 8 GPUs: ~19 GB of host RAM instead of 8 x 37 GB; docs/scaling.md).

With one process this gives the checkpoint in-process training gives. A non-finite loss,
gradient norm or weight (checked on every rank, the verdict shared) stops the job before
anything is saved: no checkpoint, and the error's one line in ``error.txt`` beside
``result.json`` for the launcher to report.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

from evalign.config import TrainConfig
from evalign.errors import EvalignError
from evalign.fsutil import TEMP_PREFIX, atomic_write_text
from evalign.solver.train import (DivergedError, TrainResult, _mixed_bf16, _trainer, _weights_dtype, check_finite,
                                  nonfinite_tensors, to_dataset)

log = logging.getLogger("evalign.solver.train_entry")


def read_job(path: str | os.PathLike[str]) -> dict:
    job = json.loads(Path(path).read_text(encoding="utf-8"))
    job["train"] = TrainConfig.model_validate(job["train"])
    with open(job["pairs"], encoding="utf-8") as fh:
        job["pairs_list"] = [json.loads(line) for line in fh if line.strip()]
    return job


def load_dtype(cfg: TrainConfig, distributed_type: str, mixed_precision: str):
    """The dtype to load the policy in (see the module docstring)."""
    import torch

    train = _weights_dtype(cfg)
    if distributed_type == "DEEPSPEED" and mixed_precision == "bf16" and _mixed_bf16(cfg):
        return torch.bfloat16  # DeepSpeed's optimizer keeps the fp32 master weights
    if (train == torch.bfloat16 and mixed_precision == "bf16" and not cfg.lora.enabled
            and distributed_type in ("MULTI_GPU", "FSDP")):
        return torch.float32
    return train


def zero3_init_config(distributed_type: str, mixed_precision: str):
    """Under DeepSpeed ZeRO-3 with ``zero3_init_flag``: register the job's DeepSpeed config
    with transformers (an ``HfDeepSpeedConfig``, built by accelerate's ``DeepSpeedPlugin``
    from the variables ``accelerate launch`` sets, as ``TrainingArguments`` does later) so
    that a ``from_pretrained`` after this call partitions the weights as it loads them.
    Returns the config object, which must stay alive until the trainer exists (transformers
    keeps only a weak reference); None when not ZeRO-3."""
    if distributed_type != "DEEPSPEED":
        return None
    from accelerate.utils import DeepSpeedPlugin

    plugin = DeepSpeedPlugin()
    if plugin.zero_stage != 3 or not plugin.zero3_init_flag:
        return None
    plugin.set_mixed_precision(mixed_precision)
    plugin.set_deepspeed_weakref()
    return plugin.dschf


def load_policy(base_path: str, cfg: TrainConfig, distributed_type: str, mixed_precision: str):
    """(model, keep-alive): the policy in :func:`load_dtype`, under ZeRO-3 partitioned at load
    (:func:`zero3_init_config`, whose object is the keep-alive)."""
    from transformers import AutoModelForCausalLM

    keep = zero3_init_config(distributed_type, mixed_precision)
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=load_dtype(cfg, distributed_type, mixed_precision),
                                                 use_safetensors=True)
    return model, keep


def train_launched(base_path: str, pairs: list[dict], cfg: TrainConfig, out_dir: str | os.PathLike[str], *,
                   seed: int, quiet: bool = False) -> TrainResult:
    """Train on every rank; the main process writes ``out_dir`` (complete or absent)."""
    import torch
    import transformers
    from accelerate import PartialState
    from transformers import AutoTokenizer

    t0 = time.perf_counter()
    # cpu= as the trainer's use_cpu: without it a CPU launch's ranks each see a single
    # process here (is_main_process everywhere) until TrainingArguments re-initialises the state.
    state = PartialState(cpu=not torch.cuda.is_available())
    dist_type = str(getattr(state.distributed_type, "value", state.distributed_type))
    mixed = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    transformers.set_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model, ds_config = load_policy(base_path, cfg, dist_type, mixed)
    out_dir = Path(out_dir)
    staging = out_dir.parent / f"{TEMP_PREFIX}{out_dir.name}.launch"  # the same path on every rank
    if state.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    state.wait_for_everyone()

    dataset = shared_dataset(pairs, staging / "_data", state)
    trainer = _trainer(cfg, model, tokenizer, dataset, str(staging / "_trainer"), seed, quiet)
    trainer.train()
    del ds_config  # alive until here: transformers holds it by a weak reference
    diverged = _diverged(cfg, trainer, state)
    if diverged is not None:  # every rank gets the same verdict, so none waits on a collective
        if state.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
        raise diverged
    if cfg.lora.enabled:
        trainer.save_model(str(staging / "_adapter"))
    else:
        trainer.save_model(str(staging))  # collective under ZeRO-3 / FSDP; writes on the main process
    state.wait_for_everyone()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    steps = int(trainer.state.global_step)
    packing = dict(trainer.packing_stats) if getattr(trainer, "packing_stats", None) else None
    if state.is_main_process:
        if cfg.lora.enabled:
            _merge_adapter(base_path, staging / "_adapter", staging, cfg)
        tokenizer.save_pretrained(staging)
        for scratch in ("_trainer", "_data"):
            shutil.rmtree(staging / scratch, ignore_errors=True)
        for extra in ("training_args.bin",):
            (staging / extra).unlink(missing_ok=True)
        atomic_write_text(staging / "evalign_train.json", json.dumps(
            {"base": base_path, "n_pairs": len(pairs), "steps": steps, "losses": losses, "packing": packing,
             "config": cfg.model_dump(mode="json"), "seed": seed, "launcher": "accelerate",
             "num_processes": state.num_processes, "distributed_type": dist_type}, indent=1))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    state.wait_for_everyone()
    seconds = time.perf_counter() - t0
    return TrainResult(str(out_dir), len(pairs), steps, seconds, losses, packing=packing)


def shared_dataset(pairs: list[dict], where: Path, state):
    """The pairs as a Dataset stored in ``where``, a directory every rank sees at the same path.

    TRL's DPOTrainer precomputes the reference log-probabilities on every rank, lets the main
    process write them to ``dataset._get_cache_file_path(fingerprint)`` and has every rank
    read that file back. For an in-memory Dataset that path is a random name in a per-process
    temporary directory, so ranks other than the main one look for a file that does not exist
    (FileNotFoundError). A dataset stored on disk puts its cache files, that one included, in
    its own directory under a name made from the fingerprint rank 0 broadcasts: the same file
    on every rank."""
    from datasets import load_from_disk

    if state.is_main_process:
        to_dataset(pairs).save_to_disk(str(where))
    state.wait_for_everyone()
    return load_from_disk(str(where))


def _diverged(cfg: TrainConfig, trainer, state) -> DivergedError | None:
    """The divergence of this job, if any, agreed on by every rank: the logged losses and
    gradient norms are the same on every rank; the weights are checked shard by shard (under
    ZeRO-3 a rank holds only ``ds_tensor`` partitions) and the counts summed."""
    try:
        check_finite(cfg, trainer)
    except DivergedError as e:
        return e
    import torch

    named = ((n, getattr(p, "ds_tensor", p).detach()) for n, p in trainer.model.named_parameters())
    bad = nonfinite_tensors(named)
    count = torch.tensor([float(len(bad))], device=state.device)
    if state.num_processes > 1:
        from accelerate.utils import reduce

        count = reduce(count, reduction="sum")
    if count.item() > 0:
        return DivergedError(cfg, int(trainer.state.global_step), f"{int(count.item())} weight tensors non-finite"
                             + (f" (first: {bad[0]})" if bad else ""))
    return None


def error_path(result_path: str | os.PathLike[str]) -> Path:
    """Where a launched job leaves the one line of the EvalignError that stopped it."""
    return Path(result_path).with_name("error.txt")


def _merge_adapter(base_path: str, adapter_dir: Path, target: Path, cfg: TrainConfig) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=_weights_dtype(cfg), use_safetensors=True)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(target, safe_serialization=True)
    shutil.rmtree(adapter_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m evalign.solver.train_entry JOB.json (written by evalign.solver.launch)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    job = read_job(argv[0])
    quiet = os.environ.get("EVALIGN_QUIET", "") not in ("", "0")
    from accelerate import PartialState

    try:
        result = train_launched(job["base_path"], job["pairs_list"], job["train"], job["out_dir"],
                                seed=job["seed"], quiet=quiet)
    except EvalignError as e:
        if PartialState().is_main_process:
            atomic_write_text(error_path(job["result"]), str(e))
        print(f"error: {e}", file=sys.stderr)
        return 2
    if PartialState().is_main_process:
        atomic_write_text(job["result"], json.dumps(result.as_dict(), indent=1))
        log.info("trained %d pairs in %d steps (%.1fs) -> %s", result.n_pairs, result.steps, result.seconds,
                 result.checkpoint)
    return 0


if __name__ == "__main__":
    sys.exit(main())
