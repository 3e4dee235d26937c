"""The creator: informativeness of prompts, which to evolve, evolving them, and filtering.

Pure library code: rewards in, new prompts with lineage out; the loop stores them.
"""

from evalign.creator.filters import FILTER_REASONS, FILTER_VERSION, FilterDecision, filter_evolved
from evalign.creator.informativeness import METRICS, informativeness
from evalign.creator.operators import OPERATORS, PARSER_VERSION, Evolved, Parent, evolve, parse_numbered_list, parse_output, parse_prompt
from evalign.creator.sampling import SAMPLERS, SampleResult, sample_prompts

__all__ = [
    "FILTER_REASONS",
    "FILTER_VERSION",
    "METRICS",
    "OPERATORS",
    "PARSER_VERSION",
    "SAMPLERS",
    "Evolved",
    "FilterDecision",
    "Parent",
    "SampleResult",
    "evolve",
    "filter_evolved",
    "informativeness",
    "parse_numbered_list",
    "parse_output",
    "parse_prompt",
    "sample_prompts",
]
