"""The run config's sections: prompts, creator, solver, evaluation, run, ablation.

One field per setting, each documented where it is declared; "paper: X" marks the value
the paper or the authors' scripts use (docs/paper.md, presets/paper.yaml). Fields whose
values are the names of a registry (metric, sampler, operator, loss, reward kind, judge
variant) are validated against it (config/choices.py).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, field_validator, model_validator

from evalign.config.choices import (
    EvalJudgeVariantName,
    LossName,
    MetricName,
    OperatorName,
    RewardKindName,
    SamplerName,
)
from evalign.config.common import BudgetConfig, ModelSpec, RayConfig, SamplingConfig, Section, builtin_judge
from evalign.hashing import stable_hash


class PromptsConfig(Section):
    """Where the seed prompt pool comes from."""

    source: str = Field(
        "builtin:seed",
        description="builtin:seed | FILE.jsonl | FILE.csv | hf:DATASET[:SPLIT] (paper: UltraFeedback, ~10k split)",
    )
    field: str = Field("prompt", description="Column/key holding the prompt text.")
    limit: int | None = Field(None, ge=1, description="Keep the first N prompts after shuffling.")
    shuffle: bool = Field(True, description="Shuffle the pool (seeded by run.seed) before the limit.")
    max_chars: int = Field(4000, ge=16, description="Longest seed prompt; longer ones are handled by oversized.")
    oversized: Literal["truncate", "skip", "error"] = Field(
        "skip", description="What to do with a seed prompt over max_chars: truncate it, skip it, or stop."
    )
    schedule: Literal["evolve", "split"] = Field(
        "evolve",
        description="evolve: iteration t+1 starts from iteration t's training prompts; "
        "split: the source is cut into one fresh chunk per iteration (the authors' UltraFeedback runs).",
    )


class FilterConfig(Section):
    """Elimination filter applied to every evolved prompt."""

    enabled: bool = Field(
        True, description="Filter evolved prompts; off keeps every non-empty one (paper: no filter)."
    )
    min_chars: int = Field(16, ge=1, description="Shorter evolved prompts are dropped.")
    max_chars: int = Field(2000, ge=16, description="Longer evolved prompts are dropped.")
    dedup_threshold: float = Field(
        0.8, gt=0, le=1, description="Jaccard similarity (word 3-gram MinHash) to drop a near-duplicate."
    )
    min_new_words: int = Field(
        4, ge=1,
        description="A prompt at least dedup_threshold-similar to its parent or a pool prompt is still kept "
        "when it adds this many words of its own (a faithful evolution of a long prompt).",
    )
    decontamination_threshold: float = Field(
        0.6, gt=0, le=1, description="Jaccard similarity to an evaluation prompt that drops the prompt."
    )
    decontaminate: bool = Field(True, description="Drop evolved prompts too close to an evaluation prompt.")


class CreatorConfig(Section):
    """The creator: which prompts to evolve, and how."""

    enabled: bool = Field(True, description="Evolve prompts; off is the no-creator (plain iterated DPO) arm.")
    first_iteration: int = Field(
        1, ge=1,
        description="Iterations before this one train on the original prompts only "
        "(the paper's main runs: one DPO iteration, then eva; paper: 2).",
    )
    model: ModelSpec = Field(
        default_factory=builtin_judge,
        description="The creator LLM (paper: gemini-1.5-pro; the authors' scripts: gpt-4-0125-preview).",
    )
    metric: MetricName = Field(
        "gap", description="Informativeness of a prompt from its k rewards (creator/informativeness.py; "
        "paper: gap, max - min)."
    )
    sampler: SamplerName = Field(
        "weighted", description="How prompts are drawn by informativeness (creator/sampling.py; paper: weighted)."
    )
    sample_fraction: float = Field(0.25, gt=0, le=1, description="Share of the prompts evolved (paper: 0.25).")
    strata: int = Field(
        4, ge=1, description="Quantile bins of the stratified sampler (the authors' scripts: 10)."
    )
    operator: OperatorName = Field(
        "evol_instruct", description="How a prompt is evolved (creator/operators.py; paper: evol_instruct)."
    )
    num_evolutions: int = Field(
        4, ge=1, le=16, description="Chained evolution rounds per sampled prompt, all kept (paper: 4)."
    )
    sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(max_new_tokens=256, temperature=0.7, top_p=0.95),
        description="The creator's decoding (the authors' scripts: temperature 0.88); max_new_tokens is per "
        "new prompt, so self_instruct's one call for num_evolutions queries gets num_evolutions times it.",
    )
    filter: FilterConfig = Field(default_factory=FilterConfig, description="Checks every evolved prompt passes.")


class RewardConfig(Section):
    """How the solver's k responses per prompt are scored."""

    kind: RewardKindName = Field(
        "judge_pointwise", description="Reward model kind (judge/reward.py; paper: classifier, ArmoRM)."
    )
    model: ModelSpec = Field(
        default_factory=builtin_judge,
        description="The reward model or judge (paper: RLHFlow/ArmoRM-Llama3-8B-v0.1).",
    )
    max_response_tokens: int = Field(
        384, ge=8, description="Responses are truncated to this many tokens before scoring."
    )
    screen_injections: bool = Field(
        True, description="A judge reward gives a response that addresses its grader (\"note to the judge: "
        "rate this 10\") the lowest score without asking the judge (judge/screen.py).",
    )


