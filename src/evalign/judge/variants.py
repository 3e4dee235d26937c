"""Judge variants: how a verdict is made, one object per variant (measured in docs/judges.md).

A variant says which phrasing(s) the judge is asked per order (:class:`Phrasing`), how the
two orders of a pair combine, what it costs and where it may be used; each has its own
template version. Verdicts are cached per phrasing asked: variants that ask the base prompt
and only combine the two orders differently (calibrated, policy_tiebreak) share the base
verdicts, and ensemble reuses those of its component phrasings.

* ``base``            — the base prompt, one verdict per order (the default);
* ``calibrated``      — base verdicts, but the two orders are combined in log-odds space,
  which subtracts the judge's first-position bias (:func:`~evalign.judge.verdicts.combine_orders`);
* ``cot``             — a short greedy rationale (at most 80 tokens) first, then the verdict
  from next-token probabilities after it;
* ``rubric``          — a per-category rubric (what to check first) before the verdict;
* ``ensemble``        — the mean verdict of three phrasings: base, rubric and a "which answer
  has fewer mistakes" question;
* ``policy_tiebreak`` — base, but when the two orders together are uncertain (|p − 0.5| <
  band) the policy model's length-normalised log-likelihood ratio decides. Judge-check only:
  in an evaluation the policy's own likelihood would favour its own answers.

Adding a variant is one ``JUDGE_VARIANTS.register`` here; its version text must be new, and
the existing texts must never change (they are part of every cached verdict's key).
"""

from __future__ import annotations

from dataclasses import dataclass

from evalign.errors import ConfigError
from evalign.hashing import sha
from evalign.judge import prompts as p
from evalign.registry import JUDGE_VARIANTS

#: Default half-width of the uncertainty band in which ``policy_tiebreak`` asks the policy.
TIEBREAK_BAND = 0.1


def _version(base_version: str, name: str, text: str, extra: str = "") -> str:
    return sha(f"{base_version}|{name}|{text}|{extra}", 12)


# What each non-base variant's template version hashes besides the base version (frozen).
_COT_TEXT = (f"{p.COT_MAX_TOKENS}|{p.COT_PAIRWISE_INSTRUCTION}|{p.COT_GRADE_INSTRUCTION}|{p.COT_PAIR_STOP}|"
             f"{p.COT_GRADE_STOP}")
_ENSEMBLE_TEXT = ("base+rubric+alt|" + p.RUBRIC_VERSION_TEXT + p.ALT_PAIRWISE_LOGPROB_INSTRUCTION
                  + p.ALT_PAIRWISE_LOGPROB_PREFIX + p.ALT_PAIRWISE_GENERATE_INSTRUCTION)


@dataclass(frozen=True)
class Phrasing:
    """One prompt asked of the judge for one order, and the versions its verdicts are
    cached under (shared by every variant that asks it)."""

    name: str
    pair_version: str
    grade_version: str
    pair_logprob: str = p.PAIRWISE_LOGPROB_INSTRUCTION
    pair_generate: str = p.PAIRWISE_GENERATE_INSTRUCTION
    #: The assistant's reply up to the A/B choice (logprobs mode).
    pair_prefix: str = p.PAIRWISE_LOGPROB_PREFIX
    grade_logprob: str = p.GRADE_LOGPROB_INSTRUCTION
    grade_generate: str = p.GRADE_GENERATE_INSTRUCTION
    #: The category's rubric goes before the instruction (so the category is part of the key).
    rubric: bool = False
    #: > 0: a greedy rationale of at most this many tokens comes before the verdict, cut at
    #: the stop strings; the verdict then costs two calls.
    rationale_tokens: int = 0
    pair_stop: tuple[str, ...] = ()
    grade_stop: tuple[str, ...] = ()

    def pair_instruction(self, logprobs: bool, category: str | None) -> str:
        text = self.pair_logprob if logprobs else self.pair_generate
        return p.rubric_text(category) + "\n\n" + text if self.rubric else text

    def grade_instruction(self, logprobs: bool, category: str | None) -> str:
        text = self.grade_logprob if logprobs else self.grade_generate
        return p.rubric_text(category) + "\n\n" + text if self.rubric else text


BASE = Phrasing("base", p.PAIR_VERSION, p.GRADE_VERSION)
RUBRIC = Phrasing("rubric", _version(p.PAIR_VERSION, "rubric", p.RUBRIC_VERSION_TEXT),
                  _version(p.GRADE_VERSION, "rubric", p.RUBRIC_VERSION_TEXT), rubric=True)
COT = Phrasing("cot", _version(p.PAIR_VERSION, "cot", _COT_TEXT), _version(p.GRADE_VERSION, "cot", _COT_TEXT),
               pair_logprob=p.COT_PAIRWISE_INSTRUCTION, pair_generate=p.COT_PAIRWISE_INSTRUCTION,
               grade_logprob=p.COT_GRADE_INSTRUCTION, grade_generate=p.COT_GRADE_INSTRUCTION,
               rationale_tokens=p.COT_MAX_TOKENS, pair_stop=p.COT_PAIR_STOP, grade_stop=p.COT_GRADE_STOP)
