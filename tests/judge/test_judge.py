"""Judge variants with scripted backends: the mechanics of each, and that their cached
verdicts never mix."""

from __future__ import annotations

import json
import math
import re

import pytest

from evalign.backends.base import GenParams
from evalign.backends.scripted import ScriptedLLM
from evalign.errors import ConfigError
from evalign.judge import (
    ALT_PAIRWISE_LOGPROB_PREFIX,
    COT_MAX_TOKENS,
    DEFAULT_RUBRIC,
    GRADE_VERSION,
    PAIR_VERSION,
    PAIRWISE_LOGPROB_PREFIX,
    RUBRICS,
    VARIANTS,
    GradeItem,
    Judge,
    PairItem,
    combine_orders,
    sequence_logprob,
)
from evalign.store import RunStore, key_of, sha


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def logp(p_a: float, choices) -> list[float]:
    return [math.log(p_a) if c == "A" else math.log(1 - p_a) for c in choices]


class RecordingLLM(ScriptedLLM):
    """A scripted LLM that logs every call: ("generate", params, conv) / ("choice", prefix, conv)."""

    def __init__(self, generate_fn=None, choice_fn=None, model_id="scripted"):
        kw = {}
        if generate_fn:
            kw["generate_fn"] = generate_fn
        if choice_fn:
            kw["choice_fn"] = choice_fn
        super().__init__(model_id=model_id, **kw)
        self.calls: list[tuple] = []

    def generate(self, conversations, params, seeds):
        self.calls += [("generate", params, c) for c in conversations]
        return super().generate(conversations, params, seeds)

    def choice_logprobs(self, conversations, choices, assistant_prefix=""):
        self.calls += [("choice", assistant_prefix, c) for c in conversations]
        return super().choice_logprobs(conversations, choices, assistant_prefix)


ITEM = PairItem("What is 6 x 7?", "6 x 7 = 42.", "6 x 7 = 48.", category="math")


# ------------------------------------------------------------------ calibrated


def test_logodds_combination_subtracts_the_first_position_bias():
    true, bias = 1.3, 0.9  # the judge's log-odds = the pair's true log-odds + a first-position bias
    p_first, p_second = sigmoid(true + bias), sigmoid(-true + bias)
    assert combine_orders(p_first, p_second, "logodds") == pytest.approx(sigmoid(true))
    assert combine_orders(p_first, p_second, "mean") == pytest.approx((p_first + 1 - p_second) / 2)
    # A judge that always says "first" with the same confidence carries no signal: exactly 0.5.
    assert combine_orders(0.93, 0.93, "logodds") == pytest.approx(0.5)
    # Log-odds sharpens a weak but consistent preference under strong position bias ...
    assert combine_orders(0.99, 0.9, "logodds") > combine_orders(0.99, 0.9, "mean") > 0.5
    # ... and never changes its direction.
    for p1, p2 in [(0.7, 0.2), (0.6, 0.65), (0.99, 0.999), (0.01, 0.5)]:
        assert (combine_orders(p1, p2, "logodds") - 0.5) * (combine_orders(p1, p2, "mean") - 0.5) >= 0


def test_combination_with_missing_orders():
    assert combine_orders(0.8, None, "logodds") == 0.8
    assert combine_orders(None, 0.8, "mean") == pytest.approx(0.2)
    assert combine_orders(None, None) is None
    assert combine_orders(1.0, 0.0, "logodds") == pytest.approx(1.0, abs=1e-5)  # clamped, finite


def test_calibrated_judge_combines_in_logodds_and_base_keeps_the_average():
    llm = ScriptedLLM()
    base, cal = Judge(llm), Judge(llm, variant="calibrated")
    assert base.combine(0.99, 0.9) == pytest.approx(sum([0.99, 1 - 0.9]) / 2)
    assert cal.combine(0.99, 0.9) == pytest.approx(sigmoid((math.log(99) - math.log(9)) / 2))
    # Per-order verdicts are the base prompt's: the same conversation and the same p_a.
    [vb], [vc] = base.compare([ITEM]), cal.compare([ITEM])
    assert vb.p_a == pytest.approx(vc.p_a)
    assert base.pair_conversation(ITEM) == cal.pair_conversation(ITEM)


# ------------------------------------------------------------------ cot


