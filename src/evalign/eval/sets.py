"""Evaluation sets: the built-in ones and the official benchmark files.

Win-rate prompts come from ``builtin:eval`` (96 single-turn prompts over MT-Bench's eight
categories, written for the project), a JSONL with ``id``/``prompt``, an Arena-Hard
``question.jsonl`` (v0.1 or v2.0) or an AlpacaEval JSON list (``instruction``). Two-turn
questions come from ``builtin:mt`` (48 questions, references for math, reasoning and coding)
or an MT-Bench ``question.jsonl`` plus its reference-answer file, whose references replace
the question file's inline ones (FastChat grades against the file only).

A ``limit`` takes items round-robin over categories, so a small quickstart still covers
every category instead of the first one or two.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from evalign.errors import InputError
from evalign.fsutil import read_jsonl
from evalign.prompts import builtin_path
from evalign.eval import formats
from evalign.eval.mt_bench import attach_references

T = TypeVar("T")


@dataclass(frozen=True)
class EvalPrompt:
    id: str
    category: str | None
    prompt: str


def spread(items: Sequence[T], limit: int | None, category=lambda x: x.category) -> list[T]:
    """The first ``limit`` items taken round-robin over categories (file order within each)."""
    if limit is None or limit >= len(items):
        return list(items)
    groups: dict[str | None, list[T]] = defaultdict(list)
    for it in items:
        groups[category(it)].append(it)
    out: list[T] = []
    queues = list(groups.values())
    while len(out) < limit:
        for q in queues:
            if q and len(out) < limit:
                out.append(q.pop(0))
    return out


def load_winrate_prompts(source: str, limit: int | None = None) -> list[EvalPrompt]:
    if source == "builtin:eval":
        path = builtin_path("eval_prompts.jsonl")
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise InputError(f"win-rate prompt file '{source}' not found; use builtin:eval or a .jsonl/.json file")
        _check_text_format(path, "eval.winrate_prompts")
    if path.suffix == ".json":  # AlpacaEval
        rows = formats.load_alpaca(path)
        items = [EvalPrompt(f"alpaca-{i}", r.get("dataset"), r["instruction"]) for i, r in enumerate(rows, 1)]
    else:
        first = next((record for _, record in read_jsonl(path)), {})
        if isinstance(first.get("turns"), list) and first["turns"] and isinstance(first["turns"][0], str):
            raise InputError(f"{path}: an MT-Bench question file (turns are plain strings); pass it as "
                             "eval.mt_questions, and as eval.winrate_prompts " + _FORMATS)
        if "turns" in first or "uid" in first:  # Arena-Hard question.jsonl
            items = [EvalPrompt(str(q.question_id), q.category, q.prompt) for q in formats.load_arena_questions(path)]
        else:
            rows = formats.read_jsonl(path, lambda r: (str(r.get("id", "")), r.get("category"), formats.field(r, "prompt")),
                                      "win-rate prompt (id, prompt)")
            items = [EvalPrompt(rid or f"p{i}", cat, text) for i, (rid, cat, text) in enumerate(rows, 1)]
    if not items:
        raise InputError(f"{path}: no evaluation prompts; add some")
    return spread(items, limit)


_FORMATS = ("JSONL with one {\"id\", \"prompt\"} object per line, an Arena-Hard question.jsonl "
            "or an AlpacaEval .json list")


def _check_text_format(path: Path, key: str) -> None:
    """A spreadsheet export or a binary file named as a prompt file: say so, and what is read."""
    if path.suffix.lower() in (".csv", ".tsv", ".xlsx", ".xls", ".parquet"):
        raise InputError(f"{key} {path}: {path.suffix} files are not read; convert it to {_FORMATS}")
    try:
        with open(path, "rb") as fh:
            head = fh.read(8192)
    except OSError as e:
        raise InputError(f"{key} {path}: cannot read ({e.strerror}); check the path") from None
    if b"\x00" in head:
        raise InputError(f"{key} {path}: a binary file, not text; give {_FORMATS}")


def load_mt_questions(source: str, references: str | None = None, limit: int | None = None) -> list[formats.MTQuestion]:
    """MT questions with their references; a ``references`` file wins over inline ``reference``
    fields, as in FastChat (which reads only the file). Which categories show a reference to
    the judge is decided at grading time (:func:`evalign.eval.mt_bench.shown_reference`)."""
    path = builtin_path("mt_questions.jsonl") if source == "builtin:mt" else Path(source).expanduser()
    if not path.is_file():
        raise InputError(f"MT question file '{source}' not found; use builtin:mt or an MT-Bench question.jsonl")
    questions = formats.load_mt_questions(path)
    if references:
        attach_references(questions, formats.load_mt_references(references))
    if not questions:
        raise InputError(f"{path}: no questions; add some")
    return spread(questions, limit)
