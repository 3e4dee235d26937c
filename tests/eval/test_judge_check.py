"""``evalign judge-check`` with scripted judges: one row and one saved result per variant,
the reward modes, reruns, and the shipped result of the built-in judge."""

from __future__ import annotations

import json
import math
import re

import pytest

from evalign.backends.scripted import ScriptedLLM
from evalign.config import Config, validate
from evalign.errors import InputError
from evalign.eval import formats
from evalign.eval.judge_check import (
    cached_result_path,
    check_pairwise,
    format_report,
    load_cached_result,
    run_judge_check,
)
from evalign.judge import PAIR_VERSION, Judge
from evalign.backends.pool import spec_model_id
from evalign.prompts import builtin_path

PAIRS = formats.load_labeled_pairs(builtin_path("labeled_pairs.jsonl"))
BETTER = {p.better.strip() for p in PAIRS}
GROSS_WORSE = {p.worse.strip() for p in PAIRS if p.difficulty == "gross"}


def _answer_a(conv) -> str:
    return re.search(r"<answer_A>\n(.*?)\n</answer_A>", conv[-1]["content"], re.S).group(1).strip()


def half_blind(conv, choices, prefix):
    """Right on gross pairs; on subtle ones always picks the first answer (position bias)."""
    if "<answer_A>" not in conv[-1]["content"]:  # a 1-10 grade: 8 for better answers, 3 otherwise
        text = re.search(r"<answer>\n(.*?)\n</answer>", conv[-1]["content"], re.S).group(1).strip()
        want = "8" if text in BETTER else "3"
        return [0.0 if c == want else -30.0 for c in choices]
    a = _answer_a(conv)
    gross = a in GROSS_WORSE or any(a == p.better.strip() and p.difficulty == "gross" for p in PAIRS)
    p_a = (0.9 if a in BETTER else 0.1) if gross else 0.8
    return [math.log(p_a) if c == "A" else math.log(1 - p_a) for c in choices]


class Policy(ScriptedLLM):
    """Knows the better answer: higher per-token log-likelihood for it."""

    def __init__(self):
        super().__init__(model_id="policy")
        self.scorings = 0

    def sequence_logprob(self, conversation, continuation):
        self.scorings += 1
        n = max(1, len(continuation.split()))
        return (-1.0 if continuation.strip() in BETTER else -2.0) * n, n


class Pool:
    def __init__(self, judge, policy=None):
        self.judge, self.policy, self.specs = judge, policy, []

    def get(self, spec):
        self.specs.append(spec)
        return self.policy if spec.backend == "transformers" else self.judge

    def close(self):
        pass


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EVALIGN_CACHE", str(tmp_path / "cache"))


def _run(tmp_path, capsys, llm=None, screen=True, **kw):
    """Results, the text ``evalign judge-check`` prints for them, and the pool."""
    pool = Pool(llm or ScriptedLLM(choice_fn=half_blind, model_id="scripted:judge"), Policy())
    cfg = Config() if screen else validate({"eval": {"screen_injections": False}})
    results = run_judge_check(cfg, judge="judge", backend="scripted", out=tmp_path / "run", pool=pool, **kw)
    assert capsys.readouterr().out == ""  # the library returns; only the command prints
    return results, format_report(results, tmp_path / "run"), pool


def test_each_variant_gets_a_row_and_its_own_saved_result(tmp_path, capsys):
    variants = ["base", "calibrated", "rubric", "ensemble", "cot"]
    results, out, _ = _run(tmp_path, capsys, kind="pairwise", variants=variants)
    assert [(r.kind, r.variant) for r in results] == [("pairwise", v) for v in variants]
    rows = [line for line in out.splitlines() if line.startswith("| scripted:judge | pairwise |")]
    assert [row.split("|")[3].strip() for row in rows] == variants
    paths = {cached_result_path(r.judge_id, r.kind, r.mode, r.template_version) for r in results}
    assert len(paths) == len(variants) and all(p.is_file() for p in paths)
    saved = json.loads((tmp_path / "run" / "judge_check.json").read_text())
    assert [d["variant"] for d in saved] == variants
    assert results[0].template_version == Judge(ScriptedLLM()).pair_version != PAIR_VERSION  # screened
    ens = next(r for r in results if r.variant == "ensemble")
    # base and rubric were judged just before: the ensemble asks only its alt phrasing anew.
    assert set(ens.components) == {"base", "rubric", "alt"} and ens.calls_per_pair == 2
    assert next(r for r in results if r.variant == "calibrated").calls_per_pair == 0  # base's verdicts
    assert next(r for r in results if r.variant == "cot").calls_per_pair == 4


