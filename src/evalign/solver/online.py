"""Online eva's solver phase: RLOO or GRPO through TRL on the policy's own rollouts.

One phase trains the policy on a prompt buffer with TRL's ``RLOOTrainer`` (REINFORCE
leave-one-out, the paper's online optimiser) or ``GRPOTrainer``: each step rolls out
``num_samples`` completions per prompt, scores them with evalign's reward model (any kind:
a judge or a classifier, cached in the run store like every other reward) and updates the
policy. Every rollout and its reward is kept (:class:`Rollout`): the creator reads each
prompt's rewards as its informativeness before the next phase, as the offline loop reads
the k samples' rewards.

TRL's sampler drops a last batch with fewer than ``prompts_per_step`` prompts; the buffer is
padded with its own first prompts (in a seeded order) so that every prompt is rolled out in
every pass. The result is a plain HF checkpoint written atomically, as preference training
writes one (solver/train.py), with its steps, losses and mean rewards.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from evalign.config import OnlineConfig, SamplingConfig, TrainConfig
from evalign.fsutil import atomic_dir, atomic_write_text
from evalign.solver.train import load_trainable, lora_config, run_arguments, save_trained, watch_finite

log = logging.getLogger(__name__)

#: Scores ``responses[i][j]`` to ``prompts[i]``: evalign's RewardModel.score through the store.
ScoreFn = Callable[[Sequence[str], Sequence[Sequence[str]]], list[list[float]]]


@dataclass(frozen=True)
class Rollout:
    """One completion the policy sampled during a phase, and its reward (before any KL term)."""

    prompt_id: int
    step: int
    index: int  # its position among the prompt's rollouts of that step
    text: str
    reward: float


@dataclass
class OnlineResult:
    checkpoint: str
    n_prompts: int
    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)
    mean_rewards: list[float] = field(default_factory=list)
    rollouts: list[Rollout] = field(default_factory=list)
    skipped: bool = False
    reason: str = ""

    def as_dict(self) -> dict:
        return {"checkpoint": self.checkpoint, "n_prompts": self.n_prompts, "steps": self.steps,
                "seconds": self.seconds, "losses": self.losses, "mean_rewards": self.mean_rewards,
                "n_rollouts": len(self.rollouts), "skipped": self.skipped, "reason": self.reason}


def padded_buffer(prompt_ids: Sequence[int], per_step: int, seed: int) -> list[int]:
    """``prompt_ids`` plus as many of them again (a seeded choice) as fill the last step."""
    ids = list(prompt_ids)
    short = (-len(ids)) % per_step
    if short:
        extra = list(ids)
        random.Random(seed).shuffle(extra)
        ids += (extra * (short // len(extra) + 1))[:short]
    return ids


class RolloutRecorder:
    """TRL's reward function: scores a batch of rollouts with evalign's reward model and keeps
    each rollout with its reward. Completions come in groups of k per prompt (TRL's
    RepeatSampler), which is how they are scored, so a judge sees a prompt's rollouts together."""

    def __init__(self, score: ScoreFn, texts: dict[int, str]) -> None:
        self.score = score
        self.texts = texts
        self.rollouts: list[Rollout] = []
        self.calls = 0
        self.__name__ = "evalign_reward"  # TRL names a callable reward by its __name__

    def __call__(self, prompts, completions, prompt_id, trainer_state=None, **_) -> list[float]:
        step = int(getattr(trainer_state, "global_step", 0) or 0)
        order: list[int] = []
        groups: dict[int, list[int]] = {}
        for n, pid in enumerate(prompt_id):
            if int(pid) not in groups:
                order.append(int(pid))
                groups[int(pid)] = []
            groups[int(pid)].append(n)
        answers = [_text(c) for c in completions]
        scores = self.score([self.texts[p] for p in order], [[answers[n] for n in groups[p]] for p in order])
        out = [math.nan] * len(answers)
        for p, row in zip(order, scores):
            for j, (n, s) in enumerate(zip(groups[p], row)):
                out[n] = float(s)
                self.rollouts.append(Rollout(p, step, j, answers[n], float(s)))
        self.calls += len(answers)
        return out


def _text(completion) -> str:
    if isinstance(completion, list):  # conversational: [{"role": "assistant", "content": ...}]
        return "".join(m.get("content") or "" for m in completion)
    return str(completion)


