"""Typed run configuration: one YAML file per run, validated by pydantic.

Every section forbids unknown keys, so a typo is an error that names the key. ``--set a.b=v``
overrides any field (the value is parsed as YAML, so ``--set solver.num_samples=6`` is an int)
and ``--preset NAME`` loads a config shipped in ``evalign/presets``.
"""

from __future__ import annotations

import difflib
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from evalign.errors import ConfigError
from evalign.hashing import stable_hash

METRICS = ("gap", "max_mean", "variance", "mean", "inverse_mean", "best_second", "uniform")
SAMPLERS = ("weighted", "greedy", "stratified", "uniform")
OPERATORS = ("evol_instruct", "evol_complexity", "evol_quality", "self_instruct")
BACKENDS = ("auto", "transformers", "llamacpp", "openai", "vllm", "scripted")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSpec(Section):
    """Which model, on which backend. ``model`` is a built-in name, a local directory or
    file, a Hugging Face hub id, or (backend ``openai``) the API's model name."""

    model: str
    backend: Literal["auto", "transformers", "llamacpp", "openai", "vllm", "scripted"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    chat_template: str | None = Field(
        None, description="Jinja chat template, used only for a model that ships none."
    )
    trust_remote_code: bool = False
    revision: str | None = None
    batch_size: int = Field(16, ge=1, description="Prompts per forward pass (transformers).")
    # llama.cpp
    n_ctx: int = Field(4096, ge=256)
    n_threads: int | None = Field(None, ge=1)
    # OpenAI-compatible HTTP
    api_base: str | None = None
    api_key_env: str | None = Field(
        None, description="Name of the environment variable holding the API key (never the key)."
    )
    max_concurrency: int = Field(8, ge=1)
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(6, ge=0)
    # vLLM
    tensor_parallel_size: int = Field(1, ge=1)
    data_parallel_size: int = Field(1, ge=1)
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1)
    enable_prefix_caching: bool = True
    max_model_len: int | None = Field(None, ge=256)

    @field_validator("api_key_env")
    @classmethod
    def _looks_like_a_variable_name(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v):
            raise ValueError(
                "must be the NAME of an environment variable (e.g. OPENAI_API_KEY), not a key"
            )
        return v


class SamplingConfig(Section):
    max_new_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.7, ge=0.0, le=5.0)
    top_p: float = Field(0.9, gt=0.0, le=1.0)


class PromptsConfig(Section):
    """Where the seed prompt pool comes from."""

    source: str = Field(
        "builtin:seed",
        description="builtin:seed | FILE.jsonl | FILE.csv | hf:DATASET[:SPLIT] (e.g. UltraFeedback)",
    )
    field: str = Field("prompt", description="Column/key holding the prompt text.")
    limit: int | None = Field(None, ge=1, description="Keep the first N prompts after shuffling.")
    shuffle: bool = True
    max_chars: int = Field(4000, ge=16)
    oversized: Literal["truncate", "skip", "error"] = "skip"
    schedule: Literal["evolve", "split"] = Field(
        "evolve",
        description="evolve: iteration t+1 starts from iteration t's training prompts; "
        "split: the source is cut into one fresh chunk per iteration (the authors' UltraFeedback runs).",
    )


class FilterConfig(Section):
    """Elimination filter applied to every evolved prompt."""

    enabled: bool = True
    min_chars: int = Field(16, ge=1)
    max_chars: int = Field(2000, ge=16)
    dedup_threshold: float = Field(
        0.8, gt=0, le=1, description="Jaccard similarity (word 3-gram MinHash) to drop a near-duplicate."
    )
    decontamination_threshold: float = Field(
        0.6, gt=0, le=1, description="Jaccard similarity to an evaluation prompt that drops the prompt."
    )
    decontaminate: bool = True


class CreatorConfig(Section):
    enabled: bool = True
    first_iteration: int = Field(
        1, ge=1,
        description="Iterations before this one train on the original prompts only "
        "(the paper's main runs: one DPO iteration, then eva).",
    )
    model: ModelSpec = Field(
        default_factory=lambda: ModelSpec(model="qwen2.5-coder-1.5b-instruct", backend="llamacpp")
    )
    metric: Literal["gap", "max_mean", "variance", "mean", "inverse_mean", "best_second", "uniform"] = "gap"
    sampler: Literal["weighted", "greedy", "stratified", "uniform"] = "weighted"
    sample_fraction: float = Field(0.25, gt=0, le=1)
    strata: int = Field(4, ge=1, description="Quantile bins of the stratified sampler.")
    operator: Literal["evol_instruct", "evol_complexity", "evol_quality", "self_instruct"] = "evol_instruct"
    num_evolutions: int = Field(4, ge=1, le=16)
    sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(max_new_tokens=256, temperature=0.7, top_p=0.95)
    )
    filter: FilterConfig = Field(default_factory=FilterConfig)