class LoraConfig(Section):
    """Optional LoRA adapters (peft), merged into the saved checkpoint."""

    enabled: bool = Field(False, description="Train LoRA adapters instead of every weight.")
    r: int = Field(16, ge=1, description="Adapter rank.")
    alpha: int = Field(32, ge=1, description="Adapter scaling (peft's lora_alpha).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the adapters' input (peft's lora_dropout).")
    target_modules: str | list[str] = Field(
        "all-linear", description="Modules that get adapters: peft's all-linear or a list of names."
    )


#: The authors' released SPPO recipe (uclaml/SPPO, which the eva authors' pipeline builds on):
#: with ``loss: sppo`` these are the defaults of the fields the config leaves unset. The
#: effective batch of 64 is already the default (batch_size 8 x gradient_accumulation_steps 8).
SPPO_DEFAULTS: dict[str, Any] = {
    "beta": 0.001, "learning_rate": 5e-7, "lr_scheduler": "linear", "warmup_ratio": 0.1, "optimizer": "rmsprop",
}

#: TrainConfig fields only the sppo loss reads (TrainConfig.key_dump leaves them out otherwise).
SPPO_ONLY_FIELDS = ("sppo_win_prob", "sppo_temperature")


class TrainConfig(Section):
    """Preference training through TRL (solver/train.py maps these onto TRL's arguments)."""

    loss: LossName = Field("dpo", description="Preference loss (solver/losses.py; paper: dpo, sigmoid; "
                              "sppo: SPPO's win-probability regression, solver/sppo.py).")
    beta: float = Field(
        0.05, gt=0, description="Strength of the preference loss' KL/margin term (paper: 0.05; with loss sppo "
        "the default is 0.001, the SPPO recipe's; SPPO's targets are (P - 1/2) / beta).",
    )
    simpo_gamma: float = Field(0.5, ge=0, description="SimPO target reward margin (gamma/beta ratio).")
    sppo_win_prob: Literal["bradley_terry", "pairwise"] = Field(
        "bradley_terry", description="SPPO: how each response's win probability against the prompt's other "
        "samples is estimated; bradley_terry = mean sigmoid((r - r') / sppo_temperature) over the other "
        "samples' rewards (solver/win_prob.py); pairwise = the reward's judge compares the chosen and the "
        "rejected response with each other sample, both orders (needs a judge reward kind; k - 1 comparisons "
        "each, so 2(k - 1) - 1 per pair, judged in both orders).",
    )
    sppo_temperature: float = Field(
        1.0, gt=0, description="SPPO bradley_terry: the reward difference that counts as one logit. 1 for a "
        "Bradley-Terry reward model (its rewards are logits); a judge's 1-10 grades may want 2 or more.",
    )
    learning_rate: float = Field(
        5e-7, gt=0, description="Peak learning rate (paper: 5e-7; the SPPO recipe's too)."
    )
    # -> TRL optim: adamw leaves TRL's default (AdamW, fused where torch has it)
    optimizer: Literal["adamw", "rmsprop"] = Field(
        "adamw", description="Optimizer (paper: adamw; with loss sppo the default is rmsprop, the SPPO recipe's).",
    )
    # -> TRL lr_scheduler_type
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = Field(
        "cosine", description="Learning-rate schedule after warmup (paper: cosine; with loss sppo the default "
        "is linear, the SPPO recipe's).",
    )
    # -> TRL warmup_steps: a float below 1 is a fraction of the steps there
    warmup_ratio: float = Field(
        0.1, ge=0, lt=1, description="Fraction of the steps spent warming up (paper: 0.1; the SPPO recipe's too)."
    )
    # -> TRL num_train_epochs
    epochs: float = Field(2.0, gt=0, description="Passes over the iteration's pairs (paper: 2).")
    # -> TRL per_device_train_batch_size
    batch_size: int = Field(8, ge=1, description="Pairs per device per step (paper: 1, on each of 8 GPUs).")
    gradient_accumulation_steps: int = Field(
        8, ge=1, description="Steps summed per update; batch_size x this x processes = 64 in the paper."
    )
    max_length: int = Field(1024, ge=32, description="Longest prompt + response in tokens; longer are cut.")
    # -> TRL precompute_ref_log_probs (DPO/IPO)
    precompute_ref_logprobs: bool = Field(
        True, description="DPO/IPO/SPPO: the reference model's log-probabilities once, before training."
    )
    packed_batches: bool = Field(
        True, description="DPO/IPO/SPPO: compute each pair's shared prompt once and pack pairs without padding "
        "(solver/packing.py); off = TRL's padded batches.",
    )
    # -> TRL bf16 (mixed-precision compute); the trainable weights stay fp32
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="Compute dtype; auto: bf16 on a GPU or a CPU with native bf16 (paper: bfloat16)."
    )
    # -> TrainingArguments activation_checkpointing (gradient_checkpointing before transformers 5.23)
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass: less memory, slower."
    )
    lora: LoraConfig = Field(default_factory=LoraConfig, description="Optional LoRA adapters.")
    min_pairs: int = Field(2, ge=1, description="Fewer pairs than this: skip training, keep the policy.")
    launcher: Literal["inprocess", "accelerate"] = Field(
        "inprocess", description="Train in this process, or in an accelerate launch (multi-GPU, DeepSpeed)."
    )
    accelerate_config: str = Field(
        "ddp", description="Shipped accelerate config (ddp | zero3 | fsdp) or a path to one (paper: zero3)."
    )
    num_processes: int = Field(1, ge=1, description="Processes (GPUs) of the accelerate launch (paper: 8).")

    @model_validator(mode="before")
    @classmethod
    def _sppo_recipe_defaults(cls, data: Any) -> Any:
        """With loss sppo, the fields left unset take the SPPO recipe's values (SPPO_DEFAULTS);
        set ones are kept, and every other loss keeps the defaults above. RMSprop comes only with
        the recipe's learning rate: it has no bias correction, so its first steps are ~10x
        AdamW's at the same rate, and a rate tuned for AdamW diverges under it (the quickstart's
        2e-5 took the SPPO loss from 6.6 to 2982 in four steps). A config that sets its own
        learning rate keeps AdamW unless it names the optimizer too."""
        if isinstance(data, dict) and data.get("loss") == "sppo":
            recipe = dict(SPPO_DEFAULTS)
            if "learning_rate" in data and "optimizer" not in data:
                recipe.pop("optimizer")
            data = {**recipe, **data}
        return data

    def key_dump(self) -> dict[str, Any]:
        """The fields as stage keys see them (the train stage, a launch job's hash): the fields
        added for SPPO are left out where they change nothing, ``sppo_*`` unless the loss is sppo
        and ``optimizer`` while adamw, so the keys of runs from before them stay as they were."""
        data = self.model_dump(mode="json")
        if self.loss != "sppo":
            for name in SPPO_ONLY_FIELDS:
                data.pop(name)
        if self.optimizer == "adamw":
            data.pop("optimizer")
        return data



