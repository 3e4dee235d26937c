"""What a faithful evolution adds survives parsing and filtering: a constraint written as a
note, a label the prompt had, 20 words added to a long prompt, a long task prompt."""

from __future__ import annotations

import numpy as np
import pytest

from evalign.backends.base import GenParams
from evalign.backends.scripted import ScriptedLLM
from evalign.config import FilterConfig
from evalign.creator import Parent, evolve, filter_evolved, parse_prompt
from evalign.creator.filters import NearDuplicateIndex, answers_prompt, is_near_duplicate, new_words, similarity
from evalign.creator.operators import is_note_about_rewrite

CFG = FilterConfig()
SORT = "Write a Python function that sorts a list."
TASK_NOTE = "Note: the solution must run in O(n log n) time and use O(1) extra memory."
LONG = (
    "I want to build a small garden shed at the back of my plot, about three metres by two, on ground that "
    "slopes gently towards the house and gets waterlogged after heavy rain. I have basic carpentry skills, "
    "a circular saw, a drill and a spirit level, and a friend who can help on two weekends. The shed will "
    "hold a lawnmower, two bicycles and garden tools, so it needs a wide door and a floor that can take "
    "some weight. Local rules allow buildings under two and a half metres high without a permit, and I "
    "would like a sloping roof that sheds rain away from the neighbour's fence. My budget is around nine "
    "hundred euros for materials. Write a step-by-step plan that covers the foundation, the floor, the "
    "walls, the roof and the door, with a rough cost and time estimate for each stage."
)  # 146 words
ADDED = " Each step must also name the tool it needs, the time it takes and one mistake that beginners often make there."
IN_THIS_TASK = (
    "In this task, you will be presented with a question that has an ambiguous answer, together with two "
    "possible interpretations of it written by different annotators. Read both interpretations carefully "
    "and compare them with the original wording of the question, paying attention to pronouns and to the "
    "scope of each quantifier. You should write the number of the interpretation that a typical speaker "
    "would most likely intend, followed by one sentence that explains your choice."
)


def decide(text, parent, pool=(), evals=(), cfg=CFG):
    [d] = filter_evolved([text], [parent], [parent, *pool], list(evals), cfg)
    return d.reason


# ------------------------------------------------------------------ defect 1: the parser


def test_a_constraint_written_as_a_note_is_part_of_the_prompt():
    raw = f"{SORT}\n\n{TASK_NOTE}"
    assert parse_prompt(raw, SORT) == raw
    assert decide(parse_prompt(raw, SORT), SORT) is None


@pytest.mark.parametrize(
    "note",
    [
        "Note: I added a constraint about the running time.",
        "Explanation: the rewritten prompt now asks for the running time.",
        "This rewritten prompt adds a requirement on the running time.",
        "(Note: compared to the original, it asks for the running time.)",
        "Changes made: I've specified the running time.",
    ],
)
def test_a_note_about_the_rewrite_is_stripped(note):
    child = SORT.replace("a list.", "a list in O(n log n) time.")
    assert parse_prompt(f"{child}\n\n{note}", SORT) == child
    assert is_note_about_rewrite(note)


@pytest.mark.parametrize(
    "note",
    [
        TASK_NOTE,
        "Note: the new function must keep equal elements in their original order.",
        "The prompt should be under 40 words.",  # a task that asks for an image prompt
        "Note: an additional requirement is that the list may contain None.",
    ],
)
def test_a_note_that_belongs_to_the_task_is_kept(note):
    assert not is_note_about_rewrite(note)
    assert parse_prompt(f"{SORT}\n\n{note}", SORT) == f"{SORT}\n\n{note}"


def test_a_note_the_parent_already_had_is_kept():
    parent = "Fix the crash in the script below.\n\nNote: I have included the full traceback in the rewritten log."
    child = parent.replace("Fix the crash", "Fix the crash on Windows")
    assert is_note_about_rewrite(parent.split("\n\n")[1])  # on its own it reads like a remark
    assert parse_prompt(child, parent) == child


