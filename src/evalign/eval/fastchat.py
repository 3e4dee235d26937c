"""evalign's MT-Bench and pairwise judgments written as FastChat's ``llm_judge`` data folder.

``write_fastchat_bench`` lays out ``root/data/<bench>/`` as FastChat 0.2.36's
``gen_judgment.py`` leaves it, so its ``show_result.py`` (run in ``root``) reads evalign's
grades and prints the numbers evalign reports::

    question.jsonl                      question_id, category, turns
    model_answer/<model>.jsonl          one file per model; FastChat names the model after the file
    reference_answer/<judge>.jsonl      the references the judge was shown (NEED_REF_CATS only)
    model_judgment/<judge>_single.jsonl one record per graded turn, score -1 when unparsed
    model_judgment/<judge>_pair.jsonl   (write_fastchat_pairwise) both orders per prompt

A model name becomes a file stem, so it must be one: names with characters other than
letters, digits, ``.``, ``_``, ``-`` are written with ``_`` in their place, in the file name
and in every record alike. Answer ids are content hashes (FastChat's are random), so a
rerun writes identical files apart from ``tstamp``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from evalign.errors import InputError
from evalign.eval import formats
from evalign.eval.formats import MTQuestion, QuestionId
from evalign.eval.judgments import GradedTurn, JudgedPair
from evalign.eval.mt_bench import needs_reference, shown_reference
from evalign.judge.verdicts import Verdict

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def model_name(name: str) -> str:
    """``name`` as FastChat will read it back from ``model_answer/<name>.jsonl``."""
    safe = _UNSAFE.sub("_", name)
    if not safe.strip("."):
        raise InputError(f"model name {name!r} cannot name a FastChat answer file; give a name with letters or digits")
    return safe


def _names(names: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for n in names:
        safe = model_name(n)
        clash = next((k for k, v in out.items() if v == safe and k != n), None)
        if clash is not None:
            raise InputError(f"models {clash!r} and {n!r} would both be written as FastChat model {safe!r}; rename one")
        out[n] = safe
    return out


def _bench_dir(root: Path, bench: str) -> Path:
    if not bench or _UNSAFE.search(bench):
        raise InputError(f"bench name {bench!r}: use letters, digits, '.', '_' and '-' (FastChat: mt_bench)")
    return Path(root) / "data" / bench


def write_fastchat_bench(
    root: Path,
    bench: str,
    questions: Sequence[MTQuestion],
    answers: Mapping[str, Sequence[Sequence[str]]],
    turns: Mapping[str, Sequence[GradedTurn]],
    judge_name: str,
    references: Mapping[QuestionId, Sequence[str]] | None = None,
    *,
    prompt_name: str = "evalign-single",
    tstamp: float | None = None,
) -> dict[str, Path]:
    """Write an MT-Bench folder; return the paths written (``question``, ``reference``, ``judgment``,
    ``answer:<model>``).

    ``answers[model][i]`` is the model's answer per turn to ``questions[i]``; ``turns[model]``
    its graded turns (:func:`evalign.eval.judgments.graded_turns`). ``references``: per
    question id the reference turns; default, those the judge was shown (the questions'
    references in FastChat's NEED_REF_CATS). The reference file is named after the judge, as
    ``gen_judgment.py`` looks it up. The judgment's prompt name follows FastChat's naming:
    ``<prompt_name>[-math][-multi-turn]``. Use ``bench="mt_bench"``: ``show_result.py``
    prints the average only for that name.
    """
    out_dir = _bench_dir(root, bench)
    judge = model_name(judge_name)
    names = _names(list(answers) + [m for m in turns if m not in answers])
    stamp = time.time() if tstamp is None else tstamp
    paths: dict[str, Path] = {"question": out_dir / "question.jsonl"}
    formats._write_jsonl(paths["question"], [
        {"question_id": q.question_id, "category": q.category, "turns": list(q.turns)} for q in questions])
    for model, per_question in answers.items():
        if len(per_question) != len(questions):
            raise InputError(f"model {model!r}: {len(per_question)} answers for {len(questions)} questions; "
                             "give one list of turns per question, in question order")
        path = out_dir / "model_answer" / f"{names[model]}.jsonl"
        formats.export_mt_answers({q.question_id: list(a) for q, a in zip(questions, per_question)},
                                  names[model], path)
        paths[f"answer:{model}"] = path
    if references is None:
        references = {q.question_id: q.reference for q in questions
                      if q.reference and shown_reference(q, 0) is not None}
    if references:
        paths["reference"] = out_dir / "reference_answer" / f"{judge}.jsonl"
        formats.export_mt_answers({qid: list(r) for qid, r in references.items()}, judge, paths["reference"])
    category = {q.question_id: q.category for q in questions}
    rows = []
    for model, graded in turns.items():
        for g in graded:
            if g.question_id not in category:
                raise InputError(f"graded turn of question {g.question_id!r} ({model!r}) is not among the questions")
            name = prompt_name + ("-math" if needs_reference(category[g.question_id]) else "") + (
                "-multi-turn" if g.turn > 1 else "")
            rows.append({
                "question_id": g.question_id, "model": names[model], "judge": [judge_name, name],
                "user_prompt": g.user_prompt, "judgment": g.verdict.raw,
                "score": -1 if g.verdict.score is None else g.verdict.score, "turn": g.turn, "tstamp": stamp,
            })
    paths["judgment"] = out_dir / "model_judgment" / f"{judge}_single.jsonl"
    formats._write_jsonl(paths["judgment"], rows)
    return paths


def winner(verdict: Verdict) -> str:
    """FastChat's winner of one order: ``A``, ``B``, ``tie`` (P = 0.5, e.g. ``[[A=B]]``) or
    ``error`` (unparsed, FastChat drops the pair)."""
    if verdict.p_a is None:
        return "error"
    return "A" if verdict.p_a > 0.5 else "B" if verdict.p_a < 0.5 else "tie"


_G1 = {"A": "model_1", "B": "model_2"}  # g1: the model's answer shown as A
_G2 = {"A": "model_2", "B": "model_1"}  # g2: the baseline's answer shown as A


def write_fastchat_pairwise(
    root: Path,
    bench: str,
    pairs: Sequence[JudgedPair],
    judge_name: str,
    categories: Mapping[str, str | None] | None = None,
    *,
    prompt_name: str = "evalign-pair",
    tstamp: float | None = None,
) -> dict[str, Path]:
    """Write single-turn win-rate judgments as a FastChat bench (``show_result.py --mode
    pairwise-baseline --bench-name <bench> --baseline-model <baseline>``); return the paths.

    Each :class:`~evalign.eval.judgments.JudgedPair` is one record with ``model_1`` the model,
    ``model_2`` the baseline, ``g1`` the model-first order and ``g2`` the baseline-first one,
    as FastChat's ``play_a_match_pair`` writes them. ``categories``: question id -> category
    (default ``general``).
    """
    out_dir = _bench_dir(root, bench)
    judge = model_name(judge_name)
    names = _names(sorted({p.model for p in pairs} | {p.baseline for p in pairs}))
    cats = categories or {}
    questions: dict[str, str] = {}
    given: dict[str, dict[str, str]] = {}
    for p in pairs:
        if questions.setdefault(p.question_id, p.instruction) != p.instruction:
            raise InputError(f"judged pairs give question {p.question_id!r} two different texts; "
                             "export one evaluation set per bench")
        for model, answer in ((p.model, p.model_answer), (p.baseline, p.baseline_answer)):
            if given.setdefault(model, {}).setdefault(p.question_id, answer) != answer:
                raise InputError(f"model {model!r} has two different answers to question {p.question_id!r}; "
                                 "export one evaluation per bench")
    paths: dict[str, Path] = {"question": out_dir / "question.jsonl"}
    formats._write_jsonl(paths["question"], [
        {"question_id": qid, "category": cats.get(qid) or "general", "turns": [text]} for qid, text in questions.items()])
    for model, by_question in given.items():
        path = out_dir / "model_answer" / f"{names[model]}.jsonl"
        formats.export_mt_answers({qid: [a] for qid, a in by_question.items()}, names[model], path)
        paths[f"answer:{model}"] = path
    stamp = time.time() if tstamp is None else tstamp
    rows = [{
        "question_id": p.question_id, "model_1": names[p.model], "model_2": names[p.baseline],
        "g1_winner": _G1.get(w1, w1), "g2_winner": _G2.get(w2, w2), "judge": [judge_name, prompt_name],
        "g1_user_prompt": p.prompt_model_first, "g1_judgment": p.model_first.raw,
        "g2_user_prompt": p.prompt_baseline_first, "g2_judgment": p.baseline_first.raw,
        "turn": 1, "tstamp": stamp,
    } for p in pairs for w1, w2 in [(winner(p.model_first), winner(p.baseline_first))]]
    paths["judgment"] = out_dir / "model_judgment" / f"{judge}_pair.jsonl"
    formats._write_jsonl(paths["judgment"], rows)
    return paths
