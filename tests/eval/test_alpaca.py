"""AlpacaEval exports and the LC label, without alpaca_eval installed."""

from __future__ import annotations

import json

import pytest

from evalign.backends.scripted import ScriptedLLM
from evalign.errors import InputError
from evalign.eval import alpaca, alpaca_export, stats
from evalign.eval.formats import export_alpaca_outputs
from evalign.eval.judgments import JudgedPair, judged_pairs
from evalign.eval.sets import EvalPrompt
from evalign.eval.winrate import judge_win_rate
from evalign.judge import Judge
from evalign.judge.verdicts import Verdict

from .alpaca_fixture import alpaca_prompts, instructions, write_alpaca_data

QUESTIONS = instructions(12)
MODEL = [f"Item {i} is explained here at some length, with an example or two about item {i}." * (1 + i % 3)
         for i in range(12)]
BASE = [f"Item {i} is a thing." for i in range(12)]


def _pair(p_model_first, p_baseline_first, i=0) -> JudgedPair:
    return JudgedPair(f"q{i}", f"instruction {i}", "m", "b", f"model {i}", f"base {i}",
                      Verdict(p_a=p_model_first, raw="[[A>B]]"), Verdict(p_a=p_baseline_first, raw="[[B>A]]"),
                      "shown model first", "shown baseline first")


def test_without_a_reference_the_lc_is_the_simplified_one_and_says_so():
    wr = judge_win_rate(Judge(ScriptedLLM()), QUESTIONS, MODEL, BASE, n_boot=200)
    assert wr.lc_method == alpaca.SIMPLIFIED_LC and wr.as_dict()["lc_method"] == alpaca.SIMPLIFIED_LC
    ys = [o for o in wr.outcomes if o is not None]
    expected = stats.length_controlled_win_rate(ys, wr.lengths_model, wr.lengths_baseline, n_boot=200)
    assert wr.lc == expected


def test_dataset_field_comes_from_an_alpaca_set_and_defaults_to_evalign(tmp_path):
    prompts = [EvalPrompt("alpaca-1", "koala", "x"), EvalPrompt("p1", "coding", "y"), EvalPrompt("alpaca-2", None, "z")]
    assert [alpaca.dataset_of(p) for p in prompts] == ["koala", "evalign", "evalign"]
    path = tmp_path / "out.json"
    export_alpaca_outputs({"x": "1", "y": "2"}, "gen", path, datasets={"x": "koala"})
    rows = json.loads(path.read_text())
    assert rows == [{"dataset": "koala", "instruction": "x", "output": "1", "generator": "gen"},
                    {"dataset": "evalign", "instruction": "y", "output": "2", "generator": "gen"}]


def test_annotation_preference_is_one_plus_the_combined_outcome():
    pairs = [_pair(0.8, 0.4, 0), _pair(None, 0.1, 1), _pair(None, None, 2), _pair(0.2, 0.6, 3)]
    rows = alpaca_export.annotation_rows(pairs, "judge-x")
    # mean of p_model_first and 1 - p_baseline_first; one order alone; both unparsed: left out
    assert [r["preference"] for r in rows] == pytest.approx([1.7, 1.9, 1.3])
    assert [r["instruction"] for r in rows] == ["instruction 0", "instruction 1", "instruction 3"]
    r = rows[0]
    assert (r["output_1"], r["generator_1"], r["output_2"], r["generator_2"]) == ("base 0", "b", "model 0", "m")
    assert r["annotator"] == "judge-x" and r["dataset"] == "evalign"
    custom = alpaca_export.annotation_rows(pairs[:1], "j", combine=lambda a, b: 0.25)
    assert custom[0]["preference"] == 1.25


def test_annotation_preferences_reproduce_the_win_rate_outcomes():
    judge = Judge(ScriptedLLM())
    wr = judge_win_rate(judge, QUESTIONS, MODEL, BASE, n_boot=200)
    pairs = judged_pairs(judge, [f"q{i}" for i in range(12)], QUESTIONS, "m", "b", MODEL, BASE)
    rows = alpaca_export.annotation_rows(pairs, "j", combine=judge.combine)
    assert [r["preference"] - 1 for r in rows] == pytest.approx([o for o in wr.outcomes if o is not None])