def test_cot_generates_a_short_greedy_rationale_then_reads_the_verdict_after_it():
    rationale = "A multiplies correctly; B's product is wrong."

    def gen(conv, seed):
        return rationale + "\nBetter answer: A\nMore text that must not be kept."

    llm = RecordingLLM(generate_fn=gen, choice_fn=lambda conv, ch, prefix: logp(0.8, ch))
    [v] = Judge(llm, variant="cot").compare([ITEM])
    assert [c[0] for c in llm.calls] == ["generate", "choice"]
    params: GenParams = llm.calls[0][1]
    assert params.max_new_tokens == COT_MAX_TOKENS <= 80 and params.temperature == 0.0
    assert any("Better answer" in s for s in params.stop)
    assert llm.calls[1][1] == rationale + "\n" + PAIRWISE_LOGPROB_PREFIX + " "
    assert llm.calls[0][2] == llm.calls[1][2]  # the same judge prompt
    assert "at most three short sentences" in llm.calls[0][2][-1]["content"]
    assert v.p_a == pytest.approx(0.8) and rationale in v.raw
    assert Judge(llm, variant="cot").stats.calls == 0


def test_cot_counts_two_calls_and_grades_too():
    llm = RecordingLLM(generate_fn=lambda c, s: "Correct and complete.\nRating: 9",
                       choice_fn=lambda conv, ch, prefix: [0.0 if c == "8" else -30.0 for c in ch])
    judge = Judge(llm, variant="cot")
    judge.compare([ITEM])
    assert judge.stats.calls == 2
    [g] = judge.grade([GradeItem("Q?", "An answer.")])
    assert g.score == pytest.approx(8.0, abs=1e-6)
    assert llm.calls[-1][1] == "Correct and complete.\nRating: "


def test_cot_needs_logprobs():
    with pytest.raises(ConfigError):
        Judge(ScriptedLLM(), mode="generate", variant="cot")


# ------------------------------------------------------------------ rubric


@pytest.mark.parametrize("category", sorted(RUBRICS))
def test_rubric_text_appears_for_its_category(category):
    llm = RecordingLLM(choice_fn=lambda conv, ch, prefix: logp(0.6, ch))
    item = PairItem("Q?", "one", "two", category=category)
    Judge(llm, variant="rubric").compare([item])
    prompt = llm.calls[0][2][-1]["content"]
    assert RUBRICS[category] in prompt
    assert all(RUBRICS[c] not in prompt for c in RUBRICS if RUBRICS[c] != RUBRICS[category])
    assert RUBRICS[category] not in Judge(llm).pair_conversation(item)[-1]["content"]


def test_rubric_phrases_the_key_checks_and_falls_back_for_unknown_categories():
    assert "final number" in RUBRICS["math"]
    assert "edge case" in RUBRICS["coding"]
    assert "every constraint" in RUBRICS["instruction_following"]
    judge = Judge(ScriptedLLM(), variant="rubric")
    for cat in (None, "poetry"):
        assert DEFAULT_RUBRIC in judge.pair_conversation(PairItem("Q", "a", "b", category=cat))[-1]["content"]
    assert RUBRICS["instruction_following"] in judge.pair_conversation(
        PairItem("Q", "a", "b", category="Instruction-Following"))[-1]["content"]
    g = judge.grade_conversation(GradeItem("Q", "a", category="coding"))[-1]["content"]
    assert RUBRICS["coding"] in g


# ------------------------------------------------------------------ ensemble


def test_ensemble_averages_three_phrasings():
    def by_phrasing(conv, choices, prefix):
        text = conv[-1]["content"]
        if prefix.startswith(ALT_PAIRWISE_LOGPROB_PREFIX):
            return logp(0.3, choices)
        return logp(0.6 if RUBRICS["math"] in text else 0.9, choices)

    llm = RecordingLLM(choice_fn=by_phrasing)
    judge = Judge(llm, variant="ensemble")
    [v] = judge.compare([ITEM])
    assert v.p_a == pytest.approx((0.9 + 0.6 + 0.3) / 3)
    assert json.loads(v.raw)["components"] == pytest.approx({"base": 0.9, "rubric": 0.6, "alt": 0.3})
    assert judge.stats.calls == 3 and len(llm.calls) == 3