class RewardConfig(Section):
    kind: Literal["judge_pointwise", "judge_pairwise_anchor", "classifier"] = "judge_pointwise"
    model: ModelSpec = Field(
        default_factory=lambda: ModelSpec(model="qwen2.5-coder-1.5b-instruct", backend="llamacpp")
    )
    max_response_tokens: int = Field(
        384, ge=8, description="Responses are truncated to this many tokens before scoring."
    )


class LoraConfig(Section):
    enabled: bool = False
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: str | list[str] = "all-linear"


class TrainConfig(Section):
    loss: Literal["dpo", "ipo", "simpo", "orpo"] = "dpo"
    beta: float = Field(0.05, gt=0)
    simpo_gamma: float = Field(0.5, ge=0, description="SimPO target reward margin (gamma/beta ratio).")
    learning_rate: float = Field(5e-7, gt=0)
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    epochs: float = Field(2.0, gt=0)
    batch_size: int = Field(8, ge=1, description="Pairs per device per step.")
    gradient_accumulation_steps: int = Field(8, ge=1)
    max_length: int = Field(1024, ge=32)
    precompute_ref_logprobs: bool = True
    packed_batches: bool = Field(
        True, description="DPO/IPO: compute each pair's shared prompt once and pack pairs without padding "
        "(solver/packing.py); off = TRL's padded batches.",
    )
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    gradient_checkpointing: bool = False
    lora: LoraConfig = Field(default_factory=LoraConfig)
    min_pairs: int = Field(2, ge=1, description="Fewer pairs than this: skip training, keep the policy.")
    launcher: Literal["inprocess", "accelerate"] = "inprocess"
    accelerate_config: str = Field(
        "ddp", description="Shipped accelerate config (ddp | zero3 | fsdp) or a path to one."
    )
    num_processes: int = Field(1, ge=1)


class SolverConfig(Section):
    num_samples: int = Field(4, ge=1, le=64, description="k responses per prompt.")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    mix_original: float = Field(
        0.2, ge=0, le=1,
        description="Fraction of the original prompts' pairs kept in the training mix (the buffer).",
    )
    mix_evolved: float = Field(
        0.8, ge=0, le=1, description="Fraction of the evolved prompts' pairs kept in the training mix."
    )
    reward: RewardConfig = Field(default_factory=RewardConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)


class EvalConfig(Section):
    enabled: bool = True
    judge: ModelSpec = Field(
        default_factory=lambda: ModelSpec(model="qwen2.5-coder-1.5b-instruct", backend="llamacpp")
    )
    judge_mode: Literal["auto", "logprobs", "generate"] = Field(
        "auto", description="Verdicts from next-token probabilities or from generated text."
    )
    judge_variant: Literal["base", "calibrated", "cot", "rubric", "ensemble"] = Field(
        "base", description="How verdicts are made (docs/judges.md). policy_tiebreak is judge-check only: "
        "in an evaluation the policy's own likelihood would favour its own answers."
    )
    winrate_prompts: str = "builtin:eval"
    winrate_limit: int | None = Field(None, ge=1)
    mt_questions: str = Field("builtin:mt", description="builtin:mt or an MT-Bench question.jsonl")
    mt_references: str | None = Field(
        None, description="MT-Bench reference_answer/*.jsonl for an official question file."
    )
    mt_limit: int | None = Field(None, ge=1)
    self_check: bool = Field(
        True, description="Also judge the starting policy against itself resampled: the noise floor."
    )
    answer_sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(max_new_tokens=512, temperature=0.7, top_p=0.9)
    )
    seed: int = Field(0, description="Seed of the answers' sampling (fixed across arms).")
    max_judge_answer_tokens: int = Field(
        512, ge=16, description="Answers are truncated to this many tokens for the judge."
    )
    bootstrap_samples: int = Field(2000, ge=100)
    parse_retries: int = Field(2, ge=0)


class BudgetConfig(Section):
    """Per-run limits for paid API backends; a run stops cleanly before exceeding them."""

    max_calls: int | None = Field(None, ge=0)
    max_tokens: int | None = Field(None, ge=0)
    max_cost_usd: float | None = Field(None, ge=0)
    price_per_million_input: float | None = Field(None, ge=0)
    price_per_million_output: float | None = Field(None, ge=0)


class RayConfig(Section):
    address: str | None = Field(None, description="Ray cluster address; None starts a local one.")
    num_workers: int = Field(2, ge=1)


