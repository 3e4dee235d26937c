"""Every evaluation's answers and judgments, laid out for the official tools to read as they are.

``RUN_DIR/exports/`` after ``evalign eval``, ``run`` or ``ablate``::

    fastchat/data/mt_bench/question.jsonl, model_answer/<model>.jsonl,
                             reference_answer/<ref>.jsonl, model_judgment/<judge>_single.jsonl
    fastchat/data/<win-rate bench>-vs-<baseline>/...   model_judgment/<judge>_pair.jsonl
    arena-hard-v0.1/data/<win-rate bench>-vs-<baseline>/  question.jsonl, model_answer/, model_judgment/<judge>/
    arena-hard-v2.0/data/<win-rate bench>-vs-<baseline>/  (the same, uid-keyed)
    alpaca_eval/<win-rate bench>-vs-<baseline>/<model>/   model_outputs.json, reference_outputs.json,
                                                          <judge>/annotations.json

One bench per baseline, because Arena-Hard and FastChat's ``pairwise-baseline`` compare every
model of a bench against one baseline. Model names are file names (FastChat and Arena-Hard name
a model after its answer file). Judgments are read back through the judge's cache, so an export
makes no judge call.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from evalign.eval import alpaca_export, arena_hard, fastchat
from evalign.eval.evaluator import Answers, Evaluator
from evalign.eval.judgments import graded_turns, judged_pairs


def export_name(name: str) -> str:
    """A model name every tool reads back unchanged from its file name ('eva (seed 1)' -> 'eva-seed-1')."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "model"


@dataclass
class ExportPlan:
    """What was evaluated: every policy's answers by export name, the names whose MT answers
    were graded, and the (model, baseline) pairs judged pairwise."""

    answers: dict[str, Answers] = field(default_factory=dict)
    graded: list[str] = field(default_factory=list)
    compared: list[tuple[str, str]] = field(default_factory=list)

    def add(self, name: str, answers: Answers) -> str:
        name = export_name(name)
        self.answers.setdefault(name, answers)
        return name

    def grade(self, name: str, answers: Answers) -> None:
        name = self.add(name, answers)
        if name not in self.graded:
            self.graded.append(name)

    def compare(self, model: str, model_answers: Answers, baseline: str, baseline_answers: Answers) -> None:
        pair = (self.add(model, model_answers), self.add(baseline, baseline_answers))
        if pair not in self.compared:
            self.compared.append(pair)


def bench_name(source: str) -> str:
    """The win-rate bench's name: an official file's folder name (``data/arena-hard-v0.1/question.jsonl``
    -> ``arena-hard-v0.1``), ``alpaca_eval`` for an AlpacaEval JSON set, ``evalign_eval`` for the
    built-in set. (The MT questions are always FastChat's bench ``mt_bench``: its ``show_result.py``
    prints turn 2 and the average only under that name.)"""
    if source.startswith("builtin:"):
        return "evalign_eval"
    path = Path(source)
    if path.suffix == ".json":
        return "alpaca_eval"
    return export_name(path.parent.name if path.stem == "question" and path.parent.name else path.stem)


def write_exports(ev: Evaluator, root: Path, plan: ExportPlan) -> dict[str, str]:
    """Write every tool's layout under ``root``; returns tool -> folder written."""
    judge_name = export_name(ev.judge.judge_id)
    winrate_bench = bench_name(ev.cfg.winrate_prompts)
    written: dict[str, str] = {}
    if plan.graded and ev.questions:
        turns = {n: graded_turns(ev.judge, ev.questions, n, plan.answers[n].mt) for n in plan.graded}
        fastchat.write_fastchat_bench(root / "fastchat", "mt_bench", ev.questions,
                                      {n: plan.answers[n].mt for n in plan.graded}, turns, judge_name)
        written["fastchat"] = str(root / "fastchat")
    by_baseline: Mapping[str, list[str]] = defaultdict(list)
    for model, baseline in plan.compared:
        by_baseline[baseline].append(model)
    ids = [p.id for p in ev.prompts]
    texts = [p.prompt for p in ev.prompts]
    for baseline, models in by_baseline.items():
        base = plan.answers[baseline].winrate_answers
        pairs = {m: judged_pairs(ev.judge, ids, texts, m, baseline, plan.answers[m].winrate_answers, base)
                 for m in models}
        answers = {n: plan.answers[n].winrate_answers for n in [baseline, *models]}
        bench = f"{winrate_bench}-vs-{baseline}"
        fastchat.write_fastchat_pairwise(root / "fastchat", bench, [p for m in models for p in pairs[m]],
                                         judge_name, {p.id: p.category for p in ev.prompts})
        for version in ("v0.1", "v2.0"):
            arena_hard.write_arena_hard(root / f"arena-hard-{version}", bench, ev.prompts, answers, pairs,
                                        judge_name, baseline, version)
        for m in models:
            alpaca_export.write_alpaca_eval(root / "alpaca_eval" / bench, m, baseline, ev.prompts, answers[m], base,
                                            pairs[m], judge_name, combine=ev.judge.combine,
                                            reference=ev.alpaca_reference)
        written.update({"fastchat": str(root / "fastchat"), "arena_hard": str(root / "arena-hard-v0.1"),
                        "arena_hard_v2": str(root / "arena-hard-v2.0"), "alpaca_eval": str(root / "alpaca_eval")})
    return written