def test_ensemble_in_generate_mode_leaves_out_unparsed_phrasings():
    def gen(conv, seed):
        return "[[A>B]]" if "fewer and smaller mistakes" in conv[-1]["content"] else "no verdict"

    [v] = Judge(ScriptedLLM(generate_fn=gen), mode="generate", variant="ensemble", parse_retries=0).compare([ITEM])
    assert v.p_a == 1.0 and not v.parse_failed


# ------------------------------------------------------------------ policy tie-break


class Policy(ScriptedLLM):
    """A policy whose sequence log-likelihood is scripted: -1 nat per word, -3 for wrong ones."""

    def __init__(self):
        super().__init__(model_id="policy")
        self.scored: list[str] = []

    def sequence_logprob(self, conversation, continuation):
        self.scored.append(continuation)
        words = continuation.split()
        return -sum(3.0 if "48" in w else 1.0 for w in words), len(words)


def test_tiebreak_fires_only_inside_the_band():
    policy = Policy()
    judge = Judge(ScriptedLLM(), variant="policy_tiebreak", tiebreak_llm=policy)
    assert judge.combine(0.9, 0.2, ITEM) == pytest.approx(0.85)  # confident: the judge decides
    assert judge.combine(0.7, 0.5, ITEM) == pytest.approx(0.6)  # 0.1 from 0.5: on the band's edge, kept
    assert policy.scored == [] and judge.tiebreaks == 0
    assert judge.combine(0.62, 0.6, ITEM) == pytest.approx(0.6)  # 0.51: the policy prefers answer_a
    assert policy.scored == [ITEM.answer_a, ITEM.answer_b]
    swapped = PairItem(ITEM.question, ITEM.answer_b, ITEM.answer_a)
    assert judge.combine(0.5, 0.5, swapped) == pytest.approx(0.4)
    assert judge.tiebreaks == 2 and judge.stats.tiebreak_calls == 4
    assert judge.combine(0.5, 0.5, None) == 0.5  # no item: nothing to ask


def test_tiebreak_is_length_normalised_and_cached(tmp_path):
    class LongWins(Policy):
        def sequence_logprob(self, conversation, continuation):
            self.scored.append(continuation)
            n = len(continuation.split())
            return -0.5 * n, n  # the same per-token likelihood, whatever the length

    item = PairItem("Q?", "short answer", "a much longer answer with many more words in it")
    with RunStore(tmp_path) as store:
        policy = LongWins()
        judge = Judge(ScriptedLLM(), store=store, variant="policy_tiebreak", tiebreak_llm=policy)
        assert judge.combine(0.5, 0.5, item) == 0.5  # equal per-token log-likelihood: still a tie
        again = Judge(ScriptedLLM(), store=store, variant="policy_tiebreak", tiebreak_llm=policy)
        again.combine(0.5, 0.5, item)
        assert len(policy.scored) == 2  # the second judge read the store


def test_tiebreak_needs_a_policy_and_a_valid_band():
    with pytest.raises(ConfigError):
        Judge(ScriptedLLM(), variant="policy_tiebreak")
    with pytest.raises(ConfigError):
        Judge(ScriptedLLM(), variant="policy_tiebreak", tiebreak_llm=Policy(), tiebreak_band=0.7)
    with pytest.raises(ConfigError):
        Judge(ScriptedLLM(), variant="no-such-variant")


def test_sequence_logprob_matches_the_backends_exact_choice_probability(tiny_model_dir):
    from evalign.backends.transformers_backend import TransformersLLM

    llm = TransformersLLM(str(tiny_model_dir), model_id="tiny", dtype="float32")
    conv = [{"role": "user", "content": "Say something."}]
    text = "Hello there, friend"
    lp, n = sequence_logprob(llm, conv, text)
    assert n == len(llm.encode(llm.render(conv) + text)) - len(llm.encode(llm.render(conv)))
    assert lp == pytest.approx(llm.choice_logprobs([conv], [text])[0][0], abs=1e-3)
    with pytest.raises(ConfigError):
        sequence_logprob(ScriptedLLM(), conv, text)


# ------------------------------------------------------------------ caching