@pytest.mark.parametrize(
    "raw",
    ["Rewritten Prompt: {p}", "#Rewritten Prompt#:\n{p}", "New prompt: {p}", "**Revised prompt:** {p}", "Prompt: {p}"],
)
def test_meta_labels_are_stripped(raw):
    text = "Write a limerick about a cat who codes in Rust."
    assert parse_prompt(raw.format(p=text), "Write a limerick about a cat.") == text


def test_a_label_of_the_prompt_itself_is_kept():
    assert parse_prompt("Question: Which planet has the most moons?", "Name a planet.") == (
        "Question: Which planet has the most moons?"
    )
    parent = "Prompt: a watercolour of a fox."
    assert parse_prompt("Prompt: a watercolour of a fox in the snow.", parent) == "Prompt: a watercolour of a fox in the snow."
    assert parse_prompt("Here is my question: why is the sea salty?") == "Here is my question: why is the sea salty?"


def test_the_chain_continues_from_the_evolved_text():
    def creator(conversation, seed):
        inner = conversation[-1]["content"].split("<prompt>\n")[1].split("\n</prompt>")[0]
        return f"{inner}\n\n{TASK_NOTE}" if TASK_NOTE not in inner else f"{inner} Add tests."

    out = evolve([Parent(1, SORT)], ScriptedLLM(creator), "evol_complexity", 2, GenParams(max_new_tokens=99), seed=0)
    assert [e.text for e in out] == [f"{SORT}\n\n{TASK_NOTE}", f"{SORT}\n\n{TASK_NOTE} Add tests."]


# ------------------------------------------------------------------ defect 2: novelty


def test_twenty_words_added_to_a_150_word_prompt_pass():
    assert len(LONG.split()) == 146 and len(ADDED.split()) == 21
    child = LONG + ADDED
    assert similarity(child, LONG) >= CFG.dedup_threshold  # Jaccard alone called it a duplicate
    assert new_words(child, LONG) == len(ADDED.split())
    assert decide(child, LONG) is None
    middle = LONG.replace("My budget is", ADDED.strip() + " My budget is")
    assert decide(middle, LONG) is None


def test_replacements_count_as_new_words():
    child = LONG.replace("garden shed", "two-storey timber garden shed with a green roof")
    assert new_words(child, LONG) == 6  # twostorey timber, with a green roof
    assert decide(child, LONG) is None


def test_what_adds_almost_nothing_is_still_a_duplicate():
    assert decide(LONG.upper().replace(".", "!"), LONG) == "duplicate_parent"
    assert decide(LONG.replace("Write the plan", "Please write the plan"), LONG) == "duplicate_parent"
    assert decide(LONG.replace(" My budget is around nine hundred euros for materials.", ""), LONG) == (
        "duplicate_parent"  # a deletion adds nothing
    )


def test_two_near_equal_children_keep_only_the_first():
    a, b = LONG + ADDED, LONG + ADDED.replace("often make", "usually make")
    decisions = filter_evolved([a, b], [LONG, LONG], [LONG], [], CFG)
    assert [d.reason for d in decisions] == [None, "duplicate_pool"]
    c = LONG + " Include a bill of materials sorted by supplier, with the delivery time of each item."
    assert filter_evolved([a, c], [LONG, LONG], [LONG], [], CFG)[1].kept  # different additions


def test_an_evaluation_prompt_plus_a_constraint_is_still_contaminated():
    child = LONG + ADDED
    assert decide(child, "Plan a shed.", evals=[LONG]) == "contaminated"


def test_min_new_words_is_the_bar():
    child = LONG + " Use metric units only."
    assert decide(child, LONG) is None
    assert decide(child, LONG, cfg=FilterConfig(min_new_words=5)) == "duplicate_parent"