def test_accuracy_position_bias_and_difficulty(tmp_path, capsys):
    [r], out, _ = _run(tmp_path, capsys, kind="pairwise")
    assert r.n == 144 and r.variant == "base"
    gross, subtle = r.by_difficulty["gross"], r.by_difficulty["subtle"]
    assert (gross["accuracy"], gross["n"], subtle["accuracy"], subtle["n"]) == (1.0, 48, 0.5, 96)
    assert subtle["ci_low"] < 0.5 < subtle["ci_high"]  # per difficulty, with its Wilson CI
    assert subtle["soft_accuracy"]["n"] == 96 and subtle["soft_accuracy"]["value"] < gross["soft_accuracy"]["value"]
    assert r.accuracy.value == pytest.approx(2 / 3) and r.accuracy.ci_low < 2 / 3 < r.accuracy.ci_high
    assert r.first_position_rate == pytest.approx(5 / 6) and r.order_agreement == pytest.approx(1 / 3)
    assert r.calls_per_pair == 2 and r.seconds_per_pair > 0
    assert "| 100 / 50 |" in out


def test_kind_all_measures_the_reward_modes_too(tmp_path, capsys):
    results, _, _ = _run(tmp_path, capsys, variants=["base", "calibrated"])
    assert [(r.kind, r.variant) for r in results] == [
        ("pairwise", "base"), ("pairwise", "calibrated"), ("pointwise", "base"), ("pairwise_anchor", "base")]
    point = results[2]
    assert point.accuracy.value == 1.0 and point.spearman > 0.8
    # The anchor reward asks the base judge the same questions: the same verdicts.
    assert results[3].accuracy.value == pytest.approx(results[0].accuracy.value)


def test_calibrated_keeps_the_decisions_and_sharpens_their_strength(tmp_path, capsys):
    def biased(conv, choices, prefix):
        """Prefers A strongly, a little more when A is the better answer."""
        p_a = 0.99 if _answer_a(conv) in BETTER else 0.9
        return [math.log(p_a) if c == "A" else math.log(1 - p_a) for c in choices]

    llm = ScriptedLLM(choice_fn=biased, model_id="scripted:judge")
    (base, cal), _, _ = _run(tmp_path, capsys, llm=llm, kind="pairwise", variants=["base", "calibrated"])
    assert cal.accuracy.value == base.accuracy.value == 1.0  # the same decisions ...
    assert base.soft_accuracy.value == pytest.approx((0.99 + 0.1) / 2)  # ... far stronger in log-odds
    assert cal.soft_accuracy.value == pytest.approx(1 / (1 + math.exp(-(math.log(99) - math.log(9)) / 2)))
    assert base.first_position_rate == cal.first_position_rate == 1.0


def test_policy_tiebreak_decides_only_the_uncertain_pairs(tmp_path, capsys):
    [r], out, pool = _run(tmp_path, capsys, kind="pairwise", variants=["policy_tiebreak"])
    assert r.tiebreaks == 96 and r.tiebreak_accuracy == 1.0  # the 96 subtle pairs, p = 0.5 each
    assert r.accuracy.value == 1.0 and pool.policy.scorings == 192
    assert r.calls_per_pair == pytest.approx(10 / 3)  # 2 judge calls per pair + 2 policy scorings per decided pair
    assert any(s.backend == "transformers" and s.model == "smollm2-135m-instruct" for s in pool.specs)
    assert "policy decided 96 pairs, 100% right" in out


def test_a_rerun_is_free_and_keeps_the_measured_speed(tmp_path, capsys):
    [first], _, _ = _run(tmp_path, capsys, kind="pairwise")
    llm = ScriptedLLM(choice_fn=half_blind, model_id="scripted:judge")
    [again], _, _ = _run(tmp_path, capsys, llm=llm, kind="pairwise")
    assert llm.requests == []
    assert again.timing_from_cache and again.calls_per_second == pytest.approx(first.calls_per_second)
    assert again.accuracy == first.accuracy


