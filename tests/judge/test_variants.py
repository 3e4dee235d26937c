"""Judge variants and reward kinds as registered objects: their names, their frozen template
versions, what each variant declares, and the registry lookups that replaced name switches."""

from __future__ import annotations


import pytest

from evalign.backends.base import ForwardingLLM
from evalign.backends.scripted import ScriptedLLM
from evalign.config import RewardConfig
from evalign.config.choices import CHOICE_FIELDS
from evalign.errors import ConfigError
from evalign.eval.judge_check import KINDS, format_report
from evalign.judge import GRADE_VERSION, PAIR_VERSION, VARIANTS, Judge, get_variant, sequence_logprob, variant_version
from evalign.judge.reward import JudgePairwiseAnchorReward, JudgePointwiseReward, build_reward_model
from evalign.judge.variants import check_eval_variant
from evalign.registry import JUDGE_VARIANTS, REWARD_KINDS

#: (pair version, grade version) per variant: part of every cached verdict's key and of the
#: shipped judge-check results' file names; they change only with a template change and a
#: new measurement.
FROZEN = {  # the templates hardened against instructions inside answers (was 6ca54de6ad55, cce32e38b006)
    "base": ("9f7ddcc377aa", "a65e13ba323a"),
    "calibrated": ("c029b73f6f04", "72d31ae7cfb8"),
    "cot": ("b0559cd442d4", "4e5d55d9bd5b"),
    "rubric": ("b75cc6e857da", "299d83e278d6"),
    "ensemble": ("65a7b0b8bf8c", "832da04b1421"),
    "policy_tiebreak": ("537478e564d9", "6c5e548f1aa5"),
}


def test_variants_are_registered_in_order_with_frozen_versions():
    assert VARIANTS == JUDGE_VARIANTS.names() == tuple(FROZEN)
    assert (PAIR_VERSION, GRADE_VERSION) == FROZEN["base"]
    for name, (pair, grade) in FROZEN.items():
        assert (variant_version(PAIR_VERSION, name), variant_version(GRADE_VERSION, name)) == (pair, grade)
        assert JUDGE_VARIANTS.get(name).name == name


def test_each_variant_declares_its_prompts_rule_and_cost():
    v = {n: get_variant(n) for n in VARIANTS}
    assert [ph.name for ph in v["ensemble"].asks] == ["base", "rubric", "alt"]
    assert [ph.name for ph in v["ensemble"].grade_phrasings] == ["base", "rubric"]
    assert {n: x.judge_calls for n, x in v.items()} == {
        "base": 1, "calibrated": 1, "cot": 2, "rubric": 1, "ensemble": 3, "policy_tiebreak": 1}
    assert {n for n, x in v.items() if x.combine == "logodds"} == {"calibrated"}
    assert {n for n, x in v.items() if x.needs_policy} == {"policy_tiebreak"}
    assert {n for n, x in v.items() if x.needs_logprobs} == {"cot"}
    assert {n for n, x in v.items() if x.reads_category} == {"rubric", "ensemble"}
    # Variants that ask one phrasing share its cached verdicts.
    assert v["calibrated"].pair_cache_version == v["policy_tiebreak"].pair_cache_version == PAIR_VERSION
    assert v["rubric"].pair_cache_version == FROZEN["rubric"][0]


def test_policy_tiebreak_cannot_judge_an_evaluation():
    usable = [n for n in VARIANTS if get_variant(n).in_evaluation]
    assert usable == list(CHOICE_FIELDS["eval.judge_variant"]())
    assert check_eval_variant("rubric") == "rubric"
    with pytest.raises(ValueError, match="cannot judge an evaluation"):
        check_eval_variant("policy_tiebreak")
    with pytest.raises(ConfigError, match="unknown judge variant"):
        get_variant("best")


def test_judge_keeps_the_variant_name_and_object():
    judge = Judge(ScriptedLLM(), variant="calibrated")
    assert judge.variant == "calibrated" and judge.variant_spec is get_variant("calibrated")


def test_reward_kinds_are_registered_and_built_from_the_registry():
    kinds = CHOICE_FIELDS["solver.reward.kind"]()
    assert REWARD_KINDS.names() == kinds
    llm = ScriptedLLM()
    assert isinstance(build_reward_model(RewardConfig(kind="judge_pointwise"), llm), JudgePointwiseReward)
    assert isinstance(build_reward_model(RewardConfig(kind="judge_pairwise_anchor"), llm), JudgePairwiseAnchorReward)
    with pytest.raises(ValueError, match="need an LLM"):
        build_reward_model(RewardConfig(kind="judge_pointwise"))


def test_judge_check_measures_every_reward_kind():
    assert {k.removeprefix("judge_") for k in REWARD_KINDS} <= set(KINDS)


def test_sequence_logprob_asks_the_backend_through_a_wrapper():
    class Scorer(ScriptedLLM):
        def sequence_logprob(self, conversation, continuation):
            return -2.0, 4

    class Wrapper(ForwardingLLM):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.model_id = inner, inner.model_id

    assert sequence_logprob(Wrapper(Scorer()), [], "text") == (-2.0, 4)
    with pytest.raises(ConfigError, match="transformers-backend policy"):
        sequence_logprob(Wrapper(ScriptedLLM()), [], "text")


def test_the_report_names_the_pairs_and_the_results_file(tmp_path):
    from evalign.eval.judge_check_io import CheckResult
    from evalign.eval.stats import Estimate

    r = CheckResult("j", "pairwise", "logprobs", 3, Estimate(1.0, 0.5, 1.0, 3), 2.0, 1.0, source="builtin:labeled")
    text = format_report([r], tmp_path)
    assert text.splitlines()[-1] == f"labeled pairs: builtin:labeled (n=3); results: {tmp_path / 'judge_check.json'}"
    assert text.startswith("| judge / reward |")
