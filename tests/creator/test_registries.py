"""The creator: metrics, samplers, operators (with a scripted creator LLM), parser, filters."""

from __future__ import annotations



from evalign import config
from evalign.backends.base import GenParams
from evalign.creator import (
    METRICS,
    OPERATORS,
    SAMPLERS,
)

PARAMS = GenParams(max_new_tokens=200, temperature=0.7, top_p=0.95)


def test_names_match_config():
    assert tuple(METRICS) == config.METRICS
    assert tuple(SAMPLERS) == config.SAMPLERS
    assert tuple(OPERATORS) == config.OPERATORS