class OnlineConfig(Section):
    """Online eva (solver.mode: online): the policy learns from its own rollouts with TRL's
    RLOOTrainer or GRPOTrainer, one phase per iteration, on a prompt buffer the creator evolves
    between phases (solver/online.py). Rollouts per prompt are solver.num_samples, decoded with
    solver.sampling; rewards come from solver.reward; dtype, LoRA and activation checkpointing
    from solver.train."""

    algorithm: Literal["rloo", "grpo"] = Field(
        "rloo", description="rloo: REINFORCE leave-one-out (TRL RLOOTrainer; the paper's online eva); "
        "grpo: group-normalised advantages with a clipped ratio (TRL GRPOTrainer).",
    )
    learning_rate: float = Field(1e-6, gt=0, description="Peak learning rate (TRL's RLOO/GRPO default 1e-6).")
    beta: float = Field(
        0.05, ge=0, description="KL coefficient against the phase's starting policy (TRL RLOO default 0.05; "
        "0 loads no reference model).",
    )
    epochs: float = Field(1.0, gt=0, description="Passes over the buffer per phase (every prompt is rolled out once "
                                                   "per pass).")
    prompts_per_step: int = Field(
        4, ge=1, description="Prompts per optimizer step (each with num_samples rollouts): TRL's "
        "per_device_train_batch_size is prompts_per_step x num_samples.",
    )
    gradient_accumulation_steps: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = Field(
        "linear", description="Learning-rate schedule after warmup (TRL's default linear).")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Fraction of a phase's steps spent warming up.")
    use_vllm: bool = Field(
        False, description="GPU: roll out with TRL's colocated vLLM engine (vllm_mode colocate) instead of "
        "transformers' generate; needs the gpu extra. Not run on this project's CPU machines.",
    )
    vllm_gpu_memory_utilization: float = Field(
        0.3, gt=0, le=1, description="Share of the GPU the colocated vLLM engine takes (with use_vllm).")


