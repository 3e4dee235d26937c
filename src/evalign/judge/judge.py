"""The LLM judge shared by rewards and evaluation.

Two questions are asked of a judge model:

* ``compare`` — which of two answers to a question is better (one order per call; callers
  judge both orders to cancel position bias);
* ``grade``   — a 1–10 score of one answer (MT-Bench single-answer grading), optionally
  against a reference answer, optionally with earlier turns of a conversation.

What is asked lives in :mod:`~evalign.judge.prompts`, how answers are read in
:mod:`~evalign.judge.verdicts`, and how a variant makes its verdict (``Judge(variant=...)``)
in :mod:`~evalign.judge.variants`. A generated verdict that cannot be parsed is retried with
new seeds, then recorded as a parse failure.

Every judgment is cached in the run store under (judge, template version, mode, question,
answers, order): a rerun of an evaluation makes no judge calls.

The two orders meet in :meth:`Judge.combine`: callers that judge both orders (win rate,
judge-check, the pairwise-anchor reward) combine them there, so the variant's rule applies.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence

from evalign.backends.base import LLM, Conversation, GenParams
from evalign.errors import ConfigError
from evalign.hashing import key_of, sha
from evalign.judge.prompts import (
    GRADE_LOGPROB_PREFIX,
    GRADE_VERSION,
    PAIR_VERSION,
    SCORES,
    defang,
    grade_prompt,
    pair_prompt,
)
from evalign.judge.screen import SCREEN_VERSION, addresses_judge
from evalign.judge.variants import PHRASINGS, TIEBREAK_BAND, JudgeVariant, Phrasing, get_variant
from evalign.judge.verdicts import (
    GRADE_PARSER_VERSION,
    GradeItem,
    JudgeStats,
    PairItem,
    Verdict,
    cached_verdict,
    combine_orders,
    parse_grade,
    parse_pair,
    softmax2,
)
from evalign.progress import track
from evalign.store import CacheThrough, RunStore

log = logging.getLogger(__name__)


def sequence_logprob(llm: LLM, conversation: Conversation, continuation: str) -> tuple[float, int]:
    """log P(continuation | conversation) as the assistant's reply, and its token count.

    The ``LLM`` protocol has next-token choice probabilities but no sequence scoring, so the
    ``policy_tiebreak`` variant asks the backend (or the one a pool wrapper such as LazyLLM
    holds) for its own ``sequence_logprob``; the transformers backend has one. Other
    backends (llama.cpp, APIs) cannot break ties.
    """
    inner = getattr(llm, "inner", llm)  # backends.pool.LazyLLM loads on first use
    own = getattr(inner, "sequence_logprob", None)
    if not callable(own):
        raise ConfigError(
            f"the policy_tiebreak judge variant needs a transformers-backend policy to score answers; "
            f"{llm.model_id} is not one (set the policy's backend to transformers)"
        )
    return own(conversation, continuation)


class Judge:
    """Pairwise comparison and 1–10 grading with one judge model.

    ``variant`` names how verdicts are made (:mod:`evalign.judge.variants`; the object is
    ``variant_spec``); ``tiebreak_llm`` is the policy model a variant that breaks ties asks
    when the judge is uncertain, ``tiebreak_band`` the half-width of that band around 0.5.
    """

    def __init__(
        self,
        llm: LLM,
        *,
        mode: str = "auto",
        store: RunStore | None = None,
        parse_retries: int = 2,
        max_answer_tokens: int = 512,
        seed: int = 0,
        variant: str = "base",
        tiebreak_llm: LLM | None = None,
        tiebreak_band: float = TIEBREAK_BAND,
        screen: bool = True,
    ) -> None:
        self.llm = llm
        self.mode = ("logprobs" if llm.exact_logprobs else "generate") if mode == "auto" else mode
        self.store = store
        self.parse_retries = parse_retries
        self.max_answer_tokens = max_answer_tokens
        self.seed = seed
        self.stats = JudgeStats()
        spec = get_variant(variant)
        if spec.needs_logprobs and self.mode != "logprobs":
            raise ConfigError(f"the {spec.name} judge variant reads its verdict from log-probabilities; in "
                              "generate mode every verdict already follows a rationale (use variant base)")
        if spec.needs_policy and tiebreak_llm is None:
            raise ConfigError(f"the {spec.name} judge variant needs the policy model (tiebreak_llm)")
        if not 0 < tiebreak_band <= 0.5:
            raise ConfigError(f"tiebreak_band must lie in (0, 0.5], got {tiebreak_band}")
        self.variant_spec: JudgeVariant = spec
        self.variant = spec.name
        self.tiebreak_llm = tiebreak_llm if spec.needs_policy else None
        self.tiebreak_band = tiebreak_band
        self.tiebreaks = 0  # pairs whose verdict the policy decided
        self.screen = screen
        self.screened = 0  # answers judged by the injection screen, not the judge
        extra = f"{tiebreak_llm.model_id}|{tiebreak_band}" if self.tiebreak_llm is not None else ""
        self.pair_version = spec.version(PAIR_VERSION, extra)
        self.grade_version = spec.version(GRADE_VERSION, extra)
        if self.mode != "logprobs":  # generated grades depend on how the text is read
            self.grade_version = sha(f"{self.grade_version}|parser:{GRADE_PARSER_VERSION}", 12)
        if screen:  # the verdicts of screened answers differ: results measured without it do not apply
            self.pair_version = sha(f"{self.pair_version}|screen:{SCREEN_VERSION}", 12)
            self.grade_version = sha(f"{self.grade_version}|screen:{SCREEN_VERSION}", 12)
        self._tiebreak_cache: dict[str, float] = {}

    @property
    def judge_id(self) -> str:
        return self.llm.model_id

    # ------------------------------------------------------------------ prompts

    def _cut(self, text: str) -> str:
        return defang(self.llm.truncate(text, self.max_answer_tokens))

    @staticmethod
    def _phrasing(style: str | Phrasing | None, default: Phrasing) -> Phrasing:
        if style is None:
            return default
        if isinstance(style, Phrasing):
            return style
        return PHRASINGS.get(style, PHRASINGS["base"])

    def pair_conversation(self, item: PairItem, style: str | Phrasing | None = None) -> Conversation:
        """The judge prompt for one order. ``style``: base | rubric | alt | cot (default: the
        variant's first phrasing)."""
        ph = self._phrasing(style, self.variant_spec.asks[0])
        return pair_prompt(item.question, item.answer_a, item.answer_b, item.reference,
                           ph.pair_instruction(self.mode == "logprobs", item.category), self._cut)

    def grade_conversation(self, item: GradeItem, style: str | Phrasing | None = None) -> Conversation:
        ph = self._phrasing(style, self.variant_spec.grade_phrasings[0])
        return grade_prompt(item.question, item.answer, item.reference, item.context,
                            ph.grade_instruction(self.mode == "logprobs", item.category), self._cut)

    # ------------------------------------------------------------------ public API

    def _pair_key(self, item: PairItem, version: str, reads_category: bool) -> str:
        parts = ["pair", self.judge_id, version, self.mode, sha(item.question), sha(item.answer_a),
                 sha(item.answer_b), sha(item.reference or "")]
        if reads_category:
            parts.append(item.category or "")
        return key_of(*parts)

    def pair_key(self, item: PairItem) -> str:
        spec = self.variant_spec
        return self._pair_key(item, spec.pair_cache_version, spec.reads_category)

    def grade_key(self, item: GradeItem) -> str:
        parts = ["grade", self.judge_id, self.variant_spec.grade_cache_version, self.mode, sha(item.question),
                 sha(item.answer), sha(item.reference or ""), sha(json.dumps(item.context))]
        if self.mode != "logprobs":
            parts.append(GRADE_PARSER_VERSION)
        if self.variant_spec.reads_category:
            parts.append(item.category or "")
        return key_of(*parts)

    def compare(self, items: Sequence[PairItem], description: str = "judging pairs") -> list[Verdict]:
        """One verdict per item, in the order given: ``p_a`` = P(answer A is better)."""
        return self._screening(items, _screened_pair, lambda rest: self._run(
            "pairwise", rest, [self.pair_key(i) for i in rest], self._compare_one, description))

    def grade(self, items: Sequence[GradeItem], description: str = "grading answers") -> list[Verdict]:
        return self._screening(items, _screened_grade, lambda rest: self._run(
            "single", rest, [self.grade_key(i) for i in rest], self._grade_one, description))

    def _screening(self, items, screened_verdict, judge_rest) -> list[Verdict]:
        """``judge_rest``'s verdicts, except where an answer addresses the judge
        (:mod:`evalign.judge.screen`): those are decided without asking, and not stored (the
        cache holds what the judge said)."""
        decided = {i: v for i, item in enumerate(items)
                   if self.screen and (v := screened_verdict(item)) is not None}
        self.screened += len(decided)
        rest = [item for i, item in enumerate(items) if i not in decided]
        it = iter(judge_rest(rest) if rest else [])
        return [decided[i] if i in decided else next(it) for i in range(len(items))]

    def combine(self, p_first: float | None, p_second: float | None, item: PairItem | None = None) -> float | None:
        """P(``item.answer_a`` is better) from its two verdicts: ``p_first`` judged as given
        (answer_a shown as A), ``p_second`` with the answers swapped. This is where both
        orders meet, so every caller that judges both orders (win rate, judge-check, the
        pairwise-anchor reward) applies the variant's rule by calling it: the variant's
        ``combine`` (:func:`combine_orders`), then, for a variant that breaks ties, an
        uncertain result (|p − 0.5| < band) goes to the policy when ``item`` is given."""
        p = combine_orders(p_first, p_second, self.variant_spec.combine)
        if (self.tiebreak_llm is not None and item is not None and p is not None
                and abs(p - 0.5) < self.tiebreak_band - 1e-9):  # the band's edge is outside
            p = self._tiebreak(item)
        return p

    # ------------------------------------------------------------------ machinery

    def _row(self, key: str, version: str, kind: str, item, verdict: Verdict, attempts: int) -> dict:
        """The judgments-table row of one verdict."""
        return {
            "key": key, "judge_id": self.judge_id, "prompt_version": version, "kind": kind,
            "question_sha": sha(item.question),
            "answer_a_sha": sha(getattr(item, "answer_a", None) or getattr(item, "answer", "")),
            "answer_b_sha": sha(item.answer_b) if kind == "pairwise" else None,
            "verdict": verdict.label, "prob_a": verdict.p_a, "score": verdict.score,
            "raw": verdict.raw[:4000], "attempts": attempts, "parse_failed": int(verdict.parse_failed),
        }

    def _run(self, kind, items, keys, one, description) -> list[Verdict]:
        look = CacheThrough(self.store, "judgments", [[k] for k in keys], cached_verdict)
        self.stats.cache_hits += len(items) - len(look.missing)
        version = (self.variant_spec.pair_cache_version if kind == "pairwise"
                   else self.variant_spec.grade_cache_version)
        attempts: dict[int, int] = {}
        with track(description, len(look.missing), "judgments") as advance:
            # Consecutive judge prompts that share a prefix reuse the backend's KV cache.
            for chunk in look.chunks(16, order=lambda i: _order_key(items[i])):
                verdicts = []
                for i in chunk:
                    t0 = time.perf_counter()
                    verdict, attempts[i] = one(items[i])
                    self.stats.seconds += time.perf_counter() - t0
                    self.stats.calls += attempts[i]
                    self.stats.parse_failures += int(verdict.parse_failed)
                    verdicts.append([verdict])
                    advance(1)
                look.fill(chunk, verdicts, lambda i, _j, v: self._row(keys[i], version, kind, items[i], v, attempts[i]))
        return [row[0] for row in look.values]

    def _compare_one(self, item: PairItem) -> tuple[Verdict, int]:
        asks = self.variant_spec.asks
        return self._ask_pair(item, asks[0]) if len(asks) == 1 else self._mean_pair(item, asks)

    def _ask_pair(self, item: PairItem, ph: Phrasing) -> tuple[Verdict, int]:
        conv = self.pair_conversation(item, ph)
        if self.mode != "logprobs":
            return self._generate_until_parsed(conv, parse_pair, max_new_tokens=256)
        rationale = self._rationale(conv, ph.rationale_tokens, ph.pair_stop) if ph.rationale_tokens else ""
        prefix = (rationale + "\n" if rationale else "") + ph.pair_prefix + " "
        lp_a, lp_b = self.llm.choice_logprobs([conv], ["A", "B"], prefix)[0]
        p_a = softmax2(lp_a, lp_b)
        raw = f"logp A={lp_a:.3f} B={lp_b:.3f}"
        if ph.rationale_tokens:
            return Verdict(p_a=p_a, label="A" if p_a >= 0.5 else "B", raw=f"{rationale}\n{raw}"), 2
        return Verdict(p_a=p_a, label="A" if p_a >= 0.5 else "B", raw=raw), 1

    def _rationale(self, conv: Conversation, max_tokens: int, stop: tuple[str, ...]) -> str:
        gen = self.llm.generate([conv], GenParams(max_tokens, 0.0, 1.0, stop), [self.seed])[0][0]
        return _cut_at(gen.text, stop).strip()

    def _mean_pair(self, item: PairItem, asks: tuple[Phrasing, ...]) -> tuple[Verdict, int]:
        """The mean verdict of several phrasings; unparsed ones are left out."""
        parts, attempts, raws = {}, 0, []
        for ph in asks:
            v, n = self._pair_component(item, ph)
            attempts += n
            raws.append(v.raw)
            if v.p_a is not None:
                parts[ph.name] = v.p_a
        if not parts:
            return Verdict(parse_failed=True, raw=json.dumps({"raw": raws})[:4000]), attempts
        p_a = sum(parts.values()) / len(parts)
        return Verdict(p_a=p_a, label="A" if p_a >= 0.5 else "B", raw=json.dumps({"components": parts})), attempts

    def _pair_component(self, item: PairItem, ph: Phrasing) -> tuple[Verdict, int]:
        """One phrasing's verdict, read from and written to the store under the key that a
        variant asking that phrasing alone uses."""
        key = self._pair_key(item, ph.pair_version, ph.rubric)
        hit = self.store.cached("judgments", [key]).get(key) if self.store else None
        if hit is not None:
            return cached_verdict(hit), 0
        v, n = self._ask_pair(item, ph)
        if self.store is not None:
            self.store.put("judgments", [self._row(key, ph.pair_version, "pairwise", item, v, n)])
        return v, n

    def _grade_one(self, item: GradeItem) -> tuple[Verdict, int]:
        grades = self.variant_spec.grade_phrasings
        if len(grades) == 1:
            return self._ask_grade(item, grades[0])
        parts, attempts = {}, 0
        for ph in grades:
            v, n = self._ask_grade(item, ph)
            attempts += n
            if v.score is not None:
                parts[ph.name] = v.score
        if not parts:
            return Verdict(parse_failed=True), attempts
        score = sum(parts.values()) / len(parts)
        return Verdict(score=score, label=f"{score:.2f}", raw=json.dumps({"components": parts})), attempts

    def _ask_grade(self, item: GradeItem, ph: Phrasing) -> tuple[Verdict, int]:
        conv = self.grade_conversation(item, ph)
        if self.mode != "logprobs":
            return self._generate_until_parsed(conv, parse_grade, max_new_tokens=256)
        rationale, calls = "", 1
        if ph.rationale_tokens:
            rationale, calls = self._rationale(conv, ph.rationale_tokens, ph.grade_stop), 2
        prefix = (rationale + "\n" if rationale else "") + GRADE_LOGPROB_PREFIX + " "
        lps = self.llm.choice_logprobs([conv], SCORES, prefix)[0]
        probs = [math.exp(x) for x in lps]
        total = sum(probs)
        score = sum((i + 1) * p for i, p in enumerate(probs)) / total
        raw = json.dumps([round(p / total, 4) for p in probs])
        return Verdict(score=score, label=f"{score:.2f}", raw=(rationale + "\n" + raw) if rationale else raw), calls

    def _tiebreak(self, item: PairItem) -> float:
        """P(answer_a better) from the policy: the edge of the band on the side of the
        length-normalised log-likelihood ratio, 0.5 when it is exactly 0. Cached in the store."""
        policy = self.tiebreak_llm
        assert policy is not None
        key = key_of("tiebreak", policy.model_id, self.judge_id, self.tiebreak_band, self.max_answer_tokens,
                     sha(item.question), sha(item.answer_a), sha(item.answer_b))
        if key in self._tiebreak_cache:
            self.tiebreaks += 1
            return self._tiebreak_cache[key]
        hit = self.store.cached("judgments", [key]).get(key) if self.store else None
        if hit is not None:
            p = float(hit["prob_a"])
        else:
            conv = [{"role": "user", "content": item.question}]
            per_token = []
            for answer in (item.answer_a, item.answer_b):
                text = policy.truncate(answer, self.max_answer_tokens)
                lp, n = sequence_logprob(policy, conv, text)
                per_token.append(lp / max(n, 1))
            self.stats.tiebreak_calls += 2
            llr = per_token[0] - per_token[1]
            p = 0.5 + self.tiebreak_band * (1.0 if llr > 0 else -1.0 if llr < 0 else 0.0)
            if self.store is not None:
                self.store.put("judgments", [{
                    "key": key, "judge_id": policy.model_id, "prompt_version": self.pair_version,
                    "kind": "tiebreak", "question_sha": sha(item.question), "answer_a_sha": sha(item.answer_a),
                    "answer_b_sha": sha(item.answer_b), "verdict": "A" if p > 0.5 else "B" if p < 0.5 else "A=B",
                    "prob_a": p, "score": None, "raw": json.dumps({"llr_per_token": llr, "per_token": per_token}),
                    "attempts": 2, "parse_failed": 0,
                }])
        self._tiebreak_cache[key] = p
        self.tiebreaks += 1
        return p

    def _generate_until_parsed(self, conv, parse, max_new_tokens: int) -> tuple[Verdict, int]:
        raw = ""
        for attempt in range(self.parse_retries + 1):
            temperature = 0.0 if attempt == 0 else 0.7
            gen = self.llm.generate([conv], GenParams(max_new_tokens, temperature, 1.0), [self.seed + attempt])[0][0]
            raw = gen.text
            verdict = parse(raw)
            if verdict is not None:
                verdict.raw = raw
                return verdict, attempt + 1
        log.warning("judge verdict could not be parsed after %d attempts: %r", self.parse_retries + 1, raw[-200:])
        return Verdict(parse_failed=True, raw=raw), self.parse_retries + 1


def _cut_at(text: str, stop: Sequence[str]) -> str:
    """Text before the first stop string (for backends that do not honour ``stop``)."""
    cut = min((text.find(s) for s in stop if s in text), default=-1)
    return text[:cut] if cut >= 0 else text


def _screened_pair(item: PairItem) -> Verdict | None:
    """When exactly one answer addresses the judge, the other wins."""
    a, b = addresses_judge(item.answer_a), addresses_judge(item.answer_b)
    if (a is None) == (b is None):
        return None
    p_a = 0.0 if a is not None else 1.0
    return Verdict(p_a=p_a, label="A" if p_a else "B",
                   raw=json.dumps({"screened": "A" if a is not None else "B", "pattern": a or b}))


def _screened_grade(item: GradeItem) -> Verdict | None:
    """An answer that addresses the judge gets the scale's minimum."""
    pattern = addresses_judge(item.answer)
    return None if pattern is None else Verdict(score=1.0, label="1.00",
                                                raw=json.dumps({"screened": True, "pattern": pattern}))


def _order_key(item) -> tuple:
    if isinstance(item, PairItem):
        return (item.question, item.reference or "", item.answer_a)
    return (json.dumps(item.context), item.question, item.reference or "")
