"""alpaca_eval's own code on evalign's exports gives evalign's win rate and LC.

Runs ``alpaca_eval.main.evaluate`` with ``is_recompute_metrics_only`` (its path for reading a
results folder's annotations.json) on :func:`write_alpaca_eval`'s files. The official LC
needs AlpacaEval's hub data, which the wheel does not ship; the test serves a stand-in
written for it (tests/eval/alpaca_fixture.py) through alpaca_eval's hub download.
Needs ``pip install alpaca-eval==0.6.6``.
"""

from __future__ import annotations

import hashlib
import math
import re

import numpy as np
import pytest

pytest.importorskip("alpaca_eval")
pd = pytest.importorskip("pandas")
from alpaca_eval import main as alpaca_main  # noqa: E402
from alpaca_eval.metrics import glm_winrate  # noqa: E402

from evalign.backends.scripted import ScriptedLLM  # noqa: E402
from evalign.eval import alpaca  # noqa: E402
from evalign.eval.alpaca_export import folder_name, write_alpaca_eval  # noqa: E402
from evalign.eval.judgments import judged_pairs  # noqa: E402
from evalign.eval.sets import EvalPrompt  # noqa: E402
from evalign.eval.winrate import judge_win_rate  # noqa: E402
from evalign.judge import Judge  # noqa: E402

from .alpaca_fixture import alpaca_prompts, write_alpaca_data  # noqa: E402

MODEL, BASELINE, ANNOTATOR = "org/policy-1", "theta0", "evalign-judge"


def _length_biased(conv, choices, prefix):
    """A judge that prefers the longer answer, with per-pair noise: a fit with something to find."""
    text = conv[-1]["content"]
    a = re.search(r"<answer_A>\n(.*?)\n</answer_A>", text, re.S).group(1)
    b = re.search(r"<answer_B>\n(.*?)\n</answer_B>", text, re.S).group(1)
    noise = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 16**8 - 0.5
    p_a = 1 / (1 + math.exp(-((len(a) - len(b)) / 150 + 3 * noise)))
    return [math.log(p_a) if c == "A" else math.log(1 - p_a) for c in choices]


def _answers(n: int, seed: int) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    model = [" ".join(f"word{i}-{k}" for k in range(int(rng.integers(3, 60)))) for i in range(n)]
    base = [" ".join(f"base{i}-{k}" for k in range(int(rng.integers(3, 60)))) for i in range(n)]
    return model, base


def _evaluate(prompts, model_answers, base_answers, tmp_path, fn_metric, reference=None):
    """evalign's win rate, and alpaca_eval's metrics recomputed from evalign's export."""
    judge = Judge(ScriptedLLM(choice_fn=_length_biased))
    questions = [p.prompt for p in prompts]
    wr = judge_win_rate(judge, questions, model_answers, base_answers, n_boot=200, alpaca_reference=reference)
    pairs = judged_pairs(judge, [p.id for p in prompts], questions, MODEL, BASELINE, model_answers, base_answers)
    paths = write_alpaca_eval(tmp_path, MODEL, BASELINE, prompts, model_answers, base_answers, pairs, ANNOTATOR,
                              combine=judge.combine, reference=reference)
    leaderboard = tmp_path / "leaderboard.csv"  # alpaca_eval recomputes only models already on it
    pd.DataFrame({"mode": ["community"]}, index=[MODEL]).to_csv(leaderboard)
    board, _ = alpaca_main.evaluate(
        model_outputs=str(paths["model_outputs"]), reference_outputs=str(paths["reference_outputs"]),
        annotators_config=folder_name(ANNOTATOR), is_recompute_metrics_only=True,
        precomputed_leaderboard=str(leaderboard),
        fn_metric=fn_metric, sort_by="win_rate", is_return_instead_of_print=True,
    )
    return wr, board.loc[MODEL]


def test_win_rate_equals_alpaca_evals_on_any_prompt_set(tmp_path):
    prompts = [EvalPrompt(f"p{i}", "general", f"Explain idea number {i} briefly.") for i in range(30)]
    model, base = _answers(30, seed=3)
    wr, official = _evaluate(prompts, model, base, tmp_path, "get_winrate")
    assert official["n_total"] == wr.n == 30
    assert official["win_rate"] / 100 == pytest.approx(wr.estimate.value, abs=1e-12)
    assert wr.lc_method == alpaca.SIMPLIFIED_LC


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lc_on_alpaca_instructions_equals_alpaca_evals(tmp_path, monkeypatch, seed):
    texts = write_alpaca_data(tmp_path / "data", 40, seed=seed)
    reference = alpaca.load_reference(tmp_path / "data")
    order = np.random.default_rng(seed).permutation(40)  # evalign's prompt order need not be AlpacaEval's
    prompts = [alpaca_prompts(texts)[i] for i in order]
    model, base = _answers(40, seed=10 + seed)
    gamed = str(tmp_path / "data" / "df_gamed.csv")
    monkeypatch.setattr(glm_winrate, "hf_hub_download", lambda **kw: gamed)  # alpaca_eval's own read of it
    wr, official = _evaluate(prompts, model, base, tmp_path / "out", "get_length_controlled_winrate", reference)
    assert wr.lc_method == alpaca.OFFICIAL_LC
    assert official["win_rate"] / 100 == pytest.approx(wr.estimate.value, abs=1e-12)
    assert official["length_controlled_winrate"] / 100 == pytest.approx(wr.lc.value, abs=1e-9)
    half_width = 1.959963984540054 * official["lc_standard_error"] / 100
    assert (wr.lc.ci_low, wr.lc.ci_high) == pytest.approx((wr.lc.value - half_width, wr.lc.value + half_width))
    assert wr.lc.n == 40


def test_the_simplified_lc_is_not_alpaca_evals(tmp_path, monkeypatch):
    """The label matters: on the same judgments the two LCs differ."""
    texts = write_alpaca_data(tmp_path / "data", 40, seed=4)
    reference = alpaca.load_reference(tmp_path / "data")
    model, base = _answers(40, seed=14)
    outcomes = list(np.random.default_rng(4).uniform(0, 1, 40))
    official, label = alpaca.length_controlled(outcomes, texts, model, base, reference)
    simplified, other = alpaca.length_controlled(outcomes, texts, model, base, None, n_boot=100)
    assert (label, other) == (alpaca.OFFICIAL_LC, alpaca.SIMPLIFIED_LC)
    assert abs(official.value - simplified.value) > 1e-3