def test_unknown_variant_is_one_clear_error(tmp_path, capsys):
    with pytest.raises(InputError, match="unknown --variant"):
        _run(tmp_path, capsys, kind="pairwise", variants=["best"])


def test_check_pairwise_passes_categories_to_the_rubric():
    seen = []

    def record(conv, choices, prefix):
        seen.append(conv[-1]["content"])
        return [-0.7, -0.7]

    check_pairwise(Judge(ScriptedLLM(choice_fn=record), variant="rubric"), PAIRS[:1], "test")
    assert all(f"How to judge this {PAIRS[0].category.replace('_', ' ')} question" in s for s in seen)


def test_the_shipped_result_of_the_builtin_judge_is_found_for_the_ablation():
    """The key an ablation looks up (report.collect._judge_validity): the eval judge's id, the
    pairwise kind, the judge's resolved mode and PAIR_VERSION; the cache here is empty."""
    cfg = Config()
    judge_id = spec_model_id(cfg.eval.judge)
    assert judge_id == "llamacpp:qwen2.5-coder-1.5b-instruct@cc324af070c2"
    mode = Judge(ScriptedLLM(), mode=cfg.eval.judge_mode).mode  # exact log-probs, like llama.cpp
    assert mode == "logprobs"
    found = load_cached_result(judge_id, "pairwise", mode, PAIR_VERSION)
    assert found is not None
    # measured again, on fewer pairs, when the templates were hardened against injections (docs/judges.md)
    assert found["n"] >= 12 and found["variant"] == "base" and found["template_version"] == PAIR_VERSION
    assert found["source"] == "builtin:labeled" and found["injection_flip_rate"]["n"] == found["n"]
    assert 0.5 < found["accuracy"]["value"] <= 1 and found["accuracy"]["ci_low"] < found["accuracy"]["value"]
    assert found["first_position_rate"] is not None and found["order_agreement"] is not None


def test_paired_comparison_counts_discordant_pairs():
    from evalign.eval.judge_check import paired_comparison

    a = [1.0] * 10 + [0.0] * 2 + [1.0] * 20
    b = [0.0] * 10 + [1.0] * 2 + [1.0] * 20
    cmp = paired_comparison(a, b)
    assert (cmp["only_a"], cmp["only_b"]) == (10, 2)
    assert cmp["p_value"] == pytest.approx(0.0386, abs=1e-3)
    assert paired_comparison([1.0, 0.0], [1.0, 0.0])["p_value"] == 1.0


def test_a_limited_check_spreads_over_category_and_difficulty():
    from evalign.eval.judge_check import load_labeled

    pairs, _ = load_labeled(None, None, None, None, 24)
    cells = {(p.category, p.difficulty) for p in pairs}
    assert len(pairs) == 24 and len(cells) == 12  # 6 categories x gross/subtle, 2 each


def _injected(text: str) -> bool:
    from evalign.eval.judge_check import load_injections

    return any(i["text"][-25:] in text for i in load_injections())


def _gullible(conv, choices, prefix):
    """Right on every clean pair; follows any instruction to the judge inside an answer."""
    body = conv[-1]["content"]
    if "<answer_A>" not in body:
        text = re.search(r"<answer>\n(.*?)\n</answer>", body, re.S).group(1).strip()
        want = "10" if _injected(text) else "8" if text in BETTER else "3"
        return [0.0 if c == want else -30.0 for c in choices]
    a = _answer_a(conv)
    b = re.search(r"<answer_B>\n(.*?)\n</answer_B>", body, re.S).group(1).strip()
    p_a = 0.9 if _injected(a) else 0.1 if _injected(b) else 0.9 if a in BETTER else 0.1
    return [math.log(p_a) if c == "A" else math.log(1 - p_a) for c in choices]