def test_write_alpaca_eval_layout_follows_alpaca_eval_results(tmp_path):
    judge = Judge(ScriptedLLM())
    prompts = alpaca_prompts(QUESTIONS)
    pairs = judged_pairs(judge, [p.id for p in prompts], QUESTIONS, "org/model-1", "base", MODEL, BASE)
    paths = alpaca_export.write_alpaca_eval(tmp_path, "org/model-1", "base", prompts, MODEL, BASE, pairs, "my judge")
    assert paths["model_outputs"] == tmp_path / "org_model-1" / "model_outputs.json"
    assert paths["annotations"] == tmp_path / "org_model-1" / "my_judge" / "annotations.json"
    outputs = json.loads(paths["model_outputs"].read_text())
    refs = json.loads(paths["reference_outputs"].read_text())
    assert {r["generator"] for r in outputs} == {"org/model-1"} and {r["generator"] for r in refs} == {"base"}
    assert [r["dataset"] for r in outputs] == [p.category for p in prompts]
    assert len(json.loads(paths["annotations"].read_text())) == len(prompts)


def test_write_alpaca_eval_orders_rows_as_alpaca_eval_does(tmp_path, monkeypatch):
    monkeypatch.setattr(alpaca, "alpaca_eval_available", lambda: True)
    texts = write_alpaca_data(tmp_path / "data", 12)
    reference = alpaca.load_reference(tmp_path / "data")
    order = [5, 2, 11, 0, 7, 1, 3, 4, 6, 8, 9, 10]
    prompts = [alpaca_prompts(texts)[i] for i in order]
    answers = [MODEL[i] for i in order]
    base = [BASE[i] for i in order]
    pairs = [_pair(0.6, 0.3, i) for i in range(12)]
    pairs = [JudgedPair(p.id, p.prompt, "m", "b", a, b_, j.model_first, j.baseline_first, "", "")
             for p, a, b_, j in zip(prompts, answers, base, pairs)]
    paths = alpaca_export.write_alpaca_eval(tmp_path / "out", "m", "b", prompts, answers, base, pairs, "j",
                                            reference=reference)
    rows = json.loads(paths["annotations"].read_text())
    assert [r["instruction"] for r in rows] == texts
    assert [r["instruction"] for r in json.loads(paths["model_outputs"].read_text())] == texts


def test_reference_errors_name_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(alpaca, "alpaca_eval_available", lambda: True)
    with pytest.raises(InputError, match="huggingface-cli download tatsu-lab/alpaca_eval"):
        alpaca.load_reference(tmp_path)
    write_alpaca_data(tmp_path, 5)
    monkeypatch.setattr(alpaca, "alpaca_eval_available", lambda: False)
    with pytest.raises(InputError, match="pip install alpaca-eval"):
        alpaca.load_reference(tmp_path)


def test_the_hub_source_downloads_both_files_once_and_reads_them(tmp_path, monkeypatch):
    import huggingface_hub

    write_alpaca_data(tmp_path, 5)
    calls = []

    def snapshot_download(repo_id, *, repo_type, allow_patterns):
        calls.append((repo_id, repo_type, sorted(allow_patterns)))
        return str(tmp_path)

    monkeypatch.setattr(alpaca, "alpaca_eval_available", lambda: True)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    ref = alpaca.load_reference(alpaca.HUB_SOURCE)
    assert calls == [("tatsu-lab/alpaca_eval", "dataset", sorted([alpaca.GAMED_FILE, alpaca.INSTRUCTIONS_FILE]))]
    assert len(ref.index) == 5 and ref.gamed_path == tmp_path / alpaca.GAMED_FILE

    def offline(*a, **k):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(InputError, match="could not download .*pass their directory instead"):
        alpaca.load_reference(alpaca.HUB_SOURCE)


def test_prompts_outside_alpaca_eval_fall_back_to_the_simplified_lc(tmp_path, monkeypatch):
    monkeypatch.setattr(alpaca, "alpaca_eval_available", lambda: True)
    write_alpaca_data(tmp_path, 12)
    reference = alpaca.load_reference(tmp_path)
    assert reference.positions(QUESTIONS[:3]) == [0, 1, 2]
    assert reference.positions(["not an AlpacaEval instruction"]) is None
    outcomes = [0.2, 0.9, 0.6, 0.4, 0.7]
    est, method = alpaca.length_controlled(outcomes, ["other"] * 5, MODEL[:5], BASE[:5], reference, n_boot=100)
    assert method == alpaca.SIMPLIFIED_LC
    assert est == stats.length_controlled_win_rate(outcomes, [len(a) for a in MODEL[:5]],
                                                   [len(b) for b in BASE[:5]], n_boot=100)


def test_the_alpaca_eval_2_baseline_file_serves_as_the_instruction_list(tmp_path, monkeypatch):
    monkeypatch.setattr(alpaca, "alpaca_eval_available", lambda: True)
    texts = write_alpaca_data(tmp_path, 6)
    (tmp_path / "alpaca_eval.json").rename(tmp_path / "alpaca_eval_gpt4_baseline.json")
    assert alpaca.load_reference(tmp_path).positions(texts[::-1]) == [5, 4, 3, 2, 1, 0]
