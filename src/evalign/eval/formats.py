"""Loaders and exporters for the official benchmark file formats.

Supported versions, so results can be cross-checked with the official tools:

- MT-Bench as in FastChat's ``llm_judge`` (``question.jsonl``, ``model_answer/*.jsonl``,
  ``reference_answer/*.jsonl``, single-answer-grading ``model_judgment/*_single.jsonl``).
- Arena-Hard-Auto v0.1 (``question_id``/``turns``, answers in ``choices``) and v2.0
  (``uid``/``prompt``, answers in ``messages``); we export v0.1 answers.
- AlpacaEval 2.0 ``model_outputs.json`` (a JSON list of ``dataset``/``instruction``/``output``/``generator``);
  its ``annotations.json`` is written by ``eval/alpaca_export.py``.

Every problem in a user's file is an :class:`InputError` naming the file, the line (for a
JSON list, the item) and the fix. Files are written atomically, so an interrupted export
never leaves a half-written file for the official tools to choke on.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from evalign import fsutil
from evalign.errors import InputError
from evalign.hashing import sha

T = TypeVar("T")
QuestionId = int | str
PathLike = str | os.PathLike[str]
NUMBER = (int, float)


@dataclass
class MTQuestion:
    """An MT-Bench question; ``reference`` holds reference answers per turn, if any."""

    question_id: QuestionId
    category: str
    turns: list[str]
    reference: list[str] | None = None


@dataclass
class ArenaQuestion:
    """An Arena-Hard question; ``subcategory`` is v0.1's ``cluster`` or v2.0's ``subcategory``."""

    question_id: QuestionId
    category: str
    prompt: str
    subcategory: str | None
    version: Literal["v0.1", "v2.0"]


@dataclass
class LabeledPair:
    """A prompt with a better and a worse answer, for checking judges and reward models."""

    prompt: str
    better: str
    worse: str
    category: str
    better_score: float | None = None
    worse_score: float | None = None
    source: str = ""
    id: str | None = None
    difficulty: str | float | None = None
    flaw: str | None = None


# --- reading --------------------------------------------------------------------------


class FieldError(Exception):
    """A record lacks a field or has the wrong type; the reader adds the file and line."""


def _display(path: str) -> str:
    """'choices.0.turns' -> 'choices[0].turns', as a user would write it."""
    return re.sub(r"\.(-?\d+)", r"[\1]", path)


def _is_index(key: str, size: int) -> bool:
    return re.fullmatch(r"-?\d+", key) is not None and -size <= int(key) < size


def field(record: Any, path: str, expected: type | tuple[type, ...] = str) -> Any:
    """The value at dotted ``path`` (list indices as numbers) if it is of type ``expected``."""
    value = record
    for key in path.split("."):
        if isinstance(value, list) and _is_index(key, len(value)):
            value = value[int(key)]
        elif isinstance(value, dict) and key in value:
            value = value[key]
        else:
            raise FieldError(f"missing field '{_display(path)}'")
    if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
        types = expected if isinstance(expected, tuple) else (expected,)
        names = " or ".join(t.__name__ for t in types)
        got = type(value).__name__
        raise FieldError(f"field '{_display(path)}' must be {names}, got {got}")
    return value


def optional_field(record: dict, key: str, expected: type | tuple[type, ...] = str) -> Any:
    """Like :func:`field` for a top-level key that may be absent or null."""
    return None if record.get(key) is None else field(record, key, expected)


def _str_list(record: Any, path: str) -> list[str]:
    """A non-empty list of strings (turns of a conversation)."""
    value = field(record, path, list)
    if not value or not all(isinstance(v, str) for v in value):
        raise FieldError(f"field '{_display(path)}' must be a non-empty list of strings")
    return value


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: file not found; check the path") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror}); check the path") from None


def _utf8_message(where: str, e: UnicodeDecodeError) -> str:
    return f"{where}: invalid UTF-8 at byte {e.start + 1}; re-save the file as UTF-8"


def _parse_record(record: Any, parse: Callable[[dict], T], where: str, what: str) -> T:
    if not isinstance(record, dict):
        got = type(record).__name__
        raise InputError(f"{where}: expected a JSON object, got {got}; fix it to match: {what}")
    try:
        return parse(record)
    except FieldError as e:
        raise InputError(f"{where}: {e}; fix it to match: {what}") from None


def read_jsonl(
    path: PathLike, parse: Callable[[dict], T] | None = None, what: str = "JSON object"
) -> list[T]:
    """Read a JSONL file, one object per non-blank line, through ``parse``.

    ``parse`` pulls fields with :func:`field`/:func:`optional_field`; invalid UTF-8, invalid
    JSON and missing or mistyped fields become an InputError naming the file and line.
    ``what`` names the expected record in that message (e.g. "MT-Bench model answer").
    """
    path = Path(path)
    return [_parse_record(record, parse or (lambda r: r), f"{path} line {lineno}", what)
            for lineno, record in fsutil.read_jsonl(path)]


def _read_json_list(path: Path, parse: Callable[[dict], T], what: str) -> list[T]:
    """Read a JSON array of objects; entry errors name the item (1-based) instead of a line."""
    try:
        data = json.loads(_read_bytes(path).decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise InputError(_utf8_message(str(path), e)) from None
    except json.JSONDecodeError as e:
        raise InputError(
            f"{path} line {e.lineno}: invalid JSON ({e.msg} at column {e.colno}); fix the file"
        ) from None
    if not isinstance(data, list):
        got = type(data).__name__
        raise InputError(f"{path}: expected a JSON list, got {got}; make it a list of: {what}")
    return [_parse_record(r, parse, f"{path} item {i}", what) for i, r in enumerate(data, 1)]


# --- writing --------------------------------------------------------------------------


def _write_jsonl(path: PathLike, rows: Iterable[dict]) -> None:
    fsutil.atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def _answer_id(model_id: str, qid: QuestionId, content: Any) -> str:
    """Content-derived id (official tools use a random shortuuid): reruns give identical files."""
    return sha(json.dumps([model_id, qid, content], ensure_ascii=False), 22)


# --- MT-Bench (FastChat llm_judge) ----------------------------------------------------


def _mt_question(r: dict) -> MTQuestion:
    reference = _str_list(r, "reference") if r.get("reference") is not None else None
    qid = field(r, "question_id", (int, str))
    return MTQuestion(qid, field(r, "category"), _str_list(r, "turns"), reference)


def load_mt_questions(path: PathLike) -> list[MTQuestion]:
    """MT-Bench ``question.jsonl``: question_id, category, turns, optional reference."""
    return read_jsonl(path, _mt_question, "MT-Bench question (question_id, category, turns)")


def _mt_answer(r: dict) -> tuple[QuestionId, list[str]]:
    return field(r, "question_id", (int, str)), _str_list(r, "choices.0.turns")


def load_mt_answers(path: PathLike) -> dict[QuestionId, list[str]]:
    """MT-Bench ``model_answer/<model>.jsonl``: question_id -> turns of the first choice.

    A repeated question_id keeps its last answer, as FastChat does.
    """
    what = "MT-Bench model answer (question_id, choices[0].turns)"
    return dict(read_jsonl(path, _mt_answer, what))


def load_mt_references(path: PathLike) -> dict[QuestionId, list[str]]:
    """MT-Bench ``reference_answer/<judge>.jsonl`` (same shape as model answers)."""
    what = "MT-Bench reference answer (question_id, choices[0].turns)"
    return dict(read_jsonl(path, _mt_answer, what))


def export_mt_answers(
    answers: Mapping[QuestionId, Sequence[str]], model_id: str, path: PathLike
) -> None:
    """Write question_id -> turns as FastChat ``model_answer`` JSONL for ``gen_judgment.py``."""
    tstamp = time.time()
    rows = []
    for qid, turns in answers.items():
        turns = [turns] if isinstance(turns, str) else list(turns)  # a bare string is one turn
        rows.append({
            "question_id": qid,
            "answer_id": _answer_id(model_id, qid, turns),
            "model_id": model_id,
            "choices": [{"index": 0, "turns": turns}],
            "tstamp": tstamp,
        })
    _write_jsonl(path, rows)


# --- Arena-Hard-Auto ------------------------------------------------------------------


def _arena_question(r: dict) -> ArenaQuestion:
    if "uid" in r:
        return ArenaQuestion(
            field(r, "uid", (int, str)), field(r, "category"), field(r, "prompt"),
            optional_field(r, "subcategory"), "v2.0",
        )
    return ArenaQuestion(
        field(r, "question_id", (int, str)), field(r, "category"), field(r, "turns.0.content"),
        optional_field(r, "cluster"), "v0.1",
    )


def load_arena_questions(path: PathLike) -> list[ArenaQuestion]:
    """Arena-Hard ``question.jsonl``, v0.1 or v2.0 (told apart per line by ``uid``)."""
    return read_jsonl(
        path, _arena_question,
        "Arena-Hard question (v0.1: question_id, category, turns; v2.0: uid, category, prompt)",
    )


def _arena_answer(r: dict) -> tuple[QuestionId, str]:
    if "uid" in r:
        content = field(r, "messages.-1.content", (str, dict))
        text = content if isinstance(content, str) else field(r, "messages.-1.content.answer")
        return field(r, "uid", (int, str)), text
    return field(r, "question_id", (int, str)), field(r, "choices.0.turns.0.content")


def load_arena_answers(path: PathLike) -> dict[QuestionId, str]:
    """Arena-Hard ``model_answer/<model>.jsonl``, v0.1 or v2.0: question id -> answer text.

    v0.1 reads ``choices[0].turns[0].content``; v2.0 the last message's ``content``, or its
    ``content.answer`` when the content is an object. A repeated id keeps its last answer.
    """
    return dict(read_jsonl(
        path, _arena_answer,
        "Arena-Hard answer (v0.1: question_id, choices[0].turns[0].content; v2.0: uid, messages)",
    ))


def export_arena_answers(
    answers: Mapping[QuestionId, str],
    model_id: str,
    path: PathLike,
    token_lens: Mapping[QuestionId, int] | None = None,
    metadata: Mapping[QuestionId, Mapping[str, Any]] | None = None,
) -> None:
    """Write question_id -> answer as Arena-Hard v0.1 ``model_answer`` JSONL.

    ``token_len`` (the official ``show_result.py`` needs it) goes both in the turn and in
    ``conv_metadata``, where the older and newer v0.1 scripts look for it. ``metadata``
    (e.g. :func:`evalign.eval.arena_hard.answer_metadata`: token_len and markdown counts,
    as Arena-Hard's gen_answer writes them) becomes the whole ``conv_metadata``.
    """
    tstamp = time.time()
    rows = []
    for qid, text in answers.items():
        turn: dict[str, Any] = {"content": text}
        row: dict[str, Any] = {
            "question_id": qid,
            "answer_id": _answer_id(model_id, qid, text),
            "model_id": model_id,
            "choices": [{"index": 0, "turns": [turn]}],
            "tstamp": tstamp,
        }
        if metadata is not None and qid in metadata:
            row["conv_metadata"] = dict(metadata[qid])
            turn["token_len"] = int(metadata[qid]["token_len"])
        elif token_lens is not None and qid in token_lens:
            turn["token_len"] = int(token_lens[qid])
            row["conv_metadata"] = {"token_len": int(token_lens[qid])}
        rows.append(row)
    _write_jsonl(path, rows)


# --- AlpacaEval 2.0 -------------------------------------------------------------------


def _alpaca_record(r: dict) -> dict[str, str]:
    record = {key: field(r, key) for key in ("instruction", "output", "generator")}
    if r.get("dataset") is not None:
        record["dataset"] = field(r, "dataset")
    return record


def load_alpaca(path: PathLike) -> list[dict[str, str]]:
    """AlpacaEval 2.0 ``model_outputs.json``: instruction, output, generator, optional dataset."""
    what = "AlpacaEval output (instruction, output, generator)"
    return _read_json_list(Path(path), _alpaca_record, what)


ALPACA_DEFAULT_DATASET = "evalign"


def export_alpaca_outputs(answers: Mapping[str, str], generator: str, path: PathLike,
                          datasets: Mapping[str, str] | None = None) -> None:
    """Write instruction -> output as AlpacaEval ``model_outputs.json`` for ``alpaca_eval``.

    ``dataset`` is the instruction's source as AlpacaEval names it (``helpful_base``,
    ``koala``, ...), taken from ``datasets``; instructions without one get "evalign".
    alpaca_eval does not require the field but keeps it in its annotations.
    """
    datasets = datasets or {}
    rows = [{"dataset": datasets.get(i) or ALPACA_DEFAULT_DATASET, "instruction": i, "output": o,
             "generator": generator} for i, o in answers.items()]
    fsutil.atomic_write_text(path, json.dumps(rows, ensure_ascii=False, indent=2) + "\n")


# --- labeled pairs --------------------------------------------------------------------


def _labeled_pair(source: str) -> Callable[[dict], LabeledPair]:
    def parse(r: dict) -> LabeledPair:
        return LabeledPair(
            prompt=field(r, "prompt"), better=field(r, "better"), worse=field(r, "worse"),
            category=field(r, "category"),
            better_score=optional_field(r, "better_score", NUMBER),
            worse_score=optional_field(r, "worse_score", NUMBER),
            source=source, id=str(field(r, "id", (int, str))),
            difficulty=optional_field(r, "difficulty", (str, int, float)),
            flaw=optional_field(r, "flaw"),
        )
    return parse


def load_labeled_pairs(path: PathLike) -> list[LabeledPair]:
    """The project's labeled-pair JSONL: id, category, prompt, better, worse, and optional
    difficulty, flaw, better_score, worse_score. ``source`` is the file name."""
    what = "labeled pair (id, category, prompt, better, worse)"
    return read_jsonl(path, _labeled_pair(Path(path).name), what)


def _judgment(r: dict) -> tuple[QuestionId, str, float, int]:
    qid = field(r, "question_id", (int, str))
    return qid, field(r, "model"), float(field(r, "score", NUMBER)), field(r, "turn", int)


def _turn1_scores(judgment_path: PathLike) -> dict[QuestionId, dict[str, float]]:
    """question_id -> model -> mean turn-1 score; FastChat's -1 (unparsable rating) is dropped."""
    collected: dict[QuestionId, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    what = "MT-Bench single-grading judgment (question_id, model, score, turn)"
    for qid, model, score, turn in read_jsonl(judgment_path, _judgment, what):
        if turn == 1 and score >= 0:
            collected[qid][model].append(score)
    return {
        qid: {model: sum(s) / len(s) for model, s in by_model.items()}
        for qid, by_model in collected.items()
    }


def _first_turn(
    answers: dict[QuestionId, list[str]],
    qid: QuestionId,
    answer_file: Path,
    judgment_path: PathLike,
) -> str:
    if qid not in answers:
        raise InputError(
            f"{answer_file}: no answer for question_id {qid!r}, which {judgment_path} judges; "
            "use the answer file the judgments were made from"
        )
    return answers[qid][0]


def labeled_pairs_from_mt_judgments(
    judgment_path: PathLike, answers_dir: PathLike, questions_path: PathLike, threshold: float = 2.0
) -> list[LabeledPair]:
    """Turn MT-Bench single-answer grades into labeled pairs for checking a judge or RM.

    Every two models graded on the same question (turn 1) whose scores differ by at least
    ``threshold`` give one pair; a smaller gap is within judge noise. Answers are read from
    ``answers_dir/<model>.jsonl``; identical answer texts are skipped (nothing to prefer).
    """
    if threshold <= 0:
        raise ValueError(f"threshold must be positive so ties are never labeled, got {threshold}")
    questions = {q.question_id: q for q in load_mt_questions(questions_path)}
    scores = _turn1_scores(judgment_path)
    models = sorted({m for by_model in scores.values() for m in by_model})
    answer_files = {m: Path(answers_dir) / f"{m}.jsonl" for m in models}
    answers = {m: load_mt_answers(f) for m, f in answer_files.items()}
    pairs = []
    for qid, by_model in scores.items():
        if qid not in questions:
            raise InputError(
                f"{questions_path}: no question_id {qid!r}, which {judgment_path} judges; "
                "use the question file the judgments were made on"
            )
        question = questions[qid]
        for a, b in itertools.combinations(sorted(by_model.items()), 2):
            if abs(a[1] - b[1]) < threshold:
                continue
            (good, good_score), (bad, bad_score) = (a, b) if a[1] > b[1] else (b, a)
            better = _first_turn(answers[good], qid, answer_files[good], judgment_path)
            worse = _first_turn(answers[bad], qid, answer_files[bad], judgment_path)
            if better == worse:
                continue
            pairs.append(LabeledPair(
                prompt=question.turns[0], better=better, worse=worse, category=question.category,
                better_score=good_score, worse_score=bad_score,
                source=f"mt_bench:{Path(judgment_path).name}", id=f"mt{qid}-{good}-vs-{bad}",
            ))
    return pairs