def test_lsh_index_agrees_with_the_exact_test():
    rng = np.random.default_rng(3)
    vocab = [f"w{i}" for i in range(400)]
    pool = [" ".join(rng.choice(vocab, 150)) for _ in range(60)]
    queries = []
    for text in pool[:30]:
        words = text.split()
        k = int(rng.integers(0, 25))
        at = int(rng.integers(0, len(words)))
        queries.append(" ".join(words[:at] + list(rng.choice(vocab, k)) + words[at:]))
    index = NearDuplicateIndex(CFG.dedup_threshold, pool, CFG.min_new_words)
    for q in queries:
        exact = any(is_near_duplicate(q, p, CFG.dedup_threshold, CFG.min_new_words) for p in pool)
        assert index.contains_near(q) == exact
    assert {index.contains_near(q) for q in queries} == {True, False}


# ------------------------------------------------------------------ defect 3: answers


@pytest.mark.parametrize(
    "text",
    [
        IN_THIS_TASK,
        IN_THIS_TASK.replace("You should write", "Your answer is"),
        LONG + ADDED,
        "Using the sales figures below, " + "the region and month of every sale are listed in order. " * 6
        + "identify the month with the highest growth.",
        "Given a paragraph from a contract and a clause number, " + "the paragraph may refer to other clauses. " * 8
        + "Output the numbers of all clauses it depends on.",
    ],
)
def test_long_task_prompts_are_not_answers(text):
    assert len(text.split()) >= 60
    assert not answers_prompt(text)


@pytest.mark.parametrize(
    "text",
    [
        "Sure! Here is a sorting function that runs in O(n log n) time.",
        "Certainly, the answer is Canberra, chosen as a compromise between Sydney and Melbourne.",
        "The answer is 42.",
        "Here are some tips for growing tomatoes: water them every morning.",
        "def sort_list(xs):\n    return sorted(xs)",
        "```python\nimport heapq\n\ndef k_smallest(xs, k):\n    return heapq.nsmallest(k, xs)\n```",
        "def sort_list(xs):\n    return sorted(xs)\n\nThis runs in O(n log n).",
        "Water balcony tomatoes every morning so the leaves dry during the day. " * 3
        + "Choose a bush variety, add a stake early and keep the soil moist. " * 3
        + "Move the pots out of strong wind and feed them every two weeks.",
    ],
)
def test_answers_are_still_answers(text):
    assert answers_prompt(text)


@pytest.mark.parametrize(
    "text",
    [
        "def f(xs):\n    return xs.sort()\n\nWhy does this return None?",
        "def f(xs):\n    return xs.sort()\n\nExplain what this function returns.",
        "import os\nprint(os.getcwd())\nRewrite this with pathlib.",
    ],
)
def test_code_with_a_request_is_a_prompt(text):
    assert not answers_prompt(text)


# ------------------------------------------------------------------ self_instruct's budget


class ParamsRecordingLLM(ScriptedLLM):
    def __init__(self, generate_fn):
        super().__init__(generate_fn)
        self.params: list[GenParams] = []

    def generate(self, conversations, params, seeds):
        self.params.append(params)
        return super().generate(conversations, params, seeds)


def test_self_instruct_gets_a_token_budget_per_query():
    params = GenParams(max_new_tokens=64)
    llm = ParamsRecordingLLM(lambda c, s: "1. What is a shed?\n2. Plan a fence.\n3. Why paint wood?")
    out = evolve([Parent(1, SORT)], llm, "self_instruct", 3, params, seed=0)
    assert [p.max_new_tokens for p in llm.params] == [3 * 64] and len(out) == 3
    chained = ParamsRecordingLLM(lambda c, s: SORT + " Add tests.")
    evolve([Parent(1, SORT)], chained, "evol_instruct", 3, params, seed=0)
    assert [p.max_new_tokens for p in chained.params] == [64, 64, 64]


def test_self_instruct_asks_for_short_requests():
    from evalign.creator import templates as T

    assert "one or two sentences" in T.NEW_QUERIES
