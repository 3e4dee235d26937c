"""The real parser and filters on the labelled creator outputs (creator_outputs.jsonl):
hand-written raw replies of all four operators to short and UltraFeedback-length parents,
each with the prompts it should yield and whether each should survive the filter."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from evalign.config import FilterConfig
from evalign.creator import OPERATORS, filter_evolved, parse_output

CASES = [json.loads(line) for line in (Path(__file__).parent / "creator_outputs.jsonl").read_text().splitlines()]


def test_the_set_covers_every_operator_and_both_parent_lengths():
    assert len(CASES) >= 60 and len({c["id"] for c in CASES}) == len(CASES)
    cells = Counter((c["operator"], c["length"]) for c in CASES)
    assert set(cells) == {(op, length) for op in OPERATORS for length in ("short", "long")}
    assert min(cells.values()) >= 5
    for c in CASES:
        words = len(c["parent"].split())
        assert (c["length"] == "long") == (120 <= words <= 250) and (c["length"] == "long" or words < 40), c["id"]
        assert len(c["expected"]) == len(c["keep"]) == len(c["drop_reasons"]), c["id"]
    assert any(c["operator"] == "self_instruct" and c["cut_off"] for c in CASES)
    assert Counter(k for c in CASES for k in c["keep"])[False] >= 10  # drops are tested too


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_parsed_text_and_keep_decision_match_the_label(case):
    texts = parse_output(case["operator"], case["raw"], case["parent"], case["cut_off"])
    assert texts == case["expected"]
    decisions = filter_evolved(texts, [case["parent"]] * len(texts), [case["parent"], *case["pool"]], [], FilterConfig())
    assert [d.kept for d in decisions] == case["keep"]
    assert [d.reason for d in decisions] == case["drop_reasons"]