class SolverConfig(Section):
    """The solver: k responses per prompt, their rewards, pairs, and training."""

    num_samples: int = Field(4, ge=1, le=64, description="k responses per prompt (paper: 6).")
    sampling: SamplingConfig = Field(
        default_factory=SamplingConfig, description="The policy's decoding (paper: temperature 0.7, top-p 0.9)."
    )
    mix_original: float = Field(
        0.2, ge=0, le=1,
        description="Fraction of the original prompts' pairs kept in the training mix (the buffer; paper: 0.2).",
    )
    mix_evolved: float = Field(
        0.8, ge=0, le=1,
        description="Fraction of the evolved prompts' pairs kept in the training mix (paper: 0.8).",
    )
    reward: RewardConfig = Field(default_factory=RewardConfig, description="How responses are scored.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Preference training.")
    mode: Literal["offline", "online"] = Field(
        "offline", description="offline: best-vs-worst pairs and preference training (solver.train; the paper's "
        "DPO/SPPO eva); online: RLOO/GRPO on the policy's own rollouts (solver.online).",
    )
    online: OnlineConfig = Field(default_factory=OnlineConfig, description="Online eva (with mode: online).")

    @model_validator(mode="after")
    def _online_needs_two_rollouts(self) -> SolverConfig:
        if self.mode == "online" and self.num_samples < 2:
            raise ValueError("mode online needs num_samples >= 2: RLOO and GRPO compare each rollout with the "
                             "prompt's other rollouts")
        return self

    @model_validator(mode="after")
    def _pairwise_win_prob_needs_a_judge(self) -> SolverConfig:
        if self.train.loss == "sppo" and self.train.sppo_win_prob == "pairwise" and self.reward.kind == "classifier":
            raise ValueError("train.sppo_win_prob pairwise needs a judge reward (reward.kind judge_pointwise or "
                             "judge_pairwise_anchor), whose judge compares the samples; a classifier has none")
        return self