def test_base_keeps_its_template_version_and_cache_key():
    judge = Judge(ScriptedLLM(), screen=False)
    assert judge.pair_version == PAIR_VERSION and judge.grade_version == GRADE_VERSION
    # The injection screen decides some verdicts without the judge: its version differs, its
    # cache key (what the judge said) does not.
    assert Judge(ScriptedLLM()).pair_key(ITEM) == judge.pair_key(ITEM)
    legacy = key_of("pair", "scripted", PAIR_VERSION, "logprobs", sha(ITEM.question), sha(ITEM.answer_a),
                    sha(ITEM.answer_b), sha(""))
    assert judge.pair_key(ITEM) == legacy


def test_cache_keys_and_versions_differ_between_variants():
    llm = ScriptedLLM()
    judges = [Judge(llm, variant=v, tiebreak_llm=Policy() if v == "policy_tiebreak" else None) for v in VARIANTS]
    assert len({j.pair_version for j in judges}) == len(VARIANTS)
    assert len({j.grade_version for j in judges}) == len(VARIANTS)
    # Variants that ask a different prompt per order cache under different keys; calibrated
    # and policy_tiebreak ask the base prompt and only combine the orders differently, so they
    # share the base variant's verdicts.
    by_variant = {j.variant: j for j in judges}
    distinct = ("base", "cot", "rubric", "ensemble")
    assert len({by_variant[v].pair_key(ITEM) for v in distinct}) == len(distinct)
    assert len({by_variant[v].grade_key(GradeItem("Q", "a")) for v in distinct}) == len(distinct)
    for shared in ("calibrated", "policy_tiebreak"):
        assert by_variant[shared].pair_key(ITEM) == by_variant["base"].pair_key(ITEM)
        assert by_variant[shared].grade_key(GradeItem("Q", "a")) == by_variant["base"].grade_key(GradeItem("Q", "a"))
    # The tie-breaker's model is part of its version.
    other = Policy()
    other.model_id = "another-policy"
    assert Judge(llm, variant="policy_tiebreak", tiebreak_llm=other).pair_version != judges[-1].pair_version
    # The category matters only where a rubric reads it.
    recat = PairItem(ITEM.question, ITEM.answer_a, ITEM.answer_b, category="coding")
    assert judges[0].pair_key(recat) == judges[0].pair_key(ITEM)
    assert Judge(llm, variant="rubric").pair_key(recat) != Judge(llm, variant="rubric").pair_key(ITEM)


def test_cached_verdicts_of_different_variants_never_mix(tmp_path):
    def by_prompt(conv, choices, prefix):
        return logp(0.7 if "How to judge" in conv[-1]["content"] else 0.2, choices)

    with RunStore(tmp_path) as store:
        llm = RecordingLLM(choice_fn=by_prompt)
        [b] = Judge(llm, store=store).compare([ITEM])
        [r] = Judge(llm, store=store, variant="rubric").compare([ITEM])
        assert not r.cached and (b.p_a, r.p_a) == pytest.approx((0.2, 0.7))
        [r2] = Judge(llm, store=store, variant="rubric").compare([ITEM])
        assert r2.cached and r2.p_a == pytest.approx(0.7) and len(llm.calls) == 2
        versions = {row[0] for row in store.db.execute("SELECT prompt_version FROM judgments")}
        assert versions == {PAIR_VERSION, Judge(llm, variant="rubric", screen=False).pair_version}


def test_default_judge_prompt_is_unchanged_by_the_category_field():
    judge = Judge(ScriptedLLM())
    a = judge.pair_conversation(PairItem("Q", "a", "b"))
    b = judge.pair_conversation(PairItem("Q", "a", "b", category="math"))
    assert a == b and "How to judge" not in a[-1]["content"]
    assert re.search(r"Which answer is better\? Reply with one letter: A or B\.$", a[-1]["content"])


def test_ensemble_reuses_the_cached_verdicts_of_its_components(tmp_path):
    calls = []

    def by_prompt(conv, choices, prefix):
        calls.append(conv[-1]["content"])
        return logp(0.7, choices)

    with RunStore(tmp_path / "run") as store:
        llm = ScriptedLLM(choice_fn=by_prompt)
        Judge(llm, variant="rubric", store=store).compare([ITEM])
        Judge(llm, variant="base", store=store).compare([ITEM])
        assert len(calls) == 2
        Judge(llm, variant="ensemble", store=store).compare([ITEM])
        assert len(calls) == 3  # only the alt phrasing was new
        assert "fewer and smaller mistakes" in calls[-1]
