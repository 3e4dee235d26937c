"""MT-Bench as FastChat 0.2.36 runs it, without FastChat installed: which reference the judge
sees, how a generated grade is read, how the average is taken, at which temperature answers
are sampled."""

from __future__ import annotations

import json

import pytest

from evalign.backends.base import GenParams
from evalign.backends.scripted import ScriptedLLM
from evalign.config.schema import EvalConfig
from evalign.eval.answers import answer_all
from evalign.eval.formats import MTQuestion
from evalign.eval.mt_bench import NEED_REF_CATS, answer_temperature
from evalign.eval.score import grade_items, judge_scores, turn_mean
from evalign.eval.sets import EvalPrompt, load_mt_questions
from evalign.judge import Judge
from evalign.judge.prompts import GRADE_VERSION
from evalign.judge.verdicts import parse_grade


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _official_like(tmp_path):
    """A question file whose inline references differ from the reference file, as the official one does."""
    questions = _jsonl(tmp_path / "question.jsonl", [
        {"question_id": 111, "category": "math", "turns": ["Area of the triangle?", "Its circle?"],
         "reference": ["inline 1", "inline 2"]},
        {"question_id": 81, "category": "writing", "turns": ["Write a blog post.", "Rewrite it."],
         "reference": ["inline writing 1", "inline writing 2"]},
        {"question_id": 131, "category": "extraction", "turns": ["Extract.", "Again."]},
    ])
    refs = _jsonl(tmp_path / "gpt-4.jsonl", [
        {"question_id": 111, "answer_id": "x", "model_id": "gpt-4",
         "choices": [{"index": 0, "turns": ["file 1", "file 2"]}]},
    ])
    return questions, refs


def test_the_reference_file_wins_over_inline_references(tmp_path):
    questions, refs = _official_like(tmp_path)
    by_id = {q.question_id: q for q in load_mt_questions(str(questions), str(refs))}
    assert by_id[111].reference == ["file 1", "file 2"]
    items, where = grade_items(list(by_id.values()), [["a", "b"]] * 3)
    shown = {(list(by_id)[qi], t): item.reference for item, (qi, t) in zip(items, where)}
    assert shown[(111, 0)] == "file 1" and shown[(111, 1)] == "file 2"


def test_references_are_shown_only_in_fastchats_reference_categories(tmp_path):
    questions, _ = _official_like(tmp_path)
    qs = load_mt_questions(str(questions))
    items, where = grade_items(qs, [["a", "b"]] * 3)
    shown = {(qs[qi].category, t): item.reference for item, (qi, t) in zip(items, where)}
    assert shown[("math", 0)] == "inline 1"  # no file: the inline one, in a reference category
    assert shown[("writing", 0)] is None and shown[("writing", 1)] is None  # FastChat never shows it


def test_builtin_set_carries_references_exactly_in_the_reference_categories():
    qs = load_mt_questions("builtin:mt")
    with_ref = {q.category for q in qs if q.reference}
    assert with_ref == {"math", "reasoning", "coding"} and with_ref <= set(NEED_REF_CATS)
    items, where = grade_items(qs, [["a", "b"]] * len(qs))
    for item, (qi, _t) in zip(items, where):
        assert (item.reference is not None) == (qs[qi].category in NEED_REF_CATS)


@pytest.mark.parametrize("text, score", [
    ("The answer is fine. Rating: [[9.5]]", 9.5),
    ("Rating: [[10]]", 10.0),
    ("Rating: [[7.]]", 7.0),
    ("Rating: [[3]] on reflection [[8]]", 3.0),   # the first match, as re.search
    ("Rating: [6]", 6.0),                         # one_score_pattern_backup
    ("Rating: [6] and later [[4]]", 4.0),         # the double-bracket pattern is tried first
    ("Rating: [[ 7 ]]", None),                    # neither pattern allows spaces
    ("Rating: 7/10", None),
])
def test_grades_are_read_with_fastchats_patterns(text, score):
    v = parse_grade(text)
    assert (v.score if v else None) == score


def test_generated_half_point_grades_reach_the_average_and_change_the_grade_version():
    llm = ScriptedLLM(generate_fn=lambda conv, seed: "Good. Rating: [[9.5]]")
    judge = Judge(llm, mode="generate")
    sc = judge_scores(judge, [MTQuestion(1, "writing", ["Write.", "Shorter."])], [["x", "y"]], n_boot=50)
    assert sc.estimate.value == 9.5 and sc.scores == [[9.5, 9.5]]
    # The parser is part of a generated grade's version; log-prob grades keep theirs.
    assert judge.grade_version != Judge(llm, mode="logprobs").grade_version
    assert Judge(llm, mode="logprobs", screen=False).grade_version == GRADE_VERSION


