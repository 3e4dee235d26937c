"""Benchmark file formats: round trips, both Arena-Hard versions, judgments -> pairs, errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from evalign.errors import InputError
from evalign.eval.formats import (
    export_alpaca_outputs,
    export_arena_answers,
    export_mt_answers,
    field,
    labeled_pairs_from_mt_judgments,
    load_alpaca,
    load_arena_answers,
    load_arena_questions,
    load_labeled_pairs,
    load_mt_answers,
    load_mt_questions,
    load_mt_references,
    read_jsonl,
)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# --- MT-Bench ---------------------------------------------------------------------------


def test_mt_questions_with_and_without_reference(tmp_path):
    path = write_jsonl(tmp_path / "question.jsonl", [
        {"question_id": 81, "category": "writing", "turns": ["Write a blog post.", "Rewrite it."]},
        {"question_id": 111, "category": "math", "turns": ["2+2?", "3+3?"], "reference": ["4", "6"]},
    ])
    q1, q2 = load_mt_questions(path)
    assert (q1.question_id, q1.category, q1.reference) == (81, "writing", None)
    assert q1.turns == ["Write a blog post.", "Rewrite it."]
    assert q2.reference == ["4", "6"]


def test_mt_answers_round_trip(tmp_path):
    answers = {81: ["Héllo wörld", "Second turn"], 82: ["Only one turn\nwith a newline"]}
    path = tmp_path / "model_answer" / "my-model.jsonl"
    export_mt_answers(answers, "my-model", path)
    assert load_mt_answers(path) == answers
    row = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert set(row) == {"question_id", "answer_id", "model_id", "choices", "tstamp"}
    assert row["model_id"] == "my-model" and row["choices"] == [{"index": 0, "turns": answers[81]}]
    assert [p.name for p in path.parent.iterdir()] == ["my-model.jsonl"]  # no temp file left


def test_mt_answer_ids_are_deterministic(tmp_path):
    export_mt_answers({1: ["a"]}, "m", tmp_path / "a.jsonl")
    export_mt_answers({1: ["a"]}, "m", tmp_path / "b.jsonl")
    ids = [json.loads((tmp_path / f).read_text())["answer_id"] for f in ("a.jsonl", "b.jsonl")]
    assert ids[0] == ids[1]


def test_mt_references(tmp_path):
    path = write_jsonl(tmp_path / "gpt-4.jsonl", [
        {"question_id": 101, "answer_id": "x", "model_id": "gpt-4",
         "choices": [{"index": 0, "turns": ["ref one", "ref two"]}], "tstamp": 1.0},
    ])
    assert load_mt_references(path) == {101: ["ref one", "ref two"]}


# --- Arena-Hard -------------------------------------------------------------------------


def test_arena_questions_v01_and_v20(tmp_path):
    v01 = write_jsonl(tmp_path / "v01.jsonl", [
        {"question_id": "abc123", "category": "arena-hard-v0.1", "cluster": "Python",
         "turns": [{"content": "Sort a list."}]},
    ])
    v20 = write_jsonl(tmp_path / "v20.jsonl", [
        {"uid": "u1", "category": "hard_prompt", "subcategory": "coding", "language": "en",
         "prompt": "Write a parser."},
    ])
    (q1,) = load_arena_questions(v01)
    (q2,) = load_arena_questions(v20)
    assert (q1.question_id, q1.category, q1.prompt, q1.subcategory, q1.version) == (
        "abc123", "arena-hard-v0.1", "Sort a list.", "Python", "v0.1")
    assert (q2.question_id, q2.category, q2.prompt, q2.subcategory, q2.version) == (
        "u1", "hard_prompt", "Write a parser.", "coding", "v2.0")


def test_arena_answers_v01_and_v20(tmp_path):
    v01 = write_jsonl(tmp_path / "v01.jsonl", [
        {"question_id": "q1", "answer_id": "a", "model_id": "m", "tstamp": 0,
         "choices": [{"index": 0, "turns": [{"content": "answer one", "token_len": 2}]}]},
    ])
    v20 = write_jsonl(tmp_path / "v20.jsonl", [
        {"uid": "u1", "ans_id": "a", "model": "m", "tstamp": 0, "messages": [
            {"role": "user", "content": "hi"}, {"role": "assistant", "content": {"answer": "structured"}}]},
        {"uid": "u2", "ans_id": "b", "model": "m", "tstamp": 0, "messages": [
            {"role": "user", "content": "hi"}, {"role": "assistant", "content": "plain"}]},
    ])
    assert load_arena_answers(v01) == {"q1": "answer one"}
    assert load_arena_answers(v20) == {"u1": "structured", "u2": "plain"}


def test_arena_answers_round_trip_with_token_len(tmp_path):
    path = tmp_path / "model.jsonl"
    export_arena_answers({"q1": "first", "q2": "second"}, "m", path, token_lens={"q1": 7})
    assert load_arena_answers(path) == {"q1": "first", "q2": "second"}
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows[0]["choices"][0]["turns"][0]["token_len"] == 7
    assert rows[0]["conv_metadata"] == {"token_len": 7}
    assert "conv_metadata" not in rows[1]


# --- AlpacaEval -------------------------------------------------------------------------


def test_alpaca_round_trip(tmp_path):
    path = tmp_path / "model_outputs.json"
    answers = {"Name a colour.": "Blue.", "Say hi in French.": "Salut !"}
    export_alpaca_outputs(answers, "my-gen", path)
    loaded = load_alpaca(path)
    assert loaded == [
        {"instruction": "Name a colour.", "output": "Blue.", "generator": "my-gen", "dataset": "evalign"},
        {"instruction": "Say hi in French.", "output": "Salut !", "generator": "my-gen", "dataset": "evalign"},
    ]


def test_alpaca_keeps_dataset_and_reports_item(tmp_path):
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps([
        {"instruction": "i", "output": "o", "generator": "g", "dataset": "helpful_base"},
        {"instruction": "i2", "generator": "g"},
    ]))
    with pytest.raises(InputError, match=r"outputs\.json item 2: missing field 'output'"):
        load_alpaca(path)
    path.write_text(json.dumps([{"instruction": "i", "output": "o", "generator": "g", "dataset": "helpful_base"}]))
    assert load_alpaca(path)[0]["dataset"] == "helpful_base"


def test_alpaca_not_a_list(tmp_path):
    path = tmp_path / "outputs.json"
    path.write_text('{"instruction": "i"}')
    with pytest.raises(InputError, match="expected a JSON list, got dict"):
        load_alpaca(path)


# --- MT-Bench judgments -> labeled pairs ------------------------------------------------


def mt_fixture(tmp_path: Path) -> tuple[Path, Path, Path]:
    questions = write_jsonl(tmp_path / "question.jsonl", [
        {"question_id": 1, "category": "writing", "turns": ["Q1 turn 1", "Q1 turn 2"]},
        {"question_id": 2, "category": "math", "turns": ["Q2 turn 1", "Q2 turn 2"]},
    ])
    answers_dir = tmp_path / "model_answer"
    for model in ("a", "b", "c"):
        answers = {1: [f"{model} on q1", "t2"], 2: [f"{model} on q2", "t2"]}
        export_mt_answers(answers, model, answers_dir / f"{model}.jsonl")
    judge = ["gpt-4", "single-v1"]
    judgments = write_jsonl(tmp_path / "gpt-4_single.jsonl", [
        {"question_id": 1, "model": "a", "judge": judge, "score": 9.0, "turn": 1},
        {"question_id": 1, "model": "b", "judge": judge, "score": 7.0, "turn": 1},  # gap 2.0 to a: kept
        {"question_id": 1, "model": "c", "judge": judge, "score": 8.0, "turn": 1},  # gap 1.0 / 1.0: dropped
        {"question_id": 1, "model": "b", "judge": judge, "score": 1.0, "turn": 2},  # turn 2: ignored
        {"question_id": 2, "model": "a", "judge": judge, "score": 2, "turn": 1},
        {"question_id": 2, "model": "b", "judge": judge, "score": -1, "turn": 1},  # unparsable: ignored
        {"question_id": 2, "model": "c", "judge": judge, "score": 10, "turn": 1},
    ])
    return judgments, answers_dir, questions


def test_judgments_to_pairs_threshold(tmp_path):
    pairs = labeled_pairs_from_mt_judgments(*mt_fixture(tmp_path), threshold=2.0)
    got = sorted((p.prompt, p.better, p.worse, p.category, p.better_score, p.worse_score) for p in pairs)
    assert got == [
        ("Q1 turn 1", "a on q1", "b on q1", "writing", 9.0, 7.0),
        ("Q2 turn 1", "c on q2", "a on q2", "math", 10.0, 2.0),
    ]
    assert all(p.source == "mt_bench:gpt-4_single.jsonl" for p in pairs)


def test_judgments_to_pairs_higher_threshold(tmp_path):
    pairs = labeled_pairs_from_mt_judgments(*mt_fixture(tmp_path), threshold=3.0)
    assert [(p.better, p.worse) for p in pairs] == [("c on q2", "a on q2")]
    with pytest.raises(ValueError):
        labeled_pairs_from_mt_judgments(*mt_fixture(tmp_path), threshold=0)


def test_judgments_missing_answer_file_and_answer(tmp_path):
    judgments, answers_dir, questions = mt_fixture(tmp_path)
    (answers_dir / "c.jsonl").unlink()
    with pytest.raises(InputError, match=r"c\.jsonl: file not found"):
        labeled_pairs_from_mt_judgments(judgments, answers_dir, questions)
    export_mt_answers({1: ["c on q1"]}, "c", answers_dir / "c.jsonl")
    with pytest.raises(InputError, match=r"c\.jsonl: no answer for question_id 2"):
        labeled_pairs_from_mt_judgments(judgments, answers_dir, questions)


def test_judgments_unknown_question(tmp_path):
    judgments, answers_dir, questions = mt_fixture(tmp_path)
    write_jsonl(questions, [{"question_id": 1, "category": "writing", "turns": ["Q1"]}])
    with pytest.raises(InputError, match=r"question\.jsonl: no question_id 2"):
        labeled_pairs_from_mt_judgments(judgments, answers_dir, questions)


def test_load_labeled_pairs(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [
        {"id": "p1", "category": "coding", "prompt": "P", "better": "good", "worse": "bad",
         "difficulty": "hard", "flaw": "off-by-one", "better_score": 9, "worse_score": 3},
        {"id": 2, "category": "chat", "prompt": "P2", "better": "g2", "worse": "b2"},
    ])
    p1, p2 = load_labeled_pairs(path)
    assert (p1.id, p1.prompt, p1.better, p1.worse, p1.category) == ("p1", "P", "good", "bad", "coding")
    assert (p1.difficulty, p1.flaw, p1.better_score, p1.worse_score) == ("hard", "off-by-one", 9, 3)
    assert (p2.id, p2.difficulty, p2.flaw, p2.better_score, p2.source) == ("2", None, None, None, "pairs.jsonl")


# --- read_jsonl errors: each names the file and line ------------------------------------


def test_error_invalid_json_names_file_and_line(tmp_path):
    path = tmp_path / "question.jsonl"
    path.write_text('{"question_id": 1, "category": "x", "turns": ["a"]}\n\n{"question_id": 2,\n')
    with pytest.raises(InputError, match=r"question\.jsonl line 3: invalid JSON") as e:
        load_mt_questions(path)
    assert "\n" not in str(e.value)


def test_error_invalid_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "answers.jsonl"
    good = b'{"question_id": "q", "choices": [{"turns": [{"content": "ok"}]}]}\n'
    path.write_bytes(good + b'{"question_id": "\xff"}\n')
    with pytest.raises(InputError, match=r"answers\.jsonl line 2: invalid UTF-8"):
        load_arena_answers(path)


def test_error_missing_nested_field_names_file_line_and_field(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [
        {"question_id": 1, "choices": [{"index": 0, "turns": ["x"]}]},
        {"question_id": 2, "choices": []},
    ])
    message = r"m\.jsonl line 2: missing field 'choices\[0\]\.turns'; fix it to match: MT-Bench model answer"
    with pytest.raises(InputError, match=message):
        load_mt_answers(path)


def test_error_wrong_type_and_non_object(tmp_path):
    path = write_jsonl(tmp_path / "q.jsonl", [{"question_id": 1, "category": 5, "turns": ["a"]}])
    with pytest.raises(InputError, match=r"q\.jsonl line 1: field 'category' must be str, got int"):
        load_mt_questions(path)
    path.write_text('["not", "an", "object"]\n')
    with pytest.raises(InputError, match=r"q\.jsonl line 1: expected a JSON object, got list"):
        load_mt_questions(path)
    path.write_text('{"question_id": 1, "category": "c", "turns": []}\n')
    with pytest.raises(InputError, match=r"line 1: field 'turns' must be a non-empty list of strings"):
        load_mt_questions(path)


def test_error_missing_file(tmp_path):
    with pytest.raises(InputError, match=r"nope\.jsonl: file not found"):
        load_labeled_pairs(tmp_path / "nope.jsonl")


def test_read_jsonl_plain_records_and_bom(tmp_path):
    path = tmp_path / "plain.jsonl"
    path.write_bytes("\ufeff".encode() + b'{"a": 1}\r\n\r\n{"a": 2}\n')
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]
    assert read_jsonl(path, lambda r: field(r, "a", int)) == [1, 2]


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "out.jsonl"
    export_mt_answers({1: ["old"]}, "m", path)

    def crash(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        export_mt_answers({1: ["new"]}, "m", path)
    assert load_mt_answers(path) == {1: ["old"]}
    assert os.listdir(tmp_path) == ["out.jsonl"]  # the temp file was removed


def test_an_mt_bench_question_file_as_win_rate_prompts_says_what_it_is(tmp_path):
    from evalign.eval.sets import load_winrate_prompts

    path = tmp_path / "question.jsonl"
    path.write_text(json.dumps({"question_id": 81, "category": "writing", "turns": ["Write.", "Shorter."]}) + "\n")
    with pytest.raises(InputError, match=r"question.jsonl: an MT-Bench question file .*pass it as eval.mt_questions"):
        load_winrate_prompts(str(path))