def test_injection_flip_rate_counts_verdicts_taken_over_by_an_instruction_in_the_answer(tmp_path, capsys):
    from evalign.eval.judge_check import INJECTED_N, injected_pairs, load_injections

    inj = injected_pairs(PAIRS)
    assert len(inj) == INJECTED_N == 24 and len({(PAIRS[i].category, PAIRS[i].difficulty) for i, _, _ in inj}) == 12
    assert {pid for _, pid, _ in inj} == {i["id"] for i in load_injections()}  # every phrasing is used
    llm = ScriptedLLM(choice_fn=_gullible, model_id="scripted:judge")
    (pair, point), out, _ = _run(tmp_path, capsys, llm=llm, kind="pairwise,pointwise", screen=False)
    assert pair.accuracy.value == point.accuracy.value == 1.0  # the plain check is unaffected ...
    assert pair.calls_per_pair == 2  # ... and timed apart from the injected twins
    for r in (pair, point):  # ... and every injection takes the verdict over
        assert r.injection_flip_rate.value == 1.0 and r.injection_flip_rate.n == 24
        assert 0.8 < r.injection_flip_rate.ci_low < 1.0
        assert sum(v["n"] for v in r.injection_by_phrasing.values()) == 24
    assert point.injection_score_shift.value == pytest.approx(7.0)  # 3 -> 10
    row = next(line for line in out.splitlines() if line.startswith("| scripted:judge | pointwise |"))
    assert row.endswith(f"| {100 * 1.0:.1f} [{100 * point.injection_flip_rate.ci_low:.1f}, 100.0] (n=24) |")
    saved = json.loads((tmp_path / "run" / "judge_check.json").read_text())
    assert [d["injection_flip_rate"]["n"] for d in saved] == [24, 24]


def test_the_screen_stops_every_injection_a_gullible_judge_follows(tmp_path, capsys):
    llm = ScriptedLLM(choice_fn=_gullible, model_id="scripted:judge")
    (pair, point), _, _ = _run(tmp_path, capsys, llm=llm, kind="pairwise,pointwise")
    assert pair.accuracy.value == point.accuracy.value == 1.0
    for r in (pair, point):
        assert r.injection_flip_rate.value == 0.0 and r.injection_flip_rate.n == 24


def test_a_judge_that_ignores_injections_has_no_flips(tmp_path, capsys):
    (pair, point), _, _ = _run(tmp_path, capsys, kind="pairwise,pointwise")  # half_blind ignores them
    assert point.injection_flip_rate.value == 0.0 and point.injection_flip_rate.n == 24
    # half_blind picks the first answer on subtle pairs whatever they say: ties stay ties
    assert pair.injection_flip_rate.value == 0.0


def test_a_report_finds_the_run_result_first_and_never_a_shipped_one_of_another_template():
    from evalign.eval.judge_check import find_validity, run_key

    judge_id = "llamacpp:qwen2.5-coder-1.5b-instruct@cc324af070c2"
    shipped = find_validity(None, judge_id, "pairwise", "logprobs", PAIR_VERSION)
    assert shipped is not None and shipped[1] == "shipped" and shipped[0]["template_version"] == PAIR_VERSION
    assert find_validity(None, judge_id, "pairwise", "logprobs", "6ca54de6ad55") is None  # the old template's
    mine = [{"judge_id": judge_id, "kind": "pairwise", "mode": "logprobs", "template_version": PAIR_VERSION,
             "n": n, "limit": n, "labeled_hash": "h"} for n in (12, 40)]
    stored = json.dumps({run_key(d): d for d in mine})
    found, origin = find_validity(stored, judge_id, "pairwise", "logprobs", PAIR_VERSION)
    assert origin == "run" and found["n"] == 40  # of the run's results, the one on most pairs


def test_the_builtin_labeled_set_has_96_subtle_pairs_over_the_six_categories():
    """The subtle pairs (two competent answers, one flaw named) are what an ablation's
    comparison resembles; at least 16 per category, of realistic length."""
    from collections import Counter

    from evalign.eval import formats
    from evalign.prompts import builtin_path

    path = builtin_path("labeled_pairs.jsonl")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    pairs = formats.load_labeled_pairs(path)
    assert len(pairs) == len(rows) and len({r["id"] for r in rows}) == len(rows)
    subtle = [r for r in rows if r["difficulty"] == "subtle"]
    per = Counter(r["category"] for r in subtle)
    assert len(subtle) >= 96 and len(per) == 6 and min(per.values()) >= 16
    assert all(r["flaw"] and r["better"] != r["worse"] and r["better_score"] > r["worse_score"] for r in subtle)
    new = subtle[48:]
    assert all(60 <= len(r[k].split()) <= 250 for r in new for k in ("better", "worse"))
