"""Config field types whose allowed values are the names in a registry (evalign.registry).

The module that implements a metric, sampler, operator, loss, reward kind, judge variant or
backend registers it; these types look the names up at validation time, so the config never
lists them. A refused value gives pydantic's ``literal_error`` with the same one-line text a
``Literal[...]`` gave ("Input should be 'a', 'b' or 'c'"), so messages are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticKnownError, core_schema

from evalign.registry import (
    BACKENDS,
    JUDGE_VARIANTS,
    LOSSES,
    METRICS,
    OPERATORS,
    REWARD_KINDS,
    SAMPLERS,
)

#: Accepted by every ``backend`` field besides the registered backends: pick from the model.
AUTO_BACKEND = "auto"

def metric_names() -> tuple[str, ...]:
    return METRICS.names()


def sampler_names() -> tuple[str, ...]:
    return SAMPLERS.names()


def operator_names() -> tuple[str, ...]:
    return OPERATORS.names()


def loss_names() -> tuple[str, ...]:
    return LOSSES.names()


def reward_kind_names() -> tuple[str, ...]:
    return REWARD_KINDS.names()


def eval_judge_variant_names() -> tuple[str, ...]:
    """Variants an evaluation may use: each variant says so itself (``in_evaluation``; the
    policy_tiebreak variant is judge-check only, since the policy would favour its own answers)."""
    return tuple(n for n in JUDGE_VARIANTS.names() if JUDGE_VARIANTS.get(n).in_evaluation)


def backend_names() -> tuple[str, ...]:
    """``auto`` first, then the registered backends."""
    return (AUTO_BACKEND,) + tuple(n for n in BACKENDS.names() if n != AUTO_BACKEND)


def _expected(names: tuple[str, ...]) -> str:
    quoted = [repr(n) for n in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


class OneOf:
    """Annotated metadata: accept exactly the strings ``names()`` returns, asked at validation
    time; the JSON schema lists them as an enum, as a ``Literal`` did."""

    def __init__(self, names: Callable[[], tuple[str, ...]]) -> None:
        self.names = names

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_before_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        out = handler(schema)
        out["enum"] = list(self.names())
        return out

    def check(self, value: Any) -> Any:
        allowed = self.names()
        if isinstance(value, str) and value in allowed:
            return value
        raise PydanticKnownError("literal_error", {"expected": _expected(allowed)})


MetricName = Annotated[str, OneOf(metric_names)]
SamplerName = Annotated[str, OneOf(sampler_names)]
OperatorName = Annotated[str, OneOf(operator_names)]
LossName = Annotated[str, OneOf(loss_names)]
RewardKindName = Annotated[str, OneOf(reward_kind_names)]
EvalJudgeVariantName = Annotated[str, OneOf(eval_judge_variant_names)]
BackendName = Annotated[str, OneOf(backend_names)]

#: Field path -> the names it accepts (the registry-sync test walks these).
CHOICE_FIELDS: dict[str, Callable[[], tuple[str, ...]]] = {
    "creator.metric": metric_names,
    "creator.sampler": sampler_names,
    "creator.operator": operator_names,
    "solver.train.loss": loss_names,
    "solver.reward.kind": reward_kind_names,
    "eval.judge_variant": eval_judge_variant_names,
    "policy.backend": backend_names,
    "creator.model.backend": backend_names,
    "solver.reward.model.backend": backend_names,
    "eval.judge.backend": backend_names,
}