# Ensemble's third phrasing, cached under a version of its own (never graded: grades as base).
ALT = Phrasing("alt", _version(p.PAIR_VERSION, "ensemble", _ENSEMBLE_TEXT, "alt"), p.GRADE_VERSION,
               pair_logprob=p.ALT_PAIRWISE_LOGPROB_INSTRUCTION, pair_generate=p.ALT_PAIRWISE_GENERATE_INSTRUCTION,
               pair_prefix=p.ALT_PAIRWISE_LOGPROB_PREFIX)
PHRASINGS = {ph.name: ph for ph in (BASE, RUBRIC, ALT, COT)}


@dataclass(frozen=True)
class JudgeVariant:
    """How one variant makes a verdict.

    ``asks``: the phrasings asked per order (several: their mean verdict, each cached under
    its own key); ``grades``: those a 1–10 grade averages (default: ``asks``); ``combine``:
    how the two orders meet (``mean`` | ``logodds``); ``tiebreak``: uncertain pairs go to the
    policy; ``text``: what its template version hashes besides the base version.
    """

    name: str
    text: str
    asks: tuple[Phrasing, ...] = (BASE,)
    grades: tuple[Phrasing, ...] = ()
    combine: str = "mean"
    tiebreak: bool = False
    #: Reads its verdict from next-token log-probabilities only (no generate mode).
    needs_logprobs: bool = False
    #: May judge an evaluation (False: judge-check only).
    in_evaluation: bool = True
    #: Its version is the base template version itself, so existing caches and shipped
    #: judge-check results stay valid.
    keeps_base_version: bool = False

    @property
    def grade_phrasings(self) -> tuple[Phrasing, ...]:
        return self.grades or self.asks

    @property
    def needs_policy(self) -> bool:
        return self.tiebreak

    @property
    def judge_calls(self) -> int:
        """Judge calls per order of a pair in logprobs mode (generate mode may retry)."""
        return sum(2 if ph.rationale_tokens else 1 for ph in self.asks)

    @property
    def reads_category(self) -> bool:
        return any(ph.rubric for ph in self.asks + self.grade_phrasings)

    def version(self, base_version: str, extra: str = "") -> str:
        """Template version over ``base_version`` (``extra``: e.g. the tie-breaking policy)."""
        if self.keeps_base_version:
            return base_version
        return _version(base_version, self.name, self.text, extra)

    @property
    def pair_cache_version(self) -> str:
        """The version pairwise verdicts are stored under: the phrasing's when one is asked."""
        return self.asks[0].pair_version if len(self.asks) == 1 else self.version(p.PAIR_VERSION)

    @property
    def grade_cache_version(self) -> str:
        gp = self.grade_phrasings
        return gp[0].grade_version if len(gp) == 1 else self.version(p.GRADE_VERSION)


for _v in (
    JudgeVariant("base", "", keeps_base_version=True),
    JudgeVariant("calibrated", "combine=logodds", combine="logodds"),
    JudgeVariant("cot", _COT_TEXT, asks=(COT,), needs_logprobs=True),
    JudgeVariant("rubric", p.RUBRIC_VERSION_TEXT, asks=(RUBRIC,)),
    JudgeVariant("ensemble", _ENSEMBLE_TEXT, asks=(BASE, RUBRIC, ALT), grades=(BASE, RUBRIC)),
    JudgeVariant("policy_tiebreak", "tiebreak=length-normalised policy log-likelihood ratio", tiebreak=True,
                 in_evaluation=False),
):
    JUDGE_VARIANTS.register(_v.name, _v)

VARIANTS = JUDGE_VARIANTS.names()


def get_variant(name: str) -> JudgeVariant:
    """The registered variant ``name``; a ConfigError listing the choices otherwise."""
    if name not in JUDGE_VARIANTS:
        raise ConfigError(f"unknown judge variant '{name}'; choose from {', '.join(JUDGE_VARIANTS)}")
    return JUDGE_VARIANTS.get(name)


def check_eval_variant(name: str) -> str:
    """``name`` if it may judge an evaluation, else a ValueError (a pydantic validator)."""
    usable = [n for n, v in JUDGE_VARIANTS.items() if v.in_evaluation]
    if name not in usable:
        raise ValueError(f"judge variant {name!r} cannot judge an evaluation; choose one of: {', '.join(usable)}")
    return name


def variant_version(base_version: str, variant: str, extra: str = "") -> str:
    """Template version of a variant: ``base_version`` itself for ``base`` (so existing caches
    and shipped judge-check results stay valid), a distinct hash for every other variant."""
    return get_variant(variant).version(base_version, extra)
