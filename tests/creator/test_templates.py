"""Every clause of the originals' meta-prompts (WizardLM's Evol-Instruct, Deita's EvolQuality,
distilabel's SelfInstruct) is in evalign's templates, so an edit that drops one fails here.
docs/paper.md lists the same clauses, operator by operator."""

from __future__ import annotations

import re

import pytest

from evalign.creator import OPERATORS
from evalign.creator import templates as T
from evalign.creator.operators import operator_label

#: clause -> phrases (regexes, case-insensitive) that carry its intent
CLAUSES = {
    # shared by every template: the prompt is data, the reply is the new text alone
    "prompt_is_data": [r"as data only", r"do not follow any instruction"],
    "reply_alone": [r"reply with .*only|and nothing else"],
    # Evol-Instruct's in-depth meta-prompt
    "more_complex": [r"more complex version"],
    "a_bit_harder_for_ai": [r"well-known AI systems", r"a bit harder"],
    "reasonable_for_humans": [r"reasonable", r"human must be able to understand it and answer it"],
    "keep_non_text_parts": [r"non-text part", r"tables and code"],
    "keep_the_input": [r"keep any input"],
    "not_verbose": [r"not make it verbose", r"add only 10 to 20 words"],
    "no_meta_words": [r'"the given prompt"', r'"the rewritten prompt"'],
    "standalone": [r"make sense on its own"],
    # the five Evol-Instruct methods
    "add_constraint": [r"one more constraint or requirement"],
    "deepen": [r"if the prompt asks about particular issues", r"more depth and breadth"],
    "concretize": [r"general concepts", r"more specific"],
    "add_reasoning": [r"only a few simple thinking steps", r"explicitly for reasoning in several steps"],
    "in_breadth": [r"do not rewrite the prompt", r"inspiration", r"brand-new prompt", r"same domain",
                   r"rarer", r"similar length and complexity"],
    # EvolQuality, prompt side
    "higher_quality_answer": [r"higher-quality answer", r"a good answer to it must be"],
    "helpfulness": [r"more helpful to the user"],
    "relevance": [r"more relevant to what the prompt asks"],
    "depth": [r"more in-depth"],
    "creativity": [r"more creative"],
    "detail": [r"more detailed"],
    # SelfInstruct's criteria
    "n_queries_on_the_subject": [r"write \d+ new requests", r"example's subject"],
    "text_only": [r"text-only AI assistant"],
    "one_or_two_sentences": [r"one or two sentences"],
    "self_contained": [r"each must make sense on its own"],
    "questions_and_instructions": [r"mix questions and instructions"],
    "varied_verbs_and_structure": [r"different verbs", r"vary how the sentences are built"],
}

_IN_DEPTH_META = ["prompt_is_data", "reply_alone", "more_complex", "a_bit_harder_for_ai", "reasonable_for_humans",
                  "keep_non_text_parts", "keep_the_input", "not_verbose", "no_meta_words", "standalone"]
_IN_BREADTH_META = ["prompt_is_data", "reply_alone", "reasonable_for_humans", "no_meta_words", "standalone"]
_QUALITY_META = ["prompt_is_data", "reply_alone", "higher_quality_answer", "reasonable_for_humans",
                 "keep_non_text_parts", "keep_the_input", "not_verbose", "no_meta_words", "standalone"]

#: (operator, mutation) -> the clauses its template must carry
EXPECTED = {
    **{(op, m): [*_IN_DEPTH_META, m] for op in ("evol_instruct", "evol_complexity") for m in T.IN_DEPTH},
    ("evol_instruct", "in_breadth"): [*_IN_BREADTH_META, "in_breadth"],
    **{("evol_quality", m): [*_QUALITY_META, m] for m in T.QUALITY},
    ("self_instruct", "new_queries"): ["prompt_is_data", "reply_alone", "n_queries_on_the_subject", "text_only",
                                       "one_or_two_sentences", "self_contained", "questions_and_instructions",
                                       "varied_verbs_and_structure"],
}


def missing_clauses(template: str, clauses: list[str]) -> list[str]:
    text = " ".join(template.replace("{n}", "3").split())
    return [c for c in clauses if not all(re.search(p, text, re.I) for p in CLAUSES[c])]


def test_every_registered_template_is_checked():
    assert set(EXPECTED) == {(op.name, m) for op in OPERATORS.values() for m in op.templates}


@pytest.mark.parametrize("key", sorted(EXPECTED), ids=[f"{o}-{m}" for o, m in sorted(EXPECTED)])
def test_template_keeps_every_clause_of_its_original(key):
    operator, mutation = key
    assert missing_clauses(OPERATORS[operator].templates[mutation], EXPECTED[key]) == []


@pytest.mark.parametrize("clause", _IN_DEPTH_META[2:] + ["add_reasoning"])
def test_dropping_a_clause_line_is_caught(clause):
    template = OPERATORS["evol_instruct"].templates["add_reasoning"]
    pattern = CLAUSES[clause][-1]
    kept = [line for line in template.splitlines() if not re.search(pattern, line, re.I)]
    assert len(kept) < len(template.splitlines())  # the clause sits on a line of its own
    assert clause in missing_clauses("\n".join(kept), EXPECTED[("evol_instruct", "add_reasoning")])


def test_a_method_is_not_dressed_as_another():
    """Each method's wording is its own: deepen's template does not also ask for reasoning steps."""
    for op in ("evol_instruct", "evol_complexity"):
        templates = OPERATORS[op].templates
        for m in T.IN_DEPTH:
            others = [o for o in T.IN_DEPTH if o != m]
            assert missing_clauses(templates[m], others) == others, (op, m)
    assert missing_clauses(OPERATORS["evol_instruct"].templates["in_breadth"], ["more_complex", "keep_the_input"]) \
        == ["more_complex", "keep_the_input"]


def test_one_sentence_limit_is_stated_once():
    assert len(re.findall(r"one or two sentences", T.NEW_QUERIES, re.I)) == 1


def test_reports_label_evol_quality_as_an_adaptation():
    assert operator_label("evol_quality") == "evol_quality (prompt-side adaptation)"
    assert operator_label("evol_instruct") == "evol_instruct"
    assert operator_label("an_old_operator") == "an_old_operator"


@pytest.mark.parametrize("key", sorted(EXPECTED), ids=[f"{o}-{m}" for o, m in sorted(EXPECTED)])
def test_the_scripted_creator_reads_the_prompt_of_every_template(key):
    """The stand-in creator of CPU tests rewrites the tagged prompt, not the tags' mention in prose."""
    from evalign.backends.scripted import rewrite_generate
    from evalign.creator.operators import render

    operator, mutation = key
    conversation = render(OPERATORS[operator].templates[mutation], "Why is the sky blue?", n=3)
    assert rewrite_generate(conversation, seed=1).startswith("Why is the sky blue? Answer in exactly")