def test_average_is_over_graded_turns_not_question_means():
    scores = [[8.0, None], [4.0, 6.0], [None, None]]
    avg = turn_mean(scores, None, n_boot=200)
    assert avg.value == pytest.approx(6.0)  # (8 + 4 + 6) / 3; per-question means would give 6.5
    assert avg.n == 2  # questions with a graded turn: the bootstrap's unit
    assert turn_mean(scores, 0, n_boot=50).value == pytest.approx(6.0)
    assert turn_mean(scores, 1, n_boot=50).value == pytest.approx(6.0) and turn_mean(scores, 1, n_boot=50).n == 1
    assert avg.ci_low <= avg.value <= avg.ci_high
    assert turn_mean([[None]], None) is None


def test_an_unparsed_grade_is_left_out_of_the_average():
    def judge_says(conv, seed):
        text = conv[-1]["content"]
        return "no verdict" if "Second" in text and "Earlier turns" in text else (
            "Rating: [[8]]" if "First" in text else "Rating: [[4]]")

    qs = [MTQuestion(1, "writing", ["First", "Second"]), MTQuestion(2, "stem", ["Other", "More"])]
    sc = judge_scores(Judge(ScriptedLLM(generate_fn=judge_says), mode="generate", parse_retries=0), qs,
                      [["a", "b"], ["c", "d"]], n_boot=50)
    assert sc.scores == [[8.0, None], [4.0, 4.0]] and sc.parse_failures == 1 and sc.graded_turns == 3
    assert sc.estimate.value == pytest.approx(16 / 3) and sc.turn2.value == pytest.approx(4.0)


class _ParamsLLM(ScriptedLLM):
    def __init__(self):
        super().__init__()
        self.seen: dict[str, list[float]] = {}

    def generate(self, conversations, params, seeds):
        for conv in conversations:
            self.seen.setdefault(conv[0]["content"], []).append(params.temperature)
        return super().generate(conversations, params, seeds)


def test_mt_answers_use_fastchats_temperature_per_category_and_win_rate_prompts_keep_theirs():
    qs = [MTQuestion(i, cat, [f"{cat} q", f"{cat} follow-up"]) for i, cat in
          enumerate(["math", "coding", "reasoning", "extraction", "stem", "humanities", "writing", "roleplay",
                     "travel"])]
    llm = _ParamsLLM()
    answer_all(llm, [EvalPrompt("p1", "math", "a win-rate prompt")], qs, GenParams(64, 0.9, 0.95), 0, None)
    expected = {"math": 0.0, "coding": 0.0, "reasoning": 0.0, "extraction": 0.0, "stem": 0.1,
                "humanities": 0.1, "writing": 0.7, "roleplay": 0.7, "travel": 0.7}
    assert {q.category: llm.seen[f"{q.category} q"] for q in qs} == {c: [t, t] for c, t in expected.items()}
    assert llm.seen["a win-rate prompt"] == [0.9]
    fixed = _ParamsLLM()
    answer_all(fixed, [], qs, GenParams(64, 0.9, 0.95), 0, None, mt_temperatures="fixed")
    assert all(ts == [0.9, 0.9] for ts in fixed.seen.values())


def test_the_config_defaults_to_fastchats_temperatures_and_checks_the_name():
    assert EvalConfig().mt_temperatures == "fastchat"
    with pytest.raises(ValueError):
        EvalConfig(mt_temperatures="per-category")
    with pytest.raises(ValueError):
        answer_temperature("math", "per-category", 0.7)  # type: ignore[arg-type]


class _EachLLM(ScriptedLLM):
    def __init__(self):
        super().__init__()
        self.batches: list[list[float]] = []

    def generate_each(self, conversations, params, seeds):
        self.batches.append([p.temperature for p in params])
        return super().generate_each(conversations, params, seeds)


def test_mixed_temperatures_go_to_the_backend_in_one_batch_per_turn_and_are_cached_per_row(tmp_path):
    from evalign.store import RunStore

    qs = [MTQuestion(i, cat, [f"{cat} q", f"{cat} follow-up"]) for i, cat in enumerate(["math", "stem", "writing"])]
    prompts = [EvalPrompt("p1", "math", "a win-rate prompt"), EvalPrompt("p2", "writing", "another")]
    with RunStore(tmp_path) as store:
        llm = _EachLLM()
        first = answer_all(llm, prompts, qs, GenParams(64, 0.9, 0.95), 0, store)
        assert llm.batches == [[0.9, 0.9, 0.0, 0.1, 0.7], [0.0, 0.1, 0.7]]
        again = _EachLLM()
        assert answer_all(again, prompts, qs, GenParams(64, 0.9, 0.95), 0, store) == first
        assert again.batches == [] and again.requests == []
        # a row's cache key holds its own params: the fixed-temperature answers are new ones
        fixed = _EachLLM()
        answer_all(fixed, prompts, qs, GenParams(64, 0.9, 0.95), 0, store, mt_temperatures="fixed")
        assert fixed.batches == [[0.9, 0.9, 0.9], [0.9, 0.9, 0.9]]
