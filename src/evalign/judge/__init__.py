"""LLM judges and reward models: prompts, verdicts, variants, rewards.

``from evalign.judge import Judge, PairItem, ...``; the reward models are in
:mod:`evalign.judge.reward` (they need the config, the judge itself does not).
"""

from evalign.judge.judge import Judge, sequence_logprob
from evalign.judge.prompts import (
    ALT_PAIRWISE_LOGPROB_PREFIX,
    COT_MAX_TOKENS,
    DEFAULT_RUBRIC,
    GRADE_LOGPROB_PREFIX,
    GRADE_VERSION,
    PAIR_VERSION,
    PAIRWISE_LOGPROB_PREFIX,
    RUBRICS,
    SCORES,
    defang,
    rubric_for,
)
from evalign.judge.variants import TIEBREAK_BAND, VARIANTS, JudgeVariant, Phrasing, get_variant, variant_version
from evalign.judge.verdicts import VERDICTS, GradeItem, JudgeStats, PairItem, Verdict, combine_orders

__all__ = [
    "ALT_PAIRWISE_LOGPROB_PREFIX", "COT_MAX_TOKENS", "DEFAULT_RUBRIC", "GRADE_LOGPROB_PREFIX", "GRADE_VERSION",
    "PAIR_VERSION", "PAIRWISE_LOGPROB_PREFIX", "RUBRICS", "SCORES", "TIEBREAK_BAND", "VARIANTS", "VERDICTS",
    "GradeItem", "Judge", "JudgeStats", "JudgeVariant", "PairItem", "Phrasing", "Verdict", "combine_orders",
    "defang", "get_variant", "rubric_for", "sequence_logprob", "variant_version",
]