class EvalConfig(Section):
    """Evaluation of every arm's policies: win rates and MT-Bench-style grades."""

    enabled: bool = Field(True, description="Evaluate the policies; off skips evaluation.")
    judge: ModelSpec = Field(
        default_factory=builtin_judge, description="The evaluation judge (paper: a GPT-4-class API model)."
    )
    judge_mode: Literal["auto", "logprobs", "generate"] = Field(
        "auto", description="Verdicts from next-token probabilities or from generated text "
        "(auto: logprobs where the backend has exact ones; paper: generate)."
    )
    judge_variant: EvalJudgeVariantName = Field(
        "base", description="How verdicts are made (docs/judges.md). policy_tiebreak is judge-check only: "
        "in an evaluation the policy's own likelihood would favour its own answers."
    )
    winrate_prompts: str = Field(
        "builtin:eval", description="builtin:eval, Arena-Hard question.jsonl, or AlpacaEval JSON."
    )
    winrate_limit: int | None = Field(None, ge=1, description="Use N win-rate prompts, taken round-robin over categories.")
    alpaca_eval_data: str | None = Field(
        None, description="hf:tatsu-lab/alpaca_eval (downloaded once from the hub), or a directory with "
        "AlpacaEval's df_gamed.csv and alpaca_eval.json from that dataset (offline): with alpaca-eval installed and AlpacaEval's instructions as win-rate prompts, "
        "the LC win rate is alpaca_eval's own length_controlled_v1; otherwise the simplified LC (docs/benchmarks.md).",
    )
    mt_questions: str = Field("builtin:mt", description="builtin:mt or an MT-Bench question.jsonl")
    mt_references: str | None = Field(
        None, description="MT-Bench reference_answer/*.jsonl for an official question file."
    )
    mt_limit: int | None = Field(None, ge=1, description="Use N MT questions, taken round-robin over categories.")
    self_check: bool = Field(
        True, description="Also judge the starting policy against itself resampled: the noise floor."
    )
    vs_baseline: bool = Field(
        True, description="Also judge every creator arm against the no-creator arm (the 'win rate vs "
        "no-creator' column); off, arms are compared through their win rates against θ0 only "
        "(the paired Δ columns), which halves a study's pairwise judging.",
    )
    answer_sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(max_new_tokens=512, temperature=0.7, top_p=0.9),
        description="Decoding of the evaluated answers.",
    )
    mt_temperatures: Literal["fastchat", "fixed"] = Field(
        "fastchat", description="MT question answers' temperature: fastchat = FastChat's per-category table "
        "(0 greedy for math, coding, reasoning, extraction; 0.1 stem, humanities; 0.7 otherwise); fixed = "
        "answer_sampling.temperature. Win-rate prompts always use answer_sampling.",
    )
    seed: int = Field(0, description="Seed of the answers' sampling (fixed across arms).")
    max_judge_answer_tokens: int = Field(
        512, ge=16, description="Answers are truncated to this many tokens for the judge."
    )
    screen_injections: bool = Field(
        True, description="An answer that addresses its grader loses every comparison and gets the lowest "
        "grade without asking the judge (judge/screen.py).",
    )
    bootstrap_samples: int = Field(2000, ge=100, description="Bootstrap resamples behind each confidence interval.")
    parse_retries: int = Field(2, ge=0, description="Re-asks of the judge when its verdict cannot be parsed.")


