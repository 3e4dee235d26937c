"""FastChat's own ``show_result.py`` (fschat 0.2.36) on evalign's exports gives evalign's numbers.

Needs ``pip install --no-deps fschat==0.2.36`` and pandas; skipped without them. The
functions ``display_result_single`` / ``display_result_pairwise`` print their result
tables; the tests read those tables as the DataFrames they are (the module's ``print`` is
replaced), and once through the command line as a user runs it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from evalign.backends.scripted import ScriptedLLM
from evalign.eval.fastchat import model_name, write_fastchat_bench, write_fastchat_pairwise
from evalign.eval.formats import MTQuestion
from evalign.eval.judgments import graded_turns, judged_pairs
from evalign.eval.score import judge_scores
from evalign.eval.winrate import judge_win_rate
from evalign.judge import Judge

pytest.importorskip("pandas")
show_result = pytest.importorskip("fastchat.llm_judge.show_result")

JUDGE = "evalign-judge"


def _tables(monkeypatch, display, **args):
    """The DataFrames ``display`` prints, in order."""
    printed = []
    monkeypatch.setattr(show_result, "print", lambda *a, **k: printed.extend(a), raising=False)
    defaults = dict(bench_name="mt_bench", input_file=None, judge_model=JUDGE, baseline_model=None, model_list=None)
    display(argparse.Namespace(**{**defaults, **args}))
    return [t for t in printed if hasattr(t, "columns")]


def _grade_script(conv, seed):
    """Half points, one unparsable grade (score -1) and the backup pattern, by question."""
    text = conv[-1]["content"]
    later = "Earlier turns" in text
    if "Q3" in text and later:
        return "I cannot decide."
    if "Q2" in text:
        return "Fine. Rating: [6]" if later else "Good. Rating: [[9.5]]"
    return ("Rating: [[4]]" if later else "Rating: [[7]]") if "beta" in text else (
        "Rating: [[5]]" if later else "Rating: [[8]]")


def _questions():
    return [MTQuestion(1, "writing", ["Q1 write", "Q1 shorter"]),
            MTQuestion(2, "math", ["Q2 add", "Q2 multiply"], ["3", "6"]),
            MTQuestion(3, "stem", ["Q3 explain", "Q3 simpler"]),
            MTQuestion(4, "roleplay", ["Q4 play", "Q4 again"])]


def _export(tmp_path):
    qs = _questions()
    answers = {
        "org/alpha": [["alpha one", "alpha two"], ["alpha 3", "alpha 6"], ["alpha x", "alpha y"], ["alpha p"]],
        "beta": [["beta one", "beta two"], ["beta 3", "beta 6"], ["beta x", "beta y"], ["beta p", "beta q"]],
    }
    judge = Judge(ScriptedLLM(generate_fn=_grade_script), mode="generate", parse_retries=0)
    scores = {m: judge_scores(judge, qs, a, n_boot=100) for m, a in answers.items()}
    turns = {m: graded_turns(judge, qs, m, a) for m, a in answers.items()}
    paths = write_fastchat_bench(tmp_path, "mt_bench", qs, answers, turns, JUDGE, tstamp=0.0)
    return scores, paths


def test_show_result_single_gives_evalign_average_and_turn_means(tmp_path, monkeypatch):
    scores, paths = _export(tmp_path)
    # The export holds a -1 (Q3 turn 2 unparsed) and a turn never graded (alpha's Q4 turn 2).
    rows = [json.loads(line) for line in paths["judgment"].read_text().splitlines()]
    assert sum(r["score"] == -1 for r in rows) == 2 and len(rows) == 15
    assert scores["org/alpha"].scores[3] == [8.0, None]
    monkeypatch.chdir(tmp_path)
    turn1, turn2, average = _tables(monkeypatch, show_result.display_result_single)
    for model, sc in scores.items():
        name = model_name(model)
        assert average.loc[name, "score"] == pytest.approx(sc.estimate.value, rel=1e-12)
        assert turn1.loc[(name, 1), "score"] == pytest.approx(sc.turn1.value, rel=1e-12)
        assert turn2.loc[(name, 2), "score"] == pytest.approx(sc.turn2.value, rel=1e-12)
    assert scores["org/alpha"].estimate.value == pytest.approx((8 + 5 + 9.5 + 6 + 8 + 8) / 6)


def test_fastchat_reads_model_names_from_the_answer_files(tmp_path):
    scores, paths = _export(tmp_path)
    assert paths["answer:org/alpha"].name == "org_alpha.jsonl"
    assert paths["reference"].name == f"{JUDGE}.jsonl"  # gen_judgment looks references up by judge
    refs = [json.loads(line) for line in paths["reference"].read_text().splitlines()]
    assert [(r["question_id"], r["choices"][0]["turns"]) for r in refs] == [(2, ["3", "6"])]
    out = subprocess.run([sys.executable, "-m", "fastchat.llm_judge.show_result", "--bench-name", "mt_bench",
                          "--judge-model", JUDGE, "--mode", "single"], cwd=tmp_path, capture_output=True,
                         text=True, check=True).stdout
    average = out.split("Average")[1]
    for model, sc in scores.items():
        line = next(ln for ln in average.splitlines() if ln.startswith(model_name(model) + " "))
        assert float(line.split()[-1]) == pytest.approx(sc.estimate.value, abs=1e-5)


def _pair_script(conv, seed):
    """Model answers win at p1, lose at p2, split at p3 (position bias), tie at p4, p5 unparsed once."""
    text = conv[-1]["content"]
    a_first = text.index("MODEL") < text.index("<answer_B>")  # the model's answer shown as A
    if "prompt five" in text:
        return "[[A>B]]" if a_first else "unclear"
    if "prompt one" in text:
        return "[[A>B]]" if a_first else "[[B>A]]"
    if "prompt two" in text:
        return "[[B>>A]]" if a_first else "[[A>B]]"
    if "prompt four" in text:
        return "[[A=B]]"
    return "[[A>B]]"


def test_show_result_pairwise_baseline_counts_match_evalign_where_both_orders_parse(tmp_path, monkeypatch):
    prompts = ["prompt one", "prompt two", "prompt three", "prompt four", "prompt five"]
    ids = [f"p{i}" for i in range(1, 6)]
    model = [f"MODEL answer to {p}" for p in prompts]
    base = [f"baseline answer to {p}" for p in prompts]
    judge = Judge(ScriptedLLM(generate_fn=_pair_script), mode="generate", parse_retries=0)
    wr = judge_win_rate(judge, prompts, model, base, n_boot=100)
    pairs = judged_pairs(judge, ids, prompts, "policy", "theta0", model, base)
    write_fastchat_pairwise(tmp_path, "winrate", pairs, JUDGE, tstamp=0.0)
    monkeypatch.chdir(tmp_path)
    [table] = _tables(monkeypatch, show_result.display_result_pairwise, bench_name="winrate",
                      baseline_model="theta0")
    row = table.loc["policy"]
    assert (wr.wins, wr.ties, wr.losses) == (1, 3, 1)
    # FastChat drops p5 (one order is "error"); evalign counts a split verdict there as a tie.
    assert (row["win"], row["tie"], row["loss"]) == (wr.wins, wr.ties - 1, wr.losses)
    both = [o for o, p in zip(wr.outcomes, pairs) if p.model_first.p_a is not None and p.baseline_first.p_a is not None]
    assert len(both) == row["win"] + row["tie"] + row["loss"]
    assert row["win_rate_adjusted"] == pytest.approx((wr.wins + 0.5 * (wr.ties - 1)) / 4)
