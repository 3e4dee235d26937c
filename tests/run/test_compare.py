"""``evalign eval`` end to end with scripted policy and judge: the table, the summary lines,
the exported answers, the cache on a rerun, and reference answers as the baseline."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from evalign.cli import app
from evalign.config import validate
from evalign.eval import formats
from evalign.run.compare import evaluate_models

TABLE_HEAD = "| model | win rate vs baseline % [95% CI] |"


def eval_config(tmp_path, judge_mode="logprobs", judge="echo"):
    scripted = {"model": "echo", "backend": "scripted"}
    return validate({
        "run": {"name": "e", "output_dir": str(tmp_path / "unused")},
        "policy": scripted, "creator": {"model": scripted},
        "solver": {"reward": {"kind": "judge_pointwise", "model": scripted}},
        "eval": {"judge": {"model": judge, "backend": "scripted"}, "judge_mode": judge_mode, "winrate_limit": 4,
                 "mt_limit": 2, "answer_sampling": {"max_new_tokens": 8}, "bootstrap_samples": 200,
                 "parse_retries": 0},
    })


def test_a_model_against_itself_resampled(tmp_path):
    out = tmp_path / "run"
    first = evaluate_models(eval_config(tmp_path), "echo", out_dir=out)
    assert first.table.startswith(TABLE_HEAD)
    assert "\n| echo | " in first.table and "| 4 |" in first.table  # n = the 4 win-rate prompts
    judge_line, calls_line, lc_line, export_line = first.lines
    assert lc_line.startswith("LC win rate: simplified: ") and "Arena-Hard score: v0.1" in lc_line
    header, _, row = first.table.splitlines()[:3]
    arena_cell = row.split(" | ")[header.split(" | ").index("Arena-Hard score % [95% CI]")]
    assert arena_cell[0].isdigit() and "[" in arena_cell  # a score with its interval, from the same verdicts
    assert judge_line.startswith("baseline: self, resampled; judge scripted:echo (logprobs); first-position rate ")
    assert calls_line == f"judge calls: {first.judge_calls} new, 0 cached" and first.judge_calls > 0
    assert export_line == f"exported for FastChat, Arena-Hard and AlpacaEval: {out / 'exports'}"
    bench = out / "exports" / "arena-hard-v0.1" / "data" / "evalign_eval-vs-echo-resampled"
    assert len(formats.load_arena_answers(bench / "model_answer" / "echo.jsonl")) == 4
    outputs = out / "exports" / "alpaca_eval" / "evalign_eval-vs-echo-resampled" / "echo" / "model_outputs.json"
    assert len(formats.load_alpaca(outputs)) == 4
    again = evaluate_models(eval_config(tmp_path), "echo", out_dir=out)
    assert again.judge_calls == 0 and again.cache_hits == first.judge_calls
    assert again.table == first.table  # the same judgments: the same numbers


def test_reference_answers_as_the_baseline(tmp_path):
    cfg = eval_config(tmp_path)
    from evalign.eval.sets import load_winrate_prompts

    prompts = load_winrate_prompts(cfg.eval.winrate_prompts, cfg.eval.winrate_limit)
    ref = tmp_path / "reference.json"
    ref.write_text(json.dumps([{"instruction": p.prompt, "output": "A short answer.", "generator": "ref"}
                               for p in prompts]))
    outcome = evaluate_models(cfg, "echo", baseline_answers=ref, out_dir=tmp_path / "run")
    assert outcome.lines[0].startswith(f"baseline: {ref}; judge scripted:echo (logprobs)")


def test_the_cli_prints_the_table_and_a_judge_line_even_without_a_first_position_rate(tmp_path):
    """A generating judge whose verdicts never parse has no first-position rate: the baseline
    and judge are still named (this line used to print empty)."""
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(eval_config(tmp_path, judge_mode="generate").to_yaml())
    result = CliRunner().invoke(app, ["eval", "--model", "echo", str(cfg), "--out", str(tmp_path / "run"), "-q"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith(TABLE_HEAD) and lines[2].startswith("| echo | — | — | — |")
    assert "baseline: self, resampled; judge scripted:echo (generate)" in lines
    assert not any("first-position rate" in line for line in lines)
    assert any(line.startswith("judge calls: ") and "unparseable verdicts left out" in line for line in lines)


def test_reference_answers_must_cover_every_prompt(tmp_path):
    from evalign.errors import InputError

    cfg = eval_config(tmp_path)
    prompts = tmp_path / "prompts.jsonl"  # win-rate prompts named explicitly: the reference must answer them
    prompts.write_text("".join(json.dumps({"prompt": f"Question {i}?"}) + "\n" for i in range(4)))
    cfg.eval.winrate_prompts = str(prompts)
    ref = tmp_path / "reference.json"
    ref.write_text(json.dumps([{"instruction": "something else", "output": "x", "generator": "ref"}]))
    with pytest.raises(InputError, match="no answer for 4 eval prompts"):
        evaluate_models(cfg, "echo", baseline_answers=ref, out_dir=tmp_path / "run")


def _no_answers(monkeypatch):
    from evalign.eval.evaluator import Evaluator

    def refuse(self, *a, **k):
        raise AssertionError("answers were generated before the arguments were checked")

    monkeypatch.setattr(Evaluator, "answers", refuse)


def test_a_missing_baseline_is_refused_before_any_answer(tmp_path, monkeypatch):
    from evalign.errors import InputError, ModelNotFoundError

    _no_answers(monkeypatch)
    cfg = eval_config(tmp_path).model_copy(deep=True)
    cfg.policy = cfg.policy.model_copy(update={"backend": "auto"})
    with pytest.raises(ModelNotFoundError, match=r"^--baseline: model './nope': no such file or directory"):
        evaluate_models(cfg, "smollm2-135m-instruct", baseline="./nope", out_dir=tmp_path / "run")
    with pytest.raises(InputError, match=r"^--baseline-answers .*missing.json: no such file"):
        evaluate_models(cfg, "smollm2-135m-instruct", baseline_answers=tmp_path / "missing.json",
                        out_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_the_model_as_its_own_baseline_warns(tmp_path):
    out = tmp_path / "run"
    evaluate_models(eval_config(tmp_path), "echo", baseline="echo", out_dir=out)
    log = (out / "logs" / "evalign.log").read_text()
    assert "--baseline echo is --model itself: the win rate measures only sampling noise" in log
    evaluate_models(eval_config(tmp_path), "echo", out_dir=tmp_path / "self")
    assert "is --model itself" not in (tmp_path / "self" / "logs" / "evalign.log").read_text()


def test_trust_remote_code_warns_naming_the_model(tmp_path):
    cfg = eval_config(tmp_path).model_copy(deep=True)
    cfg.solver.reward.model = cfg.solver.reward.model.model_copy(update={"trust_remote_code": True})
    evaluate_models(cfg, "echo", out_dir=tmp_path / "run")
    log = (tmp_path / "run" / "logs" / "evalign.log").read_text()
    assert "solver.reward.model.trust_remote_code is on: loading model 'echo' runs Python code shipped with it" in log
    assert log.count("trust_remote_code is on") == 1  # only the model that asks for it


def test_an_alpacaeval_reference_file_brings_its_instructions(tmp_path):
    """``evalign eval --model M --baseline-answers gpt4_turbo.json`` as the README writes it:
    the reference file's instructions are the win-rate prompts, as in AlpacaEval."""
    ref = tmp_path / "gpt4_turbo.json"
    ref.write_text(json.dumps([{"instruction": f"Name a colour, number {i}.", "output": "Blue.",
                                "generator": "gpt4_turbo", "dataset": "helpful_base"} for i in range(5)]))
    cfg = eval_config(tmp_path).model_copy(deep=True)
    cfg.eval.winrate_limit = None
    outcome = evaluate_models(cfg, "echo", baseline_answers=ref, out_dir=tmp_path / "run")
    assert "| 5 |" in outcome.table  # n = the file's 5 instructions
    alpaca = tmp_path / "run" / "exports" / "alpaca_eval" / "alpaca_eval-vs-gpt4_turbo" / "echo" / "model_outputs.json"
    assert [r["instruction"] for r in formats.load_alpaca(alpaca)] == [f"Name a colour, number {i}." for i in range(5)]


def test_arena_hard_answers_need_their_question_file(tmp_path, monkeypatch):
    from evalign.errors import InputError

    _no_answers(monkeypatch)
    ref = tmp_path / "gpt-4-0314.jsonl"
    formats.export_arena_answers({"q1": "An answer."}, "gpt-4-0314", ref)
    with pytest.raises(InputError, match=r"Arena-Hard answers hold question ids.*eval.winrate_prompts=PATH/question.jsonl"):
        evaluate_models(eval_config(tmp_path), "echo", baseline_answers=ref, out_dir=tmp_path / "run")


def test_baseline_mt_answers_alone_are_refused(tmp_path, monkeypatch):
    from evalign.errors import InputError

    _no_answers(monkeypatch)
    mt = tmp_path / "mt.jsonl"
    formats.export_mt_answers({81: ["a", "b"]}, "base", mt)
    with pytest.raises(InputError, match=r"^--baseline-mt-answers scores the baseline that --baseline-answers names"):
        evaluate_models(eval_config(tmp_path), "echo", baseline_mt_answers=mt, out_dir=tmp_path / "run")