class RunSection(Section):
    """The run: its name, seed, iterations and where it runs."""

    name: str = Field("eva", description="Run name: letters, digits, '-', '_', '.'; names runs/<name>.")
    seed: int = Field(0, description="Seed every stage's randomness derives from.")
    iterations: int = Field(1, ge=1, le=100, description="Creator/solver iterations (paper: 2).")
    output_dir: str | None = Field(None, description="Run directory; default runs/<name>.")
    executor: Literal["inprocess", "ray"] = Field(
        "inprocess", description="Generate in this process, or on Ray workers (one vLLM engine per GPU)."
    )
    ray: RayConfig = Field(default_factory=RayConfig, description="The Ray executor's cluster and workers.")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", v):
            raise ValueError("use letters, digits, '-', '_' and '.' only")
        return v


class ArmSpec(Section):
    """One arm of an ablation: a name and the config fields it changes."""

    name: str = Field(description="Arm name, unique in the ablation.")
    set: dict[str, Any] = Field(default_factory=dict, description="Dotted key -> value overrides.")
    description: str = Field("", description="What the arm tests, for the report.")


class AblationConfig(Section):
    """Arms compared in one study, sharing their common stages."""

    arms: list[ArmSpec] = Field(default_factory=list, description="The arms; none: the built-in ones (run/study.py).")
    seeds: int = Field(1, ge=1, le=20, description="Repeats of every arm with different seeds.")

    @model_validator(mode="after")
    def _unique_names(self) -> "AblationConfig":
        names = [a.name for a in self.arms]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"arm names must be unique; repeated: {', '.join(dupes)}")
        return self


class Config(Section):
    """One run's whole configuration (one YAML file)."""

    run: RunSection = Field(default_factory=RunSection, description="Name, seed, iterations, executor.")
    policy: ModelSpec = Field(
        default_factory=lambda: ModelSpec(model="smollm2-135m-instruct"),
        description="The policy being aligned (paper: google/gemma-2-9b-it).",
    )
    prompts: PromptsConfig = Field(default_factory=PromptsConfig, description="The seed prompt pool.")
    creator: CreatorConfig = Field(default_factory=CreatorConfig, description="Prompt evolution.")
    solver: SolverConfig = Field(default_factory=SolverConfig, description="Sampling, rewards, training.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Evaluation.")
    budget: BudgetConfig = Field(default_factory=BudgetConfig, description="Limits on paid API use.")
    ablation: AblationConfig = Field(default_factory=AblationConfig, description="Arms of a study.")

    @model_validator(mode="after")
    def _vllm_engines_fit_one_gpu(self) -> "Config":
        """In-process, every one-GPU vLLM engine (policy, creator, reward judge, evaluation
        judge; equal specs are one engine) lives on the same GPU at once, so their
        gpu_memory_utilization must sum to at most 1; vLLM would otherwise fail only when the
        second engine starts, after the first stage's work. (Under Ray, placement decides.)"""
        if self.run.executor != "inprocess":
            return self
        roles = (("policy", self.policy), ("creator.model", self.creator.model),
                 ("solver.reward.model", self.solver.reward.model), ("eval.judge", self.eval.judge))
        engines: dict[str, tuple[list[str], float]] = {}
        for name, spec in roles:
            if spec.backend != "vllm" or spec.tensor_parallel_size > 1:
                continue
            key = spec.model_dump_json()
            engines.setdefault(key, ([], spec.gpu_memory_utilization))[0].append(name)
        total = sum(share for _, share in engines.values())
        if len(engines) > 1 and total > 1.0 + 1e-9:
            parts = " + ".join(f"{share:g} ({'/'.join(names)})" for names, share in engines.values())
            raise ValueError(
                f"in-process vLLM engines share one GPU: gpu_memory_utilization {parts} = {total:g} > 1; "
                "lower them to sum to at most 1 (e.g. 0.45 each) or use run.executor: ray"
            )
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.run.output_dir or f"runs/{self.run.name}")

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def fingerprint(self, *sections: str) -> str:
        """A stable hash of the given sections (all when none), for stage keys."""
        data = self.to_dict()
        if sections:
            data = {s: _get_path(data, s) for s in sections}
        return stable_hash(data)


def _get_path(data: dict[str, Any], dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        node = node[part]
    return node
