"""A study's exports, read by the official tools' own code, give the report's numbers.

A tiny study (θ0, the no-creator arm, eva) on the scripted judge; then FastChat's
``show_result.py`` (single and pairwise-baseline) on ``exports/fastchat``, alpaca_eval's
metrics on ``exports/alpaca_eval`` and the Arena-Hard judgment files on
``exports/arena-hard-v0.1`` must agree with the report's rows for every evaluated policy.
"""

from __future__ import annotations

import argparse
import json

import pytest

from evalign.eval import formats
from evalign.eval.arena_hard import arena_hard_score
from evalign.report.collect import collect
from evalign.run.study import DEFAULT_ARMS, run_study
from evalign.store import RunStore

from .test_loop import tiny_config

pd = pytest.importorskip("pandas")
show_result = pytest.importorskip("fastchat.llm_judge.show_result")
alpaca_main = pytest.importorskip("alpaca_eval.main")

ARMS = ("no-creator", "eva")


@pytest.fixture(scope="module")
def study(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("study")
    cfg = tiny_config(tmp, tiny_model_dir)
    run_study(cfg, arms=[a for a in DEFAULT_ARMS if a.name in ARMS])
    with RunStore(cfg.run_dir, readonly=True) as s:
        results = collect(s)
    return cfg.run_dir / "exports", {r["arm"]: r for r in results["rows"]}


def _printed_tables(monkeypatch, display, **args):
    printed = []
    monkeypatch.setattr(show_result, "print", lambda *a, **k: printed.extend(a), raising=False)
    display(argparse.Namespace(**{"input_file": None, "model_list": None, "baseline_model": None, **args}))
    return [t for t in printed if hasattr(t, "columns")]


def _judge(exports):
    [name] = [p.name.removesuffix("_single.jsonl")
              for p in (exports / "fastchat/data/mt_bench/model_judgment").glob("*_single.jsonl")]
    return name


def test_every_policy_is_exported_under_its_row_name(study):
    exports, rows = study
    answers = {p.stem for p in (exports / "fastchat/data/mt_bench/model_answer").glob("*.jsonl")}
    assert answers == {"theta0", *ARMS}
    benches = {p.name for p in (exports / "arena-hard-v0.1/data").iterdir()}
    assert "evalign_eval-vs-theta0" in benches and "evalign_eval-vs-no-creator" in benches
    for tool in ("fastchat/data", "arena-hard-v2.0/data", "alpaca_eval"):
        assert {p.name for p in (exports / tool).iterdir()} >= benches


def test_fastchat_single_average_is_the_reports_score(study, monkeypatch):
    exports, rows = study
    monkeypatch.chdir(exports / "fastchat")
    *_, average = _printed_tables(monkeypatch, show_result.display_result_single, bench_name="mt_bench",
                                  judge_model=_judge(exports))
    for arm in ("theta0", *ARMS):
        assert average.loc[arm, "score"] == pytest.approx(rows[arm]["score"]["value"], rel=1e-9)


def test_fastchat_pairwise_baseline_reads_every_arm(study, monkeypatch):
    exports, rows = study
    monkeypatch.chdir(exports / "fastchat")
    [table] = _printed_tables(monkeypatch, show_result.display_result_pairwise, bench_name="evalign_eval-vs-theta0",
                              judge_model=_judge(exports), baseline_model="theta0")
    n = rows["eva"]["win_rate"]["n"]
    for arm in ARMS:
        counted = table.loc[arm, ["win", "tie", "loss"]].sum()
        assert 0 < counted <= n  # FastChat drops a prompt whose either order failed to parse


def test_alpaca_eval_win_rate_is_the_reports(study, tmp_path):
    exports, rows = study
    bench = exports / "alpaca_eval" / "evalign_eval-vs-theta0"
    for arm in ARMS:
        folder = bench / arm
        [annotator] = [p.name for p in folder.iterdir() if p.is_dir()]
        leaderboard = tmp_path / f"{arm}.csv"
        pd.DataFrame({"mode": ["community"]}, index=[arm]).to_csv(leaderboard)
        board, _ = alpaca_main.evaluate(
            model_outputs=str(folder / "model_outputs.json"), reference_outputs=str(folder / "reference_outputs.json"),
            annotators_config=annotator, is_recompute_metrics_only=True, precomputed_leaderboard=str(leaderboard),
            fn_metric="get_winrate", sort_by="win_rate", is_return_instead_of_print=True)
        assert board.loc[arm, "win_rate"] / 100 == pytest.approx(rows[arm]["win_rate"]["value"], abs=1e-9)


def test_arena_hard_files_give_the_reports_arena_hard_score(study):
    exports, rows = study
    data = exports / "arena-hard-v0.1/data/evalign_eval-vs-theta0"
    questions = [json.loads(line)["question_id"] for line in (data / "question.jsonl").read_text().splitlines()]
    [judge_dir] = list((data / "model_judgment").iterdir())
    for arm in ARMS:
        assert len(formats.load_arena_answers(data / "model_answer" / f"{arm}.jsonl")) == len(questions)
        games = {r["question_id"]: r["games"] for r in map(json.loads, (judge_dir / f"{arm}.jsonl").read_text().splitlines())}
        assert list(games) == questions
        # game 1 shows the baseline first, game 2 the model: labels (model-first, baseline-first)
        labels = [(g[1]["score"], g[0]["score"]) for g in games.values()]
        from_files = arena_hard_score(labels)
        assert rows[arm]["arena_hard"]["value"] == pytest.approx(from_files.value, abs=1e-12)
        assert rows[arm]["arena_hard"]["ci_low"] == pytest.approx(from_files.ci_low, abs=1e-12)