def online_arguments(cfg: OnlineConfig, train: TrainConfig, sampling: SamplingConfig, k: int, workdir: str,
                     seed: int, quiet: bool) -> dict:
    """TRL RLOOConfig / GRPOConfig arguments from evalign's config (names mapped as in
    solver/train.trainer_arguments: per_device_train_batch_size is prompts_per_step x k
    completions, as TRL counts them)."""
    args = {
        **run_arguments(train, workdir, seed, quiet),
        "learning_rate": cfg.learning_rate,
        "lr_scheduler_type": cfg.lr_scheduler,
        "warmup_steps": cfg.warmup_ratio,
        "num_train_epochs": cfg.epochs,
        "per_device_train_batch_size": cfg.prompts_per_step * k,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "num_generations": k,
        "max_completion_length": sampling.max_new_tokens,
        "temperature": max(sampling.temperature, 1e-5),
        "top_p": sampling.top_p,
        "top_k": 0,  # as evalign's own sampling: nucleus only
        "beta": cfg.beta,
        "shuffle_dataset": True,
    }
    if cfg.use_vllm:
        args.update(use_vllm=True, vllm_mode="colocate", vllm_gpu_memory_utilization=cfg.vllm_gpu_memory_utilization)
    return args


def _trainer_classes(algorithm: str):
    if algorithm == "rloo":
        from trl import RLOOConfig, RLOOTrainer

        return RLOOConfig, RLOOTrainer
    from trl import GRPOConfig, GRPOTrainer

    return GRPOConfig, GRPOTrainer


def train_online(
    base_path: str,
    prompts: Sequence[tuple[int, str]],
    score: ScoreFn,
    cfg: OnlineConfig,
    train: TrainConfig,
    sampling: SamplingConfig,
    k: int,
    out_dir: str | os.PathLike[str],
    *,
    seed: int = 0,
    quiet: bool = False,
) -> OnlineResult:
    """One online phase: ``base_path`` trained by RLOO/GRPO on ``prompts`` ((id, text)) into
    ``out_dir``, with ``score`` as the reward. No prompts: skipped, the policy is kept. A
    non-finite loss, gradient norm or weight raises solver/train.DivergedError and leaves no
    ``out_dir``."""
    t0 = time.perf_counter()
    if not prompts:
        reason = "no prompts in the buffer; kept the previous policy"
        log.warning(reason)
        return OnlineResult(base_path, 0, 0, 0.0, skipped=True, reason=reason)

    import transformers
    from datasets import Dataset

    transformers.set_seed(seed)
    texts = {int(pid): text for pid, text in prompts}
    ids = padded_buffer([int(pid) for pid, _ in prompts], cfg.prompts_per_step, seed)
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": texts[p]}], "prompt_id": p} for p in ids])
    tokenizer, model = load_trainable(base_path, train)
    recorder = RolloutRecorder(score, texts)
    config_class, trainer_class = _trainer_classes(cfg.algorithm)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir, what="checkpoint") as tmp:
        workdir = str(tmp / "_trainer")
        args = config_class(**online_arguments(cfg, train, sampling, k, workdir, seed, quiet))
        trainer = trainer_class(model=model, reward_funcs=[recorder], args=args, train_dataset=dataset,
                                processing_class=tokenizer, peft_config=lora_config(train))
        trainer.add_callback(watch_finite())
        trainer.train()
        save_trained(trainer, tokenizer, train, cfg, tmp, workdir)
        history = trainer.state.log_history
        losses = [h["loss"] for h in history if "loss" in h]
        mean_rewards = [h["reward"] for h in history if "reward" in h]
        steps = int(trainer.state.global_step)
        atomic_write_text(tmp / "evalign_online.json", json.dumps(
            {"base": base_path, "algorithm": cfg.algorithm, "n_prompts": len(texts), "steps": steps,
             "losses": losses, "mean_rewards": mean_rewards, "config": cfg.model_dump(mode="json"),
             "k": k, "seed": seed}, indent=1))
    seconds = time.perf_counter() - t0
    log.info("%s phase: %d prompts, %d steps (%.1fs), mean reward %s", cfg.algorithm, len(texts), steps, seconds,
             f"{mean_rewards[0]:.3f}->{mean_rewards[-1]:.3f}" if mean_rewards else "n/a")
    return OnlineResult(str(out_dir), len(texts), steps, seconds, losses, mean_rewards, recorder.rollouts)


def last_rewards(rollouts: Sequence[Rollout], prompt_ids: Sequence[int]) -> list[list[float]]:
    """Per prompt, the rewards of its rollouts at the last step that rolled it out (the policy
    closest to the phase's end): the creator's informativeness input, k values per prompt as
    the offline loop's. A prompt without rollouts gets an empty list (informativeness NaN)."""
    last: dict[int, int] = {}
    for r in rollouts:
        last[r.prompt_id] = max(last.get(r.prompt_id, -1), r.step)
    by_prompt: dict[int, list[tuple[int, float]]] = {}
    for r in rollouts:
        if r.step == last[r.prompt_id]:
            by_prompt.setdefault(r.prompt_id, []).append((r.index, r.reward))
    return [[v for _, v in sorted(by_prompt.get(p, []))] for p in prompt_ids]
