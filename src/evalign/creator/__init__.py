"""The creator: informativeness of prompts, which to evolve, evolving them, and filtering.

Pure library code: rewards in, new prompts with lineage out; the loop stores them.
"""

from evalign.creator.filters import FILTER_REASONS, FilterDecision, filter_evolved
from evalign.creator.informativeness import METRICS, informativeness
from evalign.creator.operators import OPERATORS, Evolved, Parent, evolve, parse_numbered_list, parse_prompt
from evalign.creator.sampling import SAMPLERS, SampleResult, sample_prompts

__all__ = [
    "FILTER_REASONS",
    "METRICS",
    "OPERATORS",
    "SAMPLERS",
    "Evolved",
    "FilterDecision",
    "Parent",
    "SampleResult",
    "evolve",
    "filter_evolved",
    "informativeness",
    "parse_numbered_list",
    "parse_prompt",
    "sample_prompts",
]
