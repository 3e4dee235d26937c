from __future__ import annotations

import math
import sqlite3

import pytest

from evalign.solver.pairs import build_pairs
from evalign.solver.win_prob import bradley_terry, judge_pairwise
from evalign.store import RunStore


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_bradley_terry_averages_the_win_probability_over_the_other_samples():
    got = bradley_terry([1.0, 2.0, 4.0, None], temperature=2.0)
    want = [(sig(-0.5) + sig(-1.5)) / 2, (sig(0.5) + sig(-1.0)) / 2, (sig(1.5) + sig(1.0)) / 2, None]
    assert got[3] is None
    assert got[:3] == pytest.approx(want[:3], abs=1e-12)
    assert bradley_terry([3.0, float("nan")]) == [None, None]  # one finite reward: nothing to compare


def test_pairs_carry_and_store_the_win_probabilities(tmp_path):
    est = lambda r: bradley_terry(r, 1.0)  # noqa: E731
    pairs, ties = build_pairs([1], ["q"], [["a", "b", "c"]], [[5.0, 1.0, 3.0]], "original", est)
    assert ties == 0 and (pairs[0].chosen, pairs[0].rejected) == ("a", "b")
    assert pairs[0].chosen_win_prob == pytest.approx((sig(4) + sig(2)) / 2)
    assert pairs[0].rejected_win_prob == pytest.approx((sig(-4) + sig(-2)) / 2)
    with RunStore(tmp_path / "run") as store:
        pid = store.add_prompts([{"uid": "u1", "text": "q", "origin": "seed"}])[0]
        store.put_pairs("k", [{**pairs[0].as_row(), "prompt_id": pid}])
        row = store.pairs("k")[0]
        assert (row["chosen_win_prob"], row["rejected_win_prob"]) == (pairs[0].chosen_win_prob,
                                                                      pairs[0].rejected_win_prob)


def test_a_run_directory_from_before_the_win_probability_columns_opens(tmp_path):
    with RunStore(tmp_path / "run"):
        pass
    db = sqlite3.connect(tmp_path / "run" / "run.db")
    db.execute("ALTER TABLE pairs DROP COLUMN chosen_win_prob")
    db.execute("ALTER TABLE pairs DROP COLUMN rejected_win_prob")
    db.commit()
    db.close()
    with RunStore(tmp_path / "run") as store:
        cols = {r["name"] for r in store.db.execute("PRAGMA table_info(pairs)")}
    assert {"chosen_win_prob", "rejected_win_prob"} <= cols


def test_the_rmsprop_optimizer_reaches_trls_config_and_adamw_keeps_trls_default(tmp_path):
    from evalign.config import TrainConfig
    from evalign.registry import LOSSES
    from evalign.solver.train import trainer_arguments

    def optim(**kw):
        cfg = TrainConfig(dtype="float32", **kw)
        return str(LOSSES.get("dpo").config(cfg, trainer_arguments(cfg, str(tmp_path), seed=0, quiet=True)).optim.value)

    assert "rmsprop" in optim(optimizer="rmsprop")
    assert "adamw" in optim()


class FakeJudge:
    """P(answer A better) = sigmoid(quality(A) - quality(B)) - 0.1: a position bias towards B that
    combining both orders cancels."""

    def __init__(self, quality):
        self.quality, self.items = quality, []

    def compare(self, items, description=""):
        from types import SimpleNamespace

        self.items += items
        return [SimpleNamespace(p_a=sig(self.quality[i.answer_a] - self.quality[i.answer_b]) - 0.1) for i in items]

    def combine(self, p_first, p_second, item=None):
        return (p_first + 1 - p_second) / 2


def test_pairwise_win_probabilities_come_from_the_judge_in_both_orders():
    judge = FakeJudge({"a": 2.0, "b": 0.0, "c": 1.0, "d": -1.0})
    # rewards pick the pair; d's reward is missing, so it is nobody's opponent
    got = judge_pairwise(judge, ["q"], [["a", "b", "c", "d"]], [[3.0, 1.0, 2.0, None]], [[0, 1]])
    assert got[0][0] == pytest.approx((sig(2) + sig(1)) / 2)  # a vs b, a vs c
    assert got[0][1] == pytest.approx((sig(-2) + sig(-1)) / 2)  # b vs a, b vs c
    judged = {(i.answer_a, i.answer_b) for i in judge.items}
    assert judged == {("a", "b"), ("b", "a"), ("a", "c"), ("c", "a"), ("b", "c"), ("c", "b")}  # each pair once
    assert len(judge.items) == 6
