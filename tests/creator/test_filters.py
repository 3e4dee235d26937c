"""The creator: metrics, samplers, operators (with a scripted creator LLM), parser, filters."""

from __future__ import annotations


import numpy as np
import pytest

from evalign.backends.base import GenParams
from evalign.config import FilterConfig
from evalign.creator import (
    FILTER_REASONS,
    filter_evolved,
)
from evalign.creator.filters import NearDuplicateIndex, jaccard, normalize, shingles, similarity

PARAMS = GenParams(max_new_tokens=200, temperature=0.7, top_p=0.95)


CFG = FilterConfig()
POOL = [
    "Explain how vaccines train the immune system to recognise a virus, "
    "using an analogy a ten year old would understand.",
    "Write a Python function that merges two sorted lists into one sorted list "
    "without using the built-in sort.",
]
EVALS = [
    "Write an eight-line rhyming poem with the rhyme scheme AABBCCDD about a city bus at dawn.",
]
FRESH = "Plan a three-day walking itinerary in Lisbon for someone who hates crowds."
LONG_ANSWER = (
    "The French Revolution began in 1789 as a result of a deep fiscal crisis, widespread anger at the "
    "privileges of the nobility and clergy, and the spread of Enlightenment ideas about rights and "
    "popular sovereignty. Bad harvests had pushed up the price of bread, and the monarchy had borrowed "
    "heavily to fund wars, so when the Estates-General met the Third Estate declared itself a National "
    "Assembly and the old order collapsed within a few years."
)
LONG_REQUEST = (
    "I run a small bakery with four staff and we open at six every morning. Lately two of the staff keep "
    "arriving late, and the others are starting to resent covering for them, which makes the mornings tense. "
    "I do not want to fire anyone, because they are good bakers and hard to replace in this town. "
    "Draft a short, friendly but firm message I can send to the whole team about punctuality."
)
LONG_QUESTION = LONG_ANSWER.replace("within a few years.", "within a few years: is that a fair summary?")


def decide(candidate, parent="Tell me something about Portugal.", pool=POOL, evals=EVALS, cfg=CFG):
    [d] = filter_evolved([candidate], [parent], pool, evals, cfg)
    return d.reason


def test_reason_names_are_stable_snake_case():
    assert FILTER_REASONS == (
        "empty", "too_short", "too_long", "copies_template", "answers_prompt",
        "duplicate_parent", "duplicate_pool", "contaminated",
    )


def test_a_good_prompt_is_kept():
    [d] = filter_evolved([FRESH], ["Tell me something about Portugal."], POOL, EVALS, CFG)
    assert d.kept and d.reason is None


def test_empty():
    assert decide("") == "empty" and decide("  \n ") == "empty"


def test_length_limits_are_inclusive():
    cfg = FilterConfig(min_chars=20, max_chars=60)
    assert decide("Name three rivers.", cfg=cfg) == "too_short"  # 18 chars
    assert decide("Name three big rivers", cfg=cfg) is None  # 21 chars
    exact = "Name three rivers in Africa and say which is longest please."
    assert len(exact) == 60 and decide(exact, cfg=cfg) is None
    assert decide(exact + "!", cfg=cfg) == "too_long"


@pytest.mark.parametrize(
    "text",
    [
        "#Given Prompt#: Plan a three-day walking itinerary in Lisbon.",
        "<prompt>Plan a three-day walking itinerary in Lisbon.</prompt>",
        "Plan a walking itinerary in Lisbon. Rewritten Prompt: add a budget.",
        "#Created Prompt# Plan a three-day walking itinerary in Lisbon.",
    ],
)
def test_copies_template(text):
    assert decide(text) == "copies_template"


def test_copies_template_near_miss():
    assert decide("Write a prompt for an image generator that shows a castle at dusk.") is None


@pytest.mark.parametrize(
    "text",
    [
        "Sure, here is a poem about the sea: waves roll in and out all day.",
        "Certainly! Lisbon has seven hills and many viewpoints.",
        "Here's the answer: the bus leaves at noon from the main square.",
        "As an AI language model, I cannot plan trips, but Lisbon is lovely.",
        "I'm sorry, but I can't rewrite that prompt for you.",
        "To determine if some painters play chess, we need to follow these steps: 1. Identify painters.",
        LONG_ANSWER,
    ],
)
def test_answers_prompt(text):
    assert decide(text) == "answers_prompt"


