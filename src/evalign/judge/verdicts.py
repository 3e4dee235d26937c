"""What the judge answers: items, verdicts, their parsing, and how two orders combine.

A verdict is read from next-token probabilities when the backend gives exact ones
(P("A") vs P("B"), expected value over "1".."10"), or parsed from generated text
(``[[A>>B]]`` ... ``[[B>>A]]``, ``[[7]]`` read as FastChat reads it) for API judges. A generated verdict that cannot
be parsed is recorded as a parse failure and left out of every metric — never silently scored.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PairItem:
    question: str
    answer_a: str
    answer_b: str
    reference: str | None = None
    #: Question category (writing, math, coding ...); only the rubric-based variants read it.
    category: str | None = None


def pair_items(questions: Sequence[str], model_answers: Sequence[str], baseline_answers: Sequence[str],
               references: Sequence[str | None] | None = None) -> list[PairItem]:
    """Both orders per prompt: model first, then baseline first (how the win rate, its exports
    and the study's judging ask the judge)."""
    refs = references or [None] * len(questions)
    items = []
    for q, m, b, r in zip(questions, model_answers, baseline_answers, refs):
        items += [PairItem(q, m, b, r), PairItem(q, b, m, r)]
    return items


@dataclass(frozen=True)
class GradeItem:
    question: str
    answer: str
    reference: str | None = None
    #: Earlier turns, [(user, assistant), ...], shown as context for a later turn.
    context: tuple[tuple[str, str], ...] = ()
    #: Question category; only the rubric-based variants read it.
    category: str | None = None


@dataclass
class Verdict:
    """One judgment. ``p_a``: probability (or mapped verdict) that answer A is better;
    ``score``: the 1–10 grade. None when the verdict could not be parsed."""

    p_a: float | None = None
    score: float | None = None
    label: str | None = None
    parse_failed: bool = False
    cached: bool = False
    raw: str = ""


@dataclass
class JudgeStats:
    calls: int = 0
    cache_hits: int = 0
    parse_failures: int = 0
    seconds: float = 0.0
    per_kind: dict[str, int] = field(default_factory=dict)
    #: Sequence scorings by the policy for ``policy_tiebreak`` (two per decided pair).
    tiebreak_calls: int = 0


VERDICTS = {"A>>B": 1.0, "A>B": 1.0, "A=B": 0.5, "B>A": 0.0, "B>>A": 0.0}
_VERDICT_RE = re.compile(r"\[\[\s*(A\s*>>\s*B|A\s*>\s*B|A\s*=\s*B|B\s*>\s*A|B\s*>>\s*A)\s*\]\]")
# FastChat's ``common.one_score_pattern`` and ``one_score_pattern_backup`` (fschat 0.2.36).
_RATING_RE = re.compile(r"\[\[(\d+\.?\d*)\]\]")
_RATING_BACKUP_RE = re.compile(r"\[(\d+\.?\d*)\]")
#: Names how generated grades are read; part of a generate-mode judge's grade version, so
#: grades stored under another parser are not reused.
GRADE_PARSER_VERSION = "fastchat-0.2.36-one-score"


def parse_pair(text: str) -> Verdict | None:
    """The last ``[[A>B]]``-style label in a generated judgment, or None."""
    found = _VERDICT_RE.findall(text)
    if not found:
        return None
    label = re.sub(r"\s+", "", found[-1])
    return Verdict(p_a=VERDICTS[label], label=label)


def parse_grade(text: str) -> Verdict | None:
    """The rating of a generated judgment as FastChat's ``run_judge_single`` reads it: the
    first ``[[9.5]]``, else the first ``[9.5]``; half points are kept and the number is not
    range-checked (FastChat keeps it too). None when neither pattern matches (FastChat's -1).
    """
    match = _RATING_RE.search(text) or _RATING_BACKUP_RE.search(text)
    if match is None:
        return None
    return Verdict(score=float(match.group(1)), label=match.group(1))


def cached_verdict(row) -> Verdict:
    """A verdict from its judgments-table row."""
    return Verdict(row["prob_a"], row["score"], row["verdict"], bool(row["parse_failed"]), True, row["raw"] or "")


def softmax2(a: float, b: float) -> float:
    """P(first) from two log-probabilities."""
    m = max(a, b)
    ea, eb = math.exp(a - m), math.exp(b - m)
    return ea / (ea + eb)


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


COMBINE_METHODS = ("mean", "logodds")


def combine_orders(p_first: float | None, p_second: float | None, method: str = "mean") -> float | None:
    """P(x is better) from both orders of a pair (x, y).

    ``p_first`` is the judge's P(A better) with x as A; ``p_second`` its P(A better) with y as
    A (so 1 − p_second speaks for x). ``mean`` averages the two probabilities (the base rule);
    ``logodds`` returns sigmoid((logit p_first − logit p_second) / 2): if the judge's log-odds
    are the pair's true log-odds plus a first-position bias b, the difference cancels b
    exactly. Both rules agree on which side of 0.5 the result falls (logit is monotone), so
    they differ in strength, not in direction. One order missing (an unparsed verdict): the
    other alone; both missing: None.
    """
    ps = [p for p in (p_first, None if p_second is None else 1.0 - p_second) if p is not None]
    if not ps:
        return None
    if method == "logodds" and p_first is not None and p_second is not None:
        return _sigmoid((_logit(p_first) - _logit(p_second)) / 2)
    if method not in COMBINE_METHODS:
        raise ValueError(f"unknown combination method {method!r}")
    return sum(ps) / len(ps)
