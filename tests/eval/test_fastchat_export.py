"""The FastChat data folder evalign writes, checked field by field (no FastChat needed)."""

from __future__ import annotations

import json

import pytest

from evalign.errors import InputError
from evalign.eval.fastchat import model_name, winner, write_fastchat_bench, write_fastchat_pairwise
from evalign.eval.formats import MTQuestion, load_mt_answers, load_mt_questions, load_mt_references
from evalign.eval.judgments import GradedTurn, JudgedPair
from evalign.judge.verdicts import Verdict

# The keys of FastChat 0.2.36's play_a_match_single / play_a_match_pair records.
SINGLE_KEYS = {"question_id", "model", "judge", "user_prompt", "judgment", "score", "turn", "tstamp"}
PAIR_KEYS = {"question_id", "model_1", "model_2", "g1_winner", "g2_winner", "judge", "g1_user_prompt",
             "g1_judgment", "g2_user_prompt", "g2_judgment", "turn", "tstamp"}


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _bench(tmp_path, **kw):
    qs = [MTQuestion(1, "math", ["2+2?", "3+3?"], ["4", "6"]), MTQuestion(2, "writing", ["Poem.", "Shorter."], ["x"])]
    answers = {"hf/org:model": [["4", "6"], ["roses"]]}
    turns = {"hf/org:model": [
        GradedTurn(1, "m", 1, Verdict(score=9.5, raw="Rating: [[9.5]]"), "prompt 1"),
        GradedTurn(1, "m", 2, Verdict(parse_failed=True, raw="no idea"), "prompt 2"),
        GradedTurn(2, "m", 1, Verdict(score=7.0, raw="Rating: [[7]]"), "prompt 3"),
    ]}
    return qs, write_fastchat_bench(tmp_path, "mt_bench", qs, answers, turns, "gpt-4", tstamp=1.0, **kw)


def test_single_judgments_in_fastchats_record_format(tmp_path):
    _qs, paths = _bench(tmp_path)
    rows = _rows(paths["judgment"])
    assert paths["judgment"] == tmp_path / "data" / "mt_bench" / "model_judgment" / "gpt-4_single.jsonl"
    assert all(set(r) == SINGLE_KEYS for r in rows)
    assert [(r["question_id"], r["turn"], r["score"]) for r in rows] == [(1, 1, 9.5), (1, 2, -1), (2, 1, 7.0)]
    assert [r["judge"] for r in rows] == [["gpt-4", "evalign-single-math"], ["gpt-4", "evalign-single-math-multi-turn"],
                                          ["gpt-4", "evalign-single"]]
    assert {r["model"] for r in rows} == {"hf_org_model"}


def test_answers_questions_and_references_read_back_with_evalign_loaders(tmp_path):
    qs, paths = _bench(tmp_path)
    assert paths["answer:hf/org:model"].name == "hf_org_model.jsonl"
    assert load_mt_answers(paths["answer:hf/org:model"]) == {1: ["4", "6"], 2: ["roses"]}
    assert [q.question_id for q in load_mt_questions(paths["question"])] == [1, 2]
    # Only the reference the judge was shown: math, not the writing question's inline one.
    assert load_mt_references(paths["reference"]) == {1: ["4", "6"]}
    assert paths["reference"].name == "gpt-4.jsonl"
    first = paths["answer:hf/org:model"].read_text()
    _bench(tmp_path)
    ids = [r["answer_id"] for r in _rows(paths["answer:hf/org:model"])]
    assert ids == [r["answer_id"] for r in map(json.loads, first.splitlines())]  # content ids, stable


def test_names_that_collide_or_cannot_be_files_are_refused(tmp_path):
    qs = [MTQuestion(1, "writing", ["Q"])]
    with pytest.raises(InputError, match="both be written"):
        write_fastchat_bench(tmp_path, "mt_bench", qs, {"a/b": [["x"]], "a:b": [["y"]]}, {}, "j")
    with pytest.raises(InputError, match="bench name"):
        write_fastchat_bench(tmp_path, "../up", qs, {"a": [["x"]]}, {}, "j")
    with pytest.raises(InputError, match="one list of turns per question"):
        write_fastchat_bench(tmp_path, "mt_bench", qs, {"a": []}, {}, "j")
    with pytest.raises(InputError, match="cannot name"):
        model_name("..")


def test_winners_per_order_follow_fastchats_labels():
    assert [winner(Verdict(p_a=p)) for p in (1.0, 0.8, 0.5, 0.2, 0.0, None)] == ["A", "A", "tie", "B", "B", "error"]


def test_pair_records_map_orders_to_models(tmp_path):
    pairs = [JudgedPair("p1", "Q?", "policy", "base", "mine", "theirs",
                        Verdict(p_a=1.0, raw="[[A>B]]"), Verdict(p_a=1.0, raw="[[A>B]]"), "g1 prompt", "g2 prompt"),
             JudgedPair("p2", "R?", "policy", "base", "mine2", "theirs2",
                        Verdict(p_a=0.0), Verdict(parse_failed=True), "g1", "g2")]
    paths = write_fastchat_pairwise(tmp_path, "winrate", pairs, "gpt-4", {"p1": "coding"}, tstamp=0.0)
    rows = _rows(paths["judgment"])
    assert all(set(r) == PAIR_KEYS for r in rows)
    # p1: the model wins shown first, the baseline wins shown first: a split.
    assert [(r["g1_winner"], r["g2_winner"]) for r in rows] == [("model_1", "model_2"), ("model_2", "error")]
    assert rows[0]["g1_user_prompt"] == "g1 prompt" and rows[0]["g2_judgment"] == "[[A>B]]"
    assert [(q["question_id"], q["category"], q["turns"]) for q in _rows(paths["question"])] == [
        ("p1", "coding", ["Q?"]), ("p2", "general", ["R?"])]
    assert load_mt_answers(paths["answer:base"]) == {"p1": ["theirs"], "p2": ["theirs2"]}
