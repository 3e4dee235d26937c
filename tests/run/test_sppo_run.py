"""An eva run with solver.train.loss: sppo, end to end on the tiny policy (scripted creator and judge)."""

from __future__ import annotations

import json
import math

from evalign.config import ArmSpec, validate
from evalign.run.study import run_study
from evalign.store import RunStore
from .test_loop import tiny_config


def test_an_sppo_run_stores_win_probabilities_with_the_pairs_trains_on_them_and_evaluates(tmp_path, tiny_model_dir):
    data = tiny_config(tmp_path, tiny_model_dir).to_dict()
    train = data["solver"]["train"]
    for name in ("lr_scheduler", "sppo_win_prob", "sppo_temperature"):
        train.pop(name)  # left unset: the SPPO recipe's schedule applies
    train.update(loss="sppo", optimizer="rmsprop")  # the recipe's optimizer, named: the rate is the test's own
    cfg = validate(data)
    assert (cfg.solver.train.optimizer, cfg.solver.train.lr_scheduler) == ("rmsprop", "linear")
    result = run_study(cfg, arms=[ArmSpec(name="eva")], single=True)
    with RunStore(cfg.run_dir, readonly=True) as s:
        pairs = s.db.execute("SELECT source, chosen_win_prob, rejected_win_prob FROM pairs").fetchall()
        assert pairs and {p["source"] for p in pairs} == {"original", "evolved"}
        for p in pairs:
            assert 0 < p["rejected_win_prob"] < p["chosen_win_prob"] < 1
        trained = [json.loads(r["outputs"]) for r in s.stages() if r["name"] == "train" and r["status"] == "done"]
    assert trained and not trained[0]["skipped"] and trained[0]["steps"] >= 1
    assert all(math.isfinite(v) for v in trained[0]["losses"])
    records = [json.loads(f.read_text()) for f in (tmp_path / "run" / "checkpoints").glob("*/evalign_train.json")]
    assert records and all(r["config"]["loss"] == "sppo" for r in records)
    assert "| eva |" in result.table_markdown and "| theta0 |" in result.table_markdown


def test_pairwise_win_probabilities_are_judged_in_their_own_stages_and_trained_on(tmp_path, tiny_model_dir):
    data = tiny_config(tmp_path, tiny_model_dir, eval={"enabled": False}).to_dict()
    data["solver"]["train"].update(loss="sppo", sppo_win_prob="pairwise")
    cfg = validate(data)
    run_study(cfg, arms=[ArmSpec(name="eva")], single=True)
    with RunStore(cfg.run_dir, readonly=True) as s:
        stages = {r["name"]: r for r in s.stages() if r["status"] == "done"}
        assert {"win_prob_pool", "win_prob_evolved", "pairs", "train"} <= set(stages)
        assert stages["win_prob_pool"]["calls"] > 0  # the judge's comparisons are counted there
        pairs = s.db.execute("SELECT chosen_win_prob, rejected_win_prob FROM pairs").fetchall()
        assert pairs and all(0 <= p["chosen_win_prob"] <= 1 and 0 <= p["rejected_win_prob"] <= 1 for p in pairs)
        pairwise = s.db.execute("SELECT COUNT(*) FROM judgments WHERE kind='pairwise'").fetchone()[0]
    assert pairwise > 0
    assert not json.loads(stages["train"]["outputs"])["skipped"]
    run_study(cfg, arms=[ArmSpec(name="eva")], single=True)  # a rerun judges and trains nothing again
    with RunStore(cfg.run_dir, readonly=True) as s:
        assert sorted(r["key"] for r in s.stages()) == sorted(r["key"] for r in stages.values())
        assert s.db.execute("SELECT COUNT(*) FROM judgments WHERE kind='pairwise'").fetchone()[0] == pairwise
