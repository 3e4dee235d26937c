"""Arena-Hard score and exports against Arena-Hard-Auto's own show_result.py.

The known results in data/arena_hard_reference.json were printed by Arena-Hard's scripts
(v0.1 and the current v2.0, commits recorded there) run unchanged on this project's
exports of a small judged fixture; tools/arena_hard_reference.py regenerates them. Their
loaders are replicated below line for line (file name -> model name, the keys they index).
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
from pathlib import Path

import pytest

from evalign.backends.scripted import ScriptedLLM
from evalign.eval import formats
from evalign.eval.arena_hard import (
    V2_CATEGORY, answer_metadata, arena_hard_score, arena_label, battles, judged_pairs_score, pair_labels,
    token_len, write_arena_hard,
)
from evalign.eval.stats import Estimate
from evalign.eval.winrate import judge_win_rate
from evalign.judge import Judge
from evalign.judge.verdicts import Verdict

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = json.loads((Path(__file__).parent / "data" / "arena_hard_reference.json").read_text())
MODELS = list(FIXTURE["games"])
INDEX = {f"q{i:02d}": i for i in range(12)}


def _tool():
    spec = importlib.util.spec_from_file_location("arena_hard_reference", ROOT / "tools" / "arena_hard_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REF = _tool()


def _pct(e: Estimate) -> tuple[float, float, float]:
    return 100 * e.value, 100 * e.ci_low, 100 * e.ci_high


def test_the_fixture_labels_are_those_of_the_fixture_verdicts():
    for model in MODELS:
        assert [list(pair_labels(p)) for p in REF.judged(model)] == FIXTURE["labels"][model]


@pytest.mark.parametrize("model", MODELS)
def test_v01_score_and_interval_equal_show_result(model):
    theirs = FIXTURE["results"]["v0.1"][model]
    e = judged_pairs_score(REF.judged(model), version="v0.1")
    score, lo, hi = _pct(e)
    # --output's table gives their numbers to two decimals, the printed line to one.
    assert score == pytest.approx(theirs["score_2dp"], abs=0.01)
    assert lo == pytest.approx(theirs["lower_2dp"], abs=0.01)
    assert hi == pytest.approx(theirs["upper_2dp"], abs=0.01)
    assert round(score, 1) == theirs["score"]
    assert e.n == 12


@pytest.mark.parametrize("model", MODELS)
def test_v20_score_and_interval_equal_show_result(model):
    theirs = FIXTURE["results"]["v2.0"][model]
    e = judged_pairs_score(REF.judged(model), version="v2.0", seed=FIXTURE["seed"])
    score, lo, hi = _pct(e)
    assert score == pytest.approx(theirs["score"], abs=1e-3)  # printed to six decimals of a fraction
    # The interval is printed as offsets rounded to 0.1 point.
    assert lo - score == pytest.approx(theirs["ci_minus"], abs=0.05 + 1e-6)
    assert hi - score == pytest.approx(theirs["ci_plus"], abs=0.05 + 1e-6)


def test_v20_leaves_out_a_question_with_an_unparsed_game_and_v01_only_the_game():
    labels = [tuple(pair) for pair in FIXTURE["labels"]["model-weak"]]
    assert (None, "A>B") in labels
    assert arena_hard_score(labels, version="v0.1").n == 12
    assert arena_hard_score(labels, version="v2.0").n == 11


def test_several_models_in_one_v01_fit_keep_each_models_score():
    """With battles against one baseline only, the joint Bradley–Terry fit separates by model."""
    for model in MODELS:
        theirs = FIXTURE["results"]["v0.1 joint"][model]
        score = 100 * judged_pairs_score(REF.judged(model)).value
        assert score == pytest.approx(theirs["score_2dp"], abs=0.01)


def test_v01_with_another_baseline_name_keeps_the_score_and_collapses_its_interval():
    """The quirk evalign does not reproduce (module docstring): same score, lower == upper."""
    for model in MODELS:
        theirs = FIXTURE["results"]["v0.1 baseline evalign-base"][model]
        assert 100 * judged_pairs_score(REF.judged(model)).value == pytest.approx(theirs["score_2dp"], abs=0.01)
        assert theirs["lower_2dp"] == theirs["upper_2dp"]


# --- labels and battles -------------------------------------------------------------------


def test_labels_of_generated_probability_and_unparsed_verdicts():
    assert arena_label(Verdict(p_a=1.0, label="A>>B")) == "A>>B"
    assert arena_label(Verdict(p_a=0.0, label="B>A")) == "B>A"
    assert arena_label(Verdict(p_a=0.8, label="A")) == "A>B"
    assert arena_label(Verdict(p_a=0.2, label="B")) == "B>A"
    assert arena_label(Verdict(p_a=0.5, label="A")) == "A=B"
    assert arena_label(Verdict(parse_failed=True, raw="no verdict")) is None
    assert arena_label(None) is None


def test_battles_weight_strong_verdicts_and_order_games_as_each_version_does():
    # model first: A>>B (model much better); baseline first: A=B (tie)
    labels = [("A>>B", "A=B"), ("B>A", None)]
    v01, n01 = battles(labels, "v0.1")
    assert v01.tolist() == [0.5, 1.0, 1.0, 1.0, 0.0] and n01 == 2  # game 1 (baseline first) first
    v20, n20 = battles(labels, "v2.0")
    assert v20.tolist() == [1.0, 1.0, 1.0, 0.5] and n20 == 1  # game 2 first; second question dropped
    assert battles([("A>>B", "B>>A")], weight=1)[0].tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="not Arena-Hard verdicts"):
        battles([("A", "B")])
    assert arena_hard_score([(None, None)]) is None


def test_strong_verdicts_count_three_battles_in_arena_hard_and_once_in_evalign_win_rate():
    """A judge that says [[A>>B]] when the model's answer is A and [[A>B]] when the baseline's
    is: evalign's both-orders rate is 0.5 (one order each way), Arena-Hard's 0.75 (three
    battles won, one lost). Always [[A>>B]] is 0.5 in both."""
    def verdict_for(conv, seed):
        return "[[A>>B]]" if "<answer_A>\nMODEL" in conv[-1]["content"] else "[[A>B]]"

    judge = Judge(ScriptedLLM(generate_fn=verdict_for), mode="generate")
    questions = [f"Question {i}?" for i in range(6)]
    wr = judge_win_rate(judge, questions, ["MODEL answer"] * 6, ["BASE answer"] * 6, n_boot=200)
    assert wr.estimate.value == pytest.approx(0.5)
    assert wr.labels == [("A>>B", "A>B")] * 6
    assert wr.arena_hard == arena_hard_score(wr.labels)
    assert wr.arena_hard.value == pytest.approx(0.75) and wr.arena_hard.n == 6
    detail = wr.as_dict()
    assert detail["arena_hard"] == wr.arena_hard.as_dict()
    assert detail["labels"] == [["A>>B", "A>B"]] * 6
    assert arena_hard_score([("A>>B", "A>>B")] * 8).value == pytest.approx(0.5)


# --- exports read as Arena-Hard reads them --------------------------------------------------


def _write(tmp_path: Path, version: str) -> Path:
    ans = REF.answers()
    write_arena_hard(tmp_path, REF.BENCH[version], REF.prompts(), ans, {m: REF.judged(m) for m in MODELS},
                     REF.JUDGE, REF.BASELINE, version)
    return tmp_path / "data" / REF.BENCH[version]


def _jsonl(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line]


def test_v01_exports_parse_as_show_result_and_gen_judgment_read_them(tmp_path):
    data = _write(tmp_path, "v0.1")
    # utils.load_model_answers: file name -> model name, rows keyed by question_id
    model_answers = {}
    for filename in sorted(glob.glob(os.path.join(data, "model_answer", "*.jsonl"))):
        model_answers[os.path.basename(filename)[:-6]] = {r["question_id"]: r for r in _jsonl(filename)}
    assert set(model_answers) == set(MODELS) | {REF.BASELINE}
    # show_result.py: battles from each judgment row's model and both games' score
    judged = [r for f in glob.glob(f"{data}/model_judgment/{REF.JUDGE}/*jsonl") for r in _jsonl(f)]
    for row in judged:
        _ = row["question_id"], row["model"]
        first, second = row["games"][0]["score"], row["games"][1]["score"]
        assert [second, first] == FIXTURE["labels"][row["model"]][INDEX[row["question_id"]]]  # game 1: baseline as A
        assert set(row["games"][0]) == {"user_prompt", "judgment", "score"}
    # ... average #tokens of every model it rates (the judged models and the baseline)
    for model in {r["model"] for r in judged} | {REF.BASELINE}:
        for _, row in model_answers[model].items():
            turn = row["choices"][0]["turns"][0]
            assert turn["token_len"] == row["conv_metadata"]["token_len"] == token_len(turn["content"])
        # --style-control: conv_metadata by the file's model_id
        rows = _jsonl(data / "model_answer" / f"{model}.jsonl")
        assert rows[0]["model_id"] == model
        for r in rows:
            meta = r["conv_metadata"]
            assert {k for k in meta} >= {"token_len", "header_count", "list_count", "bold_count"}
    # gen_judgment.py: question turns, answers' first choice
    for q in _jsonl(data / "question.jsonl"):
        _ = q["question_id"], q["turns"][0]["content"], q["category"]
    # evalign's own readers
    assert [q.prompt for q in formats.load_arena_questions(data / "question.jsonl")] == [p.prompt for p in REF.prompts()]
    assert list(formats.load_arena_answers(data / "model_answer" / "model-even.jsonl").values()) == REF.answers()["model-even"]


def test_v20_exports_parse_as_show_result_and_gen_judgment_read_them(tmp_path):
    data = _write(tmp_path, "v2.0")
    # show_result.load_judgments
    rows = [r for f in glob.glob(os.path.join(data, "model_judgment", REF.JUDGE, "*.jsonl")) for r in _jsonl(f)]
    for r in rows:
        _ = r["uid"], r["model"], r["category"]
        assert r["category"] == V2_CATEGORY  # a JUDGE_SETTINGS key, and the script's default category
        x = r["games"]
        null = x[0] is None or x[1] is None or x[0]["score"] is None or x[1]["score"] is None
        assert [None if g is None else g["score"] for g in (x[1], x[0])] == FIXTURE["labels"][r["model"]][INDEX[r["uid"]]]
        assert null == (None in FIXTURE["labels"][r["model"]][INDEX[r["uid"]]])
    # get_model_style_metadata: model from the first row, metadata by uid
    for f in glob.glob(os.path.join(data, "model_answer", "*.jsonl")):
        answers = _jsonl(f)
        assert answers[0]["model"] == os.path.basename(f)[:-6]
        for a in answers:
            _ = a["uid"], a["metadata"]["token_len"], a["messages"][-1]["content"]["answer"]
    # gen_judgment.py: question prompt and category
    for q in _jsonl(data / "question.jsonl"):
        _ = q["uid"], q["prompt"], q["category"]
    assert [q.version for q in formats.load_arena_questions(data / "question.jsonl")] == ["v2.0"] * 12
    assert list(formats.load_arena_answers(data / "model_answer" / "model-weak.jsonl").values()) == REF.answers()["model-weak"]


def test_model_names_with_a_path_become_file_names_that_match_their_records(tmp_path):
    ans = REF.answers()
    pairs = [p.__class__(**{**p.__dict__, "model": "org/model"}) for p in REF.judged("model-even")]
    paths = write_arena_hard(tmp_path, "b", REF.prompts(), {"org/model": ans["model-even"], REF.BASELINE: ans[REF.BASELINE]},
                             {"org/model": pairs}, "judges/one", REF.BASELINE, "v0.1")
    assert paths["answer:org/model"].name == "org__model.jsonl"
    assert paths["judgment:org/model"].parent.name == "judges__one"
    assert _jsonl(paths["judgment:org/model"])[0]["model"] == "org__model"
    assert _jsonl(paths["answer:org/model"])[0]["model_id"] == "org__model"


def test_the_writer_refuses_inconsistent_input(tmp_path):
    ans = REF.answers()
    with pytest.raises(ValueError, match="baseline"):
        write_arena_hard(tmp_path, "b", REF.prompts(), {"model-even": ans["model-even"]}, {}, "j", REF.BASELINE)
    with pytest.raises(ValueError, match="compares 'model-even' with 'gpt-4-0314', not 'model-even' with 'other'"):
        write_arena_hard(tmp_path, "b", REF.prompts(), {"other": ans[REF.BASELINE]},
                         {"model-even": REF.judged("model-even")}, "j", "other")


def test_answer_metadata_counts_markdown_outside_code_blocks():
    meta = answer_metadata("# Title\n\n- a\n* b\n1. one\n**bold** and __under__\n```\n# not a header\n- nor a list\n```\n")
    assert meta["header_count"] == {"h1": 1, "h2": 0, "h3": 0, "h4": 0, "h5": 0, "h6": 0}
    assert meta["list_count"] == {"ordered": 1, "unordered": 2}
    assert meta["bold_count"] == {"**": 1, "__": 1}
    assert token_len("Hello world") == 2  # cl100k_base