@pytest.mark.parametrize(
    "text",
    [
        "Surely there is a faster way to peel garlic than by hand?",
        "Here is my grocery list: eggs, milk, flour. What can I bake with it?",
        "The meeting moved to noon; draft a short reminder email to the team.",
        "To plan our trip, we need a budget. Can you suggest one for four days in Rome?",
        LONG_REQUEST,
        LONG_QUESTION,
    ],
)
def test_answers_prompt_near_misses(text):
    assert decide(text) is None


def test_duplicate_parent():
    parent = "Explain why the sky is blue during the day but red at sunset."
    assert decide("explain WHY the sky is blue during the day, but red at sunset!", parent=parent) == "duplicate_parent"
    near = "Explain why the sky is blue during the day but red at sunset, then say what colour it would be on Mars."
    assert similarity(near, parent) < CFG.dedup_threshold
    assert decide(near, parent=parent) is None


def test_duplicate_pool_and_of_an_earlier_kept_candidate():
    extended = POOL[0] + " Keep it short."
    assert similarity(extended, POOL[0]) >= CFG.dedup_threshold
    assert decide(extended) == "duplicate_pool"
    assert decide("Explain how vaccines work, with a simple everyday analogy for children.") is None
    decisions = filter_evolved([FRESH, FRESH.upper(), FRESH], ["a", "b", "c"], POOL, EVALS, CFG)
    assert [d.reason for d in decisions] == [None, "duplicate_pool", "duplicate_pool"]


def test_dropped_candidates_do_not_join_the_pool():
    decisions = filter_evolved([EVALS[0], EVALS[0]], ["a", "b"], POOL, EVALS, CFG)
    assert [d.reason for d in decisions] == ["contaminated", "contaminated"]


def test_contaminated_and_its_near_misses():
    variant = EVALS[0].replace("a city bus at dawn", "a city tram at dawn")
    assert CFG.decontamination_threshold <= similarity(variant, EVALS[0]) < CFG.dedup_threshold
    assert decide(variant) == "contaminated"
    assert decide(variant, cfg=FilterConfig(decontaminate=False)) is None
    assert decide("Write an eight-line rhyming poem about a lighthouse keeper at midnight.") is None


def test_disabled_filter_drops_only_empty_outputs():
    off = FilterConfig(enabled=False)
    decisions = filter_evolved(["", "<prompt>", POOL[0], EVALS[0]], ["a", "b", POOL[0], "d"], POOL, EVALS, off)
    assert [d.reason for d in decisions] == ["empty", None, None, None]


def test_checks_run_in_order():
    assert decide("<prompt>", cfg=FilterConfig(min_chars=16)) == "too_short"
    assert decide("Sure! <prompt> Plan a trip to Lisbon for me.") == "copies_template"
    assert decide(POOL[0], parent=POOL[0]) == "duplicate_parent"  # also in the pool


def test_lsh_index_agrees_with_exact_jaccard_at_scale():
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(3000)]
    pool = [" ".join(rng.choice(vocab, 30)) for _ in range(3000)]
    index = NearDuplicateIndex(0.8, pool)
    pool_shingles = [shingles(normalize(p)) for p in pool]
    for k in range(40):
        words = pool[k].split()
        changed = k % 8  # 0..7 words changed at the end: Jaccard 1.0, 0.81, 0.75, ... 0.47
        cand = " ".join(words[: 30 - changed] + [f"new{k}_{j}" for j in range(changed)])
        cand_shingles = shingles(normalize(cand))
        expected = max(jaccard(cand_shingles, p) for p in pool_shingles) >= 0.8
        assert index.contains_near(cand) == expected, (changed, similarity(cand, pool[k]))


def test_filter_checks_lengths_of_inputs():
    with pytest.raises(ValueError, match="one parent per candidate"):
        filter_evolved(["a"], [], POOL, EVALS, CFG)