class RunSection(Section):
    name: str = "eva"
    seed: int = 0
    iterations: int = Field(1, ge=1, le=100)
    output_dir: str | None = Field(None, description="Run directory; default runs/<name>.")
    executor: Literal["inprocess", "ray"] = "inprocess"
    ray: RayConfig = Field(default_factory=RayConfig)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", v):
            raise ValueError("use letters, digits, '-', '_' and '.' only")
        return v


class ArmSpec(Section):
    """One arm of an ablation: a name and the config fields it changes."""

    name: str
    set: dict[str, Any] = Field(default_factory=dict, description="Dotted key -> value overrides.")
    description: str = ""


class AblationConfig(Section):
    arms: list[ArmSpec] = Field(default_factory=list)
    seeds: int = Field(1, ge=1, le=20)

    @model_validator(mode="after")
    def _unique_names(self) -> "AblationConfig":
        names = [a.name for a in self.arms]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"arm names must be unique; repeated: {', '.join(dupes)}")
        return self


class Config(Section):
    run: RunSection = Field(default_factory=RunSection)
    policy: ModelSpec = Field(default_factory=lambda: ModelSpec(model="smollm2-135m-instruct"))
    prompts: PromptsConfig = Field(default_factory=PromptsConfig)
    creator: CreatorConfig = Field(default_factory=CreatorConfig)
    solver: SolverConfig = Field(default_factory=SolverConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    ablation: AblationConfig = Field(default_factory=AblationConfig)

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


# ---------------------------------------------------------------------------- loading


def preset_names() -> list[str]:
    root = resources.files("evalign") / "presets"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def preset_text(name: str) -> str:
    path = resources.files("evalign") / "presets" / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"unknown preset '{name}'; available: {', '.join(preset_names())}"
        )
    return path.read_text(encoding="utf-8")


def parse_yaml(text: str, origin: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{origin}:{where}: malformed YAML ({problem}); fix the syntax there") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def parse_override(item: str) -> tuple[str, Any]:
    """``a.b=value`` -> ("a.b", parsed value). Values are YAML, so 4 is int, true is bool."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set solver.num_samples=6")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", key):
        raise ConfigError(f"--set {item!r}: '{key}' is not a dotted key like solver.train.beta")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any] | list[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with dotted-key overrides applied (validated later)."""
    out = json.loads(json.dumps(data, default=str))
    items = overrides.items() if isinstance(overrides, dict) else (parse_override(s) for s in overrides)
    for key, value in items:
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {key}: '{part}' is a value, not a section")
            node = nxt
        node[parts[-1]] = value
    return out


def validate(data: dict[str, Any], origin: str = "config") -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, origin)) from None


def load_config(
    path: str | Path | None = None,
    *,
    preset: str | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
) -> Config:
    """Load a config from a file and/or a preset (file keys override the preset's), then
    apply ``--set`` overrides. With neither, the defaults."""
    data: dict[str, Any] = {}
    origin = "defaults"
    if preset:
        data = parse_yaml(preset_text(preset), f"preset {preset}")
        origin = f"preset {preset}"
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist; pass a YAML file or use --preset NAME")
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"{p}: not valid UTF-8 text; save the config as UTF-8") from None
        data = _deep_merge(data, parse_yaml(text, str(p)))
        origin = str(p)
    if overrides:
        data = apply_overrides(data, overrides)
    return validate(data, origin)


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _get_path(data: dict[str, Any], dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        node = node[part]
    return node


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """Field names of the section at ``loc`` (for 'did you mean' hints)."""
    model: Any = Config
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        inner = getattr(ann, "__args__", None)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        elif inner:
            cands = [a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)]
            if not cands:
                return []
            model = cands[0]
        else:
            return []
    return sorted(getattr(model, "model_fields", {}))


def _format_validation_error(exc: ValidationError, origin: str) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = tuple(err.get("loc", ()))
        key = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(loc)
            hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            msg = f"unknown key '{key}'"
            if hint:
                msg += f" (did you mean '{'.'.join(str(p) for p in loc[:-1] + (hint[0],))}'?)"
            elif allowed:
                msg += f"; allowed here: {', '.join(allowed)}"
        else:
            got = err.get("input")
            shown = repr(got) if not isinstance(got, dict) else "a mapping"
            if len(shown) > 60:
                shown = shown[:57] + "..."
            msg = f"{key}: {err['msg']} (got {shown})"
        parts.append(msg)
    more = len(exc.errors()) - len(parts)
    tail = f"; and {more} more" if more > 0 else ""
    return f"{origin}: " + "; ".join(parts) + tail
