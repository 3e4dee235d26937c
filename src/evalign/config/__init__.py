"""Typed run configuration: one YAML file per run, validated by pydantic.

``schema`` and ``common`` declare the sections (every field documented where it is
declared), ``choices`` the fields whose values are a registry's names, ``loading`` the
YAML, preset and ``--set`` handling. Everything is re-exported here.
"""

from __future__ import annotations

from evalign.config.choices import (
    backend_names,
    eval_judge_variant_names,
    loss_names,
    metric_names,
    operator_names,
    reward_kind_names,
    sampler_names,
)
from evalign.config.common import BudgetConfig, ModelSpec, RayConfig, SamplingConfig, Section
from evalign.config.loading import (
    apply_overrides,
    load_config,
    parse_override,
    parse_yaml,
    preset_names,
    preset_text,
    validate,
)
from evalign.config.schema import (
    AblationConfig,
    ArmSpec,
    Config,
    CreatorConfig,
    EvalConfig,
    FilterConfig,
    LoraConfig,
    OnlineConfig,
    PromptsConfig,
    RewardConfig,
    RunSection,
    SolverConfig,
    TrainConfig,
)
from evalign.hashing import stable_hash

# The allowed names as tuples, read from the registries when asked for (a module-level tuple
# would import the creator while the config, below it, is still loading).
_NAME_TUPLES = {
    "METRICS": metric_names,
    "SAMPLERS": sampler_names,
    "OPERATORS": operator_names,
    "BACKENDS": backend_names,
}


def __getattr__(name: str):
    if name in _NAME_TUPLES:
        return _NAME_TUPLES[name]()
    raise AttributeError(f"module 'evalign.config' has no attribute {name!r}")


__all__ = [
    "AblationConfig",
    "ArmSpec",
    "BudgetConfig",
    "Config",
    "CreatorConfig",
    "EvalConfig",
    "FilterConfig",
    "LoraConfig",
    "OnlineConfig",
    "ModelSpec",
    "PromptsConfig",
    "RayConfig",
    "RewardConfig",
    "RunSection",
    "SamplingConfig",
    "Section",
    "SolverConfig",
    "TrainConfig",
    "apply_overrides",
    "backend_names",
    "eval_judge_variant_names",
    "load_config",
    "loss_names",
    "metric_names",
    "operator_names",
    "parse_override",
    "parse_yaml",
    "preset_names",
    "preset_text",
    "reward_kind_names",
    "sampler_names",
    "stable_hash",
    "validate",
]
