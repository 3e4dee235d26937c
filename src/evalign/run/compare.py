"""``evalign eval``: any model against any baseline on any evaluation set.

The baseline is another model or checkpoint, a file of reference answers (AlpacaEval JSON
keyed by instruction, or Arena-Hard answers keyed by question id), or — by default — the
model itself resampled with another seed, which measures the judge's noise floor.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from evalign.config import Config
from evalign.errors import InputError
from evalign.eval import formats
from evalign.eval.stats import as_dict
from evalign.eval.evaluator import Answers, store_scores, store_win_rate
from evalign.eval.exports import ExportPlan, write_exports
from evalign.backends.pool import spec_model_id
from evalign.progress import say
from evalign.report.tables import num, pct
from evalign.run.session import check_model, open_run
from evalign.hashing import key_of

log = logging.getLogger(__name__)


@dataclass
class EvalOutcome:
    """What ``evalign eval`` shows: the results table and the lines under it (the CLI prints them)."""

    run_dir: str
    judge_calls: int
    cache_hits: int
    table: str
    lines: list[str] = field(default_factory=list)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(name).name or name).strip("-") or "model"


def eval_run_dir(model: str, out_dir: Path | None = None) -> Path:
    """Where ``evalign eval --model MODEL`` keeps its answers and judgments."""
    return out_dir or Path("runs") / f"eval-{_slug(model)}"


def _same_model(a: str, b: str) -> bool:
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    if pa.exists() and pb.exists():
        return pa.resolve() == pb.resolve()
    return a == b


def load_reference_answers(path: Path, prompts) -> list[str]:
    """Reference answers for the eval prompts, from AlpacaEval JSON or Arena-Hard JSONL."""
    if path.suffix == ".json":
        by_instruction = {r["instruction"]: r["output"] for r in formats.load_alpaca(path)}
        missing = [p.prompt for p in prompts if p.prompt not in by_instruction]
        if missing:
            raise InputError(f"{path}: no answer for {len(missing)} eval prompts (e.g. {missing[0][:60]!r}); "
                             "use answers to the same instructions as eval.winrate_prompts")
        return [by_instruction[p.prompt] for p in prompts]
    by_id = {str(k): v for k, v in formats.load_arena_answers(path).items()}
    missing = [p.id for p in prompts if p.id not in by_id]
    if missing:
        raise InputError(f"{path}: no answer for question ids {', '.join(missing[:5])}; "
                         "use the answer file of the same question.jsonl as eval.winrate_prompts")
    return [by_id[p.id] for p in prompts]


def _prompts_from_reference(cfg: Config, path: Path) -> None:
    """An AlpacaEval reference file defines its instruction set, as in AlpacaEval itself: with
    the default win-rate prompts, the prompts become the file's instructions. Arena-Hard answers
    hold no question text, so they need their question file named."""
    if cfg.eval.winrate_prompts != "builtin:eval":
        return
    if path.suffix == ".json":
        cfg.eval.winrate_prompts = str(path)
        say(f"win-rate prompts: the instructions of {path}")
        return
    raise InputError(f"--baseline-answers {path}: Arena-Hard answers hold question ids, not the questions; "
                     "name their question file too: --set eval.winrate_prompts=PATH/question.jsonl")


def load_reference_mt_answers(path: Path, questions) -> list[list[str]]:
    """Baseline answers to the MT questions from an MT-Bench model_answer JSONL."""
    by_id = {str(k): v for k, v in formats.load_mt_answers(path).items()}
    missing = [str(q.question_id) for q in questions if str(q.question_id) not in by_id]
    if missing:
        raise InputError(f"{path}: no answer for question ids {', '.join(missing[:5])}; "
                         "use answers to the same question file as eval.mt_questions "
                         "(--set eval.mt_questions=PATH/question.jsonl)")
    return [by_id[str(q.question_id)] for q in questions]


def evaluate_models(cfg: Config, model: str, *, baseline: str | None = None, baseline_answers: Path | None = None,
                    baseline_mt_answers: Path | None = None, out_dir: Path | None = None,
                    verbose: bool = False) -> EvalOutcome:
    run_dir = eval_run_dir(model, out_dir)
    cfg = cfg.model_copy(deep=True)
    cfg.run.output_dir = str(run_dir)
    spec = cfg.policy.model_copy(update={"model": model})
    bspec = spec.model_copy(update={"model": baseline}) if baseline is not None else None
    # Everything the command names is checked before any answer is generated.
    check_model(spec, "--model")
    if bspec is not None:
        check_model(bspec, "--baseline")
    for flag, path in (("--baseline-answers", baseline_answers), ("--baseline-mt-answers", baseline_mt_answers)):
        if path is not None and not path.is_file():
            raise InputError(f"{flag} {path}: no such file; pass an existing answers file")
    if baseline_mt_answers is not None and baseline_answers is None:
        raise InputError("--baseline-mt-answers scores the baseline that --baseline-answers names; pass "
                         "--baseline-answers too (the win-rate reference answers)")
    if baseline_answers is not None:
        _prompts_from_reference(cfg, baseline_answers)
    with open_run(cfg, verbose=verbose) as s:
        if baseline is not None and _same_model(model, baseline):
            log.warning("--baseline %s is --model itself: the win rate measures only sampling noise (about 50%%); "
                        "omit --baseline for that, or pass another model", baseline)
        ev = s.evaluator
        if ev is None:
            raise InputError("eval.enabled is false; enable it to evaluate")
        model_id = spec_model_id(spec)
        mine = ev.answers(s.pool.policy(spec, model if Path(model).exists() else None, model_id))
        label_b = "self, resampled"
        base_name = f"{_slug(model)}-resampled"
        base_score = None
        if baseline_answers is not None:
            mt = load_reference_mt_answers(baseline_mt_answers, ev.questions) if baseline_mt_answers else []
            base = Answers(f"file:{baseline_answers.name}", load_reference_answers(baseline_answers, ev.prompts), mt)
            label_b = str(baseline_answers)
            base_name = _slug(baseline_answers.stem)
        elif bspec is not None and baseline is not None:
            bid = spec_model_id(bspec)
            base = ev.answers(s.pool.policy(bspec, baseline if Path(baseline).exists() else None, bid))
            label_b = baseline
            base_name = _slug(baseline)
        else:
            base = ev.answers(s.pool.policy(spec, model if Path(model).exists() else None, model_id), seed_offset=1)
        wr = ev.win_rate(mine, base, label="win rate")
        sc = ev.scores(mine, label=f"{model} score")
        if base.mt:
            base_score = ev.scores(base, label="baseline score")
        key = key_of("eval", model_id, base.model_id, cfg.fingerprint("eval"))
        store_win_rate(s.store, key, model, "win_rate", wr)
        store_scores(s.store, key, model, "score", sc)
        if base_name == _slug(model):  # --baseline names --model itself: two answer sets, two names
            base_name += "-baseline"
        plan = ExportPlan()
        plan.grade(_slug(model), mine)
        if base.mt:
            plan.grade(base_name, base)
        plan.compare(_slug(model), mine, base_name, base)
        calls, cache_hits = ev.judge.stats.calls, ev.judge.stats.cache_hits  # before the exports read the cache
        write_exports(ev, s.store.dir / "exports", plan)
        lines = [
            "| model | win rate vs baseline % [95% CI] | LC win rate % | Arena-Hard score % [95% CI] | W / T / L | n "
            "| avg score [95% CI] | turn 1 | turn 2 |",
            "|---|---|---|---|---|---|---|---|---|",
            f"| {model} | {pct(as_dict(wr.estimate))} | {pct(as_dict(wr.lc))} | {pct(as_dict(wr.arena_hard))} "
            f"| {wr.wins} / {wr.ties} / {wr.losses} | {wr.n} "
            f"| {num(as_dict(sc.estimate))} | {num(as_dict(sc.turn1))} | {num(as_dict(sc.turn2))} |",
        ]
        if base_score is not None:
            lines.append(f"| baseline: {label_b} | — | — | — | — | — | {num(as_dict(base_score.estimate))} "
                         f"| {num(as_dict(base_score.turn1))} | {num(as_dict(base_score.turn2))} |")
        table = "\n".join(lines)
        failures = wr.parse_failures + sc.parse_failures
        judge_line = f"baseline: {label_b}; judge {ev.judge.judge_id} ({ev.judge.mode})"
        if wr.first_position_rate is not None:  # None when no verdict could be read
            judge_line += f"; first-position rate {wr.first_position_rate:.2f}"
        summary = [
            judge_line,
            f"judge calls: {calls} new, {cache_hits} cached"
            + (f"; {failures} unparseable verdicts left out" if failures else ""),
            f"LC win rate: {wr.lc_method}; Arena-Hard score: v0.1 (battles, strong verdicts x3, "
            "bootstrap of battles), beside the win rate over prompts",
            f"exported for FastChat, Arena-Hard and AlpacaEval: {s.store.dir / 'exports'}",
        ]
        say(f"run directory: {s.store.dir}")
        return EvalOutcome(str(s.store.dir), calls, cache_hits, table, summary)
