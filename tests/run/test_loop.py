"""The eva loop end to end on a tiny policy with scripted creator and judge backends."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from evalign.run.study import DEFAULT_ARMS, run_study
from evalign.backends.scripted import hashed_choices, register_script
from evalign.config import ArmSpec, validate
from evalign.store import RunStore

STAGES_WITH_CREATOR = {"seed_pool", "generate_pool", "reward_pool", "informativeness", "sample", "evolve",
                       "filter", "generate_evolved", "reward_evolved", "pairs", "train"}


def rewrite(conv, seed):
    """A scripted creator: add a constraint to the prompt between <prompt> tags."""
    text = conv[-1]["content"]
    m = re.search(r"<prompt>\n?(.*?)\n?</prompt>", text, re.S)
    base = m.group(1).strip() if m else "Write something."
    return f"{base} Answer in exactly {3 + seed % 5} numbered steps, citing variant {seed % 97}."


register_script("creator", rewrite, hashed_choices)
register_script("junk-creator", lambda conv, seed: "", hashed_choices)

_interrupt = {"at": None, "calls": 0}


def interrupting_choices(conv, choices, prefix):
    _interrupt["calls"] += 1
    if _interrupt["at"] is not None and _interrupt["calls"] >= _interrupt["at"]:
        raise KeyboardInterrupt("simulated kill")
    return hashed_choices(conv, choices, prefix)


register_script("judge", lambda conv, seed: "Rating: [[5]]", interrupting_choices)


def tiny_config(tmp_path, tiny_model_dir, name="run", **sections):
    data = {
        "run": {"name": "t", "output_dir": str(tmp_path / name), "seed": 0, "iterations": 1},
        "policy": {"model": str(tiny_model_dir), "backend": "transformers", "batch_size": 16},
        "prompts": {"source": "builtin:seed", "limit": 8},
        "creator": {"model": {"model": "creator", "backend": "scripted"}, "num_evolutions": 2,
                    "sample_fraction": 0.5, "sampling": {"max_new_tokens": 64}},
        "solver": {
            "num_samples": 3,
            "sampling": {"max_new_tokens": 8},
            "reward": {"kind": "judge_pointwise", "model": {"model": "judge", "backend": "scripted"}},
            "train": {"learning_rate": 1e-3, "epochs": 1, "batch_size": 4, "gradient_accumulation_steps": 1,
                      "max_length": 128, "min_pairs": 1, "warmup_ratio": 0.0},
        },
        "eval": {"judge": {"model": "judge", "backend": "scripted"}, "winrate_limit": 4, "mt_limit": 2,
                 "answer_sampling": {"max_new_tokens": 8}, "bootstrap_samples": 200, "self_check": False},
    }
    for k, v in sections.items():
        data[k] = {**data.get(k, {}), **v}
    return validate(data)


def snapshot(run_dir):
    """Store contents that must not depend on interruptions (no timestamps, no row ids)."""
    with RunStore(run_dir, readonly=True) as s:
        db = s.db
        return {
            "prompts": sorted(tuple(r) for r in db.execute(
                "SELECT uid, text, origin, depth, operator, mutation, template_hash FROM prompts")),
            "generations": sorted(tuple(r) for r in db.execute("SELECT key, text FROM generations")),
            "rewards": sorted(tuple(r) for r in db.execute("SELECT key, round(score, 9) FROM rewards")),
            "pairs": sorted(tuple(r) for r in db.execute(
                "SELECT stage_key, source, chosen, rejected FROM pairs")),
            "judgments": sorted(tuple(r) for r in db.execute("SELECT key, round(coalesce(prob_a, score), 9) FROM judgments")),
            "stages": sorted(r[0] for r in db.execute("SELECT key FROM stages WHERE status='done'")),
        }


def figures(run_dir):
    """The report's work figures that must not depend on interruptions: each stage use (computed
    or reused, and its model calls) and each arm's creator and reward calls."""
    from evalign.report.collect import collect

    with RunStore(run_dir, readonly=True) as s:
        uses = json.loads(s.get_meta("study"))["stage_uses"]
        rows = collect(s)["rows"]
    return (sorted((u["arm"], u["iteration"], u["name"], u["key"], u["reused"], u["calls"]) for u in uses),
            sorted((r["arm"], r["creator_calls"], r["reward_calls"], r["judge_calls"]) for r in rows))


@pytest.fixture(autouse=True)
def _reset_interrupt():
    _interrupt.update(at=None, calls=0)
    yield
    _interrupt.update(at=None, calls=0)


def test_one_iteration_runs_every_stage_and_keeps_lineage(tmp_path, tiny_model_dir):
    cfg = tiny_config(tmp_path, tiny_model_dir)
    result = run_study(cfg, arms=[ArmSpec(name="eva")], single=True)
    with RunStore(cfg.run_dir, readonly=True) as s:
        names = {r["name"] for r in s.stages() if r["status"] == "done"}
        assert STAGES_WITH_CREATOR <= names
        evolved = s.db.execute("SELECT id, depth FROM prompts WHERE origin='evolved'").fetchall()
        assert len(evolved) == 4 * 2  # 50% of 8 sampled, 2 chained rounds each
        for row in evolved:
            chain = s.lineage(row["id"])
            assert chain[-1]["origin"] == "seed" and len(chain) == row["depth"] + 1
        sources = {r["source"] for r in s.db.execute("SELECT source FROM pairs")}
        assert sources == {"original", "evolved"}
        sampled = s.db.execute("SELECT COUNT(*) FROM prompt_events WHERE kind='sampled'").fetchone()[0]
        assert sampled == 4
        study = json.loads(s.get_meta("study"))
    ckpt = study["arms"]["eva"]["seeds"]["0"]["checkpoint"]
    assert (tmp_path / "run" / "checkpoints").exists() and ckpt.startswith(str(tmp_path / "run"))
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(ckpt)  # a plain, loadable HF directory
    report = tmp_path / "run" / "report"
    for name in ("results.md", "results.csv", "results.json", "report.html"):
        assert (report / name).is_file()
    assert "| eva |" in result.table_markdown and "| theta0 |" in result.table_markdown


def test_a_rerun_redoes_no_work(tmp_path, tiny_model_dir):
    cfg = tiny_config(tmp_path, tiny_model_dir)
    run_study(cfg, arms=[ArmSpec(name="eva")], single=True)
    before = snapshot(cfg.run_dir)
    figures_before = figures(cfg.run_dir)
    _interrupt["at"] = 1  # any judge call now would raise
    run_study(cfg, arms=[ArmSpec(name="eva")], single=True)
    assert snapshot(cfg.run_dir) == before
    assert figures(cfg.run_dir) == figures_before  # the study's uses are recorded once


def test_resume_after_a_kill_mid_stage_ends_like_an_uninterrupted_run(tmp_path, tiny_model_dir):
    clean = tiny_config(tmp_path, tiny_model_dir, name="clean")
    run_study(clean, arms=[ArmSpec(name="eva")], single=True)
    _interrupt.update(at=None, calls=0)

    killed = tiny_config(tmp_path, tiny_model_dir, name="killed")
    _interrupt.update(at=30, calls=0)  # inside the evolved prompts' reward stage
    with pytest.raises(KeyboardInterrupt):
        run_study(killed, arms=[ArmSpec(name="eva")], single=True)
    with RunStore(killed.run_dir, readonly=True) as s:
        partial = s.db.execute("SELECT COUNT(*) FROM rewards").fetchone()[0]
        running = [r["name"] for r in s.stages() if r["status"] == "running"]
    assert partial > 0 and running  # killed mid-stage with work committed
    _interrupt.update(at=None, calls=0)
    run_study(killed, arms=[ArmSpec(name="eva")], single=True)
    a, b = snapshot(clean.run_dir), snapshot(killed.run_dir)
    assert a == b
    # The report counts the killed process's work too: the stages it finished are computed by
    # this run (not "reused"), and the killed stage's calls include those committed before the kill.
    uses, rows = figures(killed.run_dir)
    assert (uses, rows) == figures(clean.run_dir)
    assert any(calls for *_, calls in uses) and all(not reused for *_, reused, _ in uses)
    with RunStore(killed.run_dir, readonly=True) as s:
        walls = [float(r[0]) for r in s.db.execute("SELECT value FROM meta WHERE key LIKE 'wall:%'")]
        study = json.loads(s.get_meta("study"))
    assert len(walls) == 2 and all(w > 0 for w in walls)  # both processes' time, the killed one's too
    assert study["wall_seconds"] == pytest.approx(sum(walls))


def test_arms_share_equal_stages(tmp_path, tiny_model_dir):
    cfg = tiny_config(tmp_path, tiny_model_dir)
    arms = [a for a in DEFAULT_ARMS if a.name in ("no-creator", "eva", "metric-variance", "op-self_instruct")]
    run_study(cfg, arms=arms)
    with RunStore(cfg.run_dir, readonly=True) as s:
        study = json.loads(s.get_meta("study"))
    uses = study["stage_uses"]
    computed = [(u["name"], u["arm"]) for u in uses if not u["reused"]]
    # θ0's samples and rewards: computed once, reused by every other arm.
    assert [n for n, _ in computed].count("generate_pool") == 1
    assert [n for n, _ in computed].count("reward_pool") == 1
    # eva and op-self_instruct differ only in the operator: one sample stage between them;
    # metric-variance samples differently.
    assert [n for n, _ in computed].count("sample") == 2
    assert [n for n, _ in computed].count("evolve") == 3
    reused = {(u["name"], u["arm"]) for u in uses if u["reused"]}
    assert ("sample", "op-self_instruct") in reused
    assert study["arms"]["no-creator"]["seeds"]["0"]["summary"]["iteration_1"].get("sampled") is None
    table = (tmp_path / "run" / "report" / "results.md").read_text()
    for arm in ("theta0", "no-creator", "eva", "metric-variance", "op-self_instruct"):
        assert f"| {arm} |" in table
    rows = {r["arm"]: r for r in json.loads((tmp_path / "run" / "report" / "results.json").read_text())["rows"]}
    assert rows["eva"]["win_rate_vs_baseline"] is not None  # eval.vs_baseline is on by default


def test_a_creator_that_returns_junk_leaves_the_iteration_running(tmp_path, tiny_model_dir, caplog):
    cfg = tiny_config(tmp_path, tiny_model_dir, creator={"model": {"model": "junk-creator", "backend": "scripted"}})
    run_study(cfg, arms=[ArmSpec(name="eva")], single=True)
    with RunStore(cfg.run_dir, readonly=True) as s:
        study = json.loads(s.get_meta("study"))
        reasons = [r["detail"] for r in s.db.execute("SELECT detail FROM prompt_events WHERE kind='filter'")]
    summary = study["arms"]["eva"]["seeds"]["0"]["summary"]["iteration_1"]
    assert summary["kept"] == 0 and summary["filtered"] == {"empty": summary["evolved"]}
    assert reasons and set(reasons) == {"empty"}
    assert summary["train_pairs"] > 0  # trained on the buffer of original prompts


def test_several_seeds_aggregate_per_arm_with_paired_comparisons(tmp_path, tiny_model_dir):
    # vs_baseline off (as the cpu preset): arms are compared through their win rates vs θ0 only.
    cfg = tiny_config(tmp_path, tiny_model_dir, eval={"vs_baseline": False})
    arms = [a for a in DEFAULT_ARMS if a.name in ("no-creator", "eva", "metric-mean")]
    result = run_study(cfg, arms=arms, seeds=2)
    import json as _json

    results = _json.loads((tmp_path / "run" / "report" / "results.json").read_text())
    rows = {r["arm"]: r for r in results["rows"]}
    assert rows["eva"]["n_seeds"] == 2 and rows["metric-mean"]["n_seeds"] == 2
    with RunStore(cfg.run_dir, readonly=True) as s:
        study = json.loads(s.get_meta("study"))
    seeds = study["arms"]["eva"]["seeds"]
    assert seeds["0"]["policy_id"] != seeds["1"]["policy_id"]  # different seeds, different runs
    # Two-level intervals (seeds, then prompts); n counts the evaluation prompts the seeds share.
    assert results["intervals"]["levels"] == ["seeds", "prompts"]
    assert rows["eva"]["win_rate"]["n"] == 4
    assert len(rows["eva"]["seed_spread"]["win_rate"]["per_seed"]) == 2
    assert "intervals are two-level: seeds, then prompts" in result.table_markdown
    assert rows["metric-mean"]["diff_win_rate_vs_default"] is not None
    assert rows["eva"].get("diff_win_rate_vs_default") is None  # the default is the reference
    assert "Δ win rate vs eva" in result.table_markdown
    assert rows["metric-mean"]["win_rate_vs_baseline"] is None and not result.missing
    with RunStore(cfg.run_dir, readonly=True) as s:
        (winrates,) = s.db.execute("SELECT COUNT(*) FROM stages WHERE name='eval_winrate'").fetchone()
    policies = {e["policy_id"] for a in ("no-creator", "eva", "metric-mean") for e in study["arms"][a]["seeds"].values()}
    assert winrates == len(policies)  # each trained policy vs θ0 only; none judged against no-creator


# ---------------------------------------------------------------- checkpoints of moved, copied, damaged runs

def _count_training(monkeypatch):
    """Record (base model, output dir) of every training the loop starts."""
    from evalign.run import loop

    calls = []
    real = loop.train_preference

    def counted(base_path, pairs, cfg, out_dir, **kw):
        calls.append((str(base_path), str(out_dir)))
        return real(base_path, pairs, cfg, out_dir, **kw)

    monkeypatch.setattr(loop, "train_preference", counted)
    return calls


def _no_eval(tmp_path, tiny_model_dir, name, iterations=1):
    cfg = tiny_config(tmp_path, tiny_model_dir, name=name, eval={"enabled": False})
    return validate({**cfg.to_dict(), "run": {**cfg.to_dict()["run"], "iterations": iterations}})


def _train_outputs(run_dir):
    with RunStore(run_dir, readonly=True) as s:
        return [json.loads(r["outputs"]) for r in s.stages() if r["name"] == "train" and r["status"] == "done"]


def test_a_moved_run_resumes_from_its_own_checkpoints_without_retraining(tmp_path, tiny_model_dir, monkeypatch):
    import shutil

    from evalign.run import loop

    passes = {"n": 0}
    real_point = loop.faults.point

    def kill_at_second_training(name):
        if name == "stage:train:begin":
            passes["n"] += 1
            if passes["n"] == 2:
                raise KeyboardInterrupt("killed before iteration 2 trains")
        real_point(name)

    monkeypatch.setattr(loop.faults, "point", kill_at_second_training)
    first = _no_eval(tmp_path, tiny_model_dir, "before", iterations=2)
    with pytest.raises(KeyboardInterrupt):
        run_study(first, arms=[ArmSpec(name="eva")], single=True)
    [done] = _train_outputs(first.run_dir)
    assert done["checkpoint"] == f"checkpoints/{Path(done['checkpoint']).name}"  # relative to the run
    assert done["weights"]["model.safetensors"]["of"] == "file"

    moved = tmp_path / "elsewhere" / "after"
    moved.parent.mkdir()
    shutil.move(first.run_dir, moved)
    calls = _count_training(monkeypatch)
    second = _no_eval(tmp_path, tiny_model_dir, "elsewhere/after", iterations=2)
    run_study(second, arms=[ArmSpec(name="eva")], single=True)
    # only iteration 2 trains, from iteration 1's checkpoint in the moved directory
    assert len(calls) == 1 and calls[0][0].startswith(str(moved / "checkpoints")) and calls[0][1].startswith(str(moved))
    with RunStore(moved, readonly=True) as s:
        entry = json.loads(s.get_meta("study"))["arms"]["eva"]["seeds"]["0"]
    assert entry["checkpoint"].startswith(str(moved / "checkpoints"))
    assert all(p.startswith(str(moved)) for p in entry["checkpoints"]) and len(entry["checkpoints"]) == 2
    calls.clear()
    run_study(second, arms=[ArmSpec(name="eva")], single=True)
    assert calls == []


def test_a_copied_run_without_its_checkpoint_retrains_instead_of_using_the_originals(tmp_path, tiny_model_dir,
                                                                                  monkeypatch, caplog):
    import shutil

    original = _no_eval(tmp_path, tiny_model_dir, "original")
    run_study(original, arms=[ArmSpec(name="eva")], single=True)
    copy = tmp_path / "copy"
    shutil.copytree(original.run_dir, copy)
    [ckpt] = (copy / "checkpoints").iterdir()
    shutil.rmtree(ckpt)
    # as evalign versions before run-relative paths recorded it: the original's absolute path
    with RunStore(copy) as s, s.transaction():
        for r in s.stages():
            if r["name"] == "train":
                out = json.loads(r["outputs"])
                out["checkpoint"] = str(original.run_dir / "checkpoints" / ckpt.name)
                del out["weights"]
                s.db.execute("UPDATE stages SET outputs=? WHERE key=?", (json.dumps(out), r["key"]))
    calls = _count_training(monkeypatch)
    with caplog.at_level("WARNING"):
        run_study(_no_eval(tmp_path, tiny_model_dir, "copy"), arms=[ArmSpec(name="eva")], single=True)
    assert len(calls) == 1 and calls[0][1] == str(ckpt)  # trained again, into the copy
    assert f"checkpoint {ckpt} is missing" in caplog.text
    with RunStore(copy, readonly=True) as s:
        entry = json.loads(s.get_meta("study"))["arms"]["eva"]["seeds"]["0"]
    assert entry["checkpoint"] == str(ckpt) and (ckpt / "model.safetensors").is_file()
    [done] = _train_outputs(copy)
    assert done["checkpoint"] == f"checkpoints/{ckpt.name}" and "weights" in done


def test_a_truncated_checkpoint_is_detected_and_retrained(tmp_path, tiny_model_dir, monkeypatch, caplog):
    cfg = _no_eval(tmp_path, tiny_model_dir, "run")
    run_study(cfg, arms=[ArmSpec(name="eva")], single=True)
    [ckpt] = (cfg.run_dir / "checkpoints").iterdir()
    weights = ckpt / "model.safetensors"
    size = weights.stat().st_size
    with open(weights, "r+b") as fh:
        fh.truncate(size // 2)
    calls = _count_training(monkeypatch)
    with caplog.at_level("WARNING"):
        run_study(cfg, arms=[ArmSpec(name="eva")], single=True)
    assert len(calls) == 1
    assert f"model.safetensors has {size // 2} bytes, {size} when trained" in caplog.text
    assert weights.stat().st_size == size
    # the same bytes of the same size: found by their hash
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    calls.clear()
    run_study(cfg, arms=[ArmSpec(name="eva")], single=True)
    assert len(calls) == 1
    calls.clear()
    run_study(cfg, arms=[ArmSpec(name="eva")], single=True)
    assert calls == []


def test_the_paper_protocol_shares_the_first_dpo_round_and_reports_theta1(tmp_path, tiny_model_dir, monkeypatch):
    """iterations 2 / first_iteration 2, as the cpu preset: θ0 → θ1 once for every arm, then
    each arm's own round from θ1; θ1 is evaluated and has its own row."""
    cfg = tiny_config(tmp_path, tiny_model_dir, run={"iterations": 2}, creator={"first_iteration": 2})
    arms = [a for a in DEFAULT_ARMS if a.name in ("no-creator", "eva", "metric-variance", "op-self_instruct")]
    trainings = _count_training(monkeypatch)
    result = run_study(cfg, arms=arms)
    with RunStore(cfg.run_dir, readonly=True) as s:
        study = json.loads(s.get_meta("study"))
        results = json.loads((cfg.run_dir / "report" / "results.json").read_text())
    uses = study["stage_uses"]
    first = [u for u in uses if u["iteration"] == 1]
    # Iteration 1 has the creator off in every arm, so its stage keys are the same across arms
    # (an arm's metric or operator does not enter them): each stage is computed once.
    assert {u["name"] for u in first} == {"generate_pool", "reward_pool", "pairs", "train"}
    for name in ("generate_pool", "reward_pool", "pairs", "train"):
        of = [u for u in first if u["name"] == name]
        assert {u["arm"] for u in of} == {a.name for a in arms}
        assert len({u["key"] for u in of}) == 1, name
        assert sum(not u["reused"] for u in of) == 1, name
    train_key = next(u["key"] for u in first if u["name"] == "train")
    theta1 = study["arms"]["theta1"]["seeds"]["0"]
    assert study["start_arm"] == "theta1" and theta1["policy_id"] == f"ckpt:{train_key[:16]}"
    # Iteration 2 is each arm's own: eva's creator from θ1, the no-creator arm's plain DPO round.
    second = {(u["arm"], u["name"]) for u in uses if u["iteration"] == 2}
    assert ("eva", "evolve") in second and ("no-creator", "evolve") not in second
    assert ("no-creator", "train") in second
    for arm in ("eva", "no-creator"):
        summary = study["arms"][arm]["seeds"]["0"]["summary"]
        assert "sampled" not in summary["iteration_1"]
        assert ("sampled" in summary["iteration_2"]) == (arm == "eva")
        assert study["arms"][arm]["seeds"]["0"]["policy_id"] != theta1["policy_id"]
    # One training from θ0 (the shared round); every other starts from θ1's weights (arms whose
    # pairs came out equal, e.g. a creator whose outputs were all filtered, share one).
    bases = [Path(base) for base, _ in trainings]
    assert bases[0] == Path(tiny_model_dir) and len(bases) >= 3
    assert bases[1:] == [Path(theta1["checkpoint"])] * (len(bases) - 1)
    # θ1 is evaluated like an arm, against θ0 only, and has its own row after θ0.
    rows = {r["arm"]: r for r in results["rows"]}
    assert [r["arm"] for r in results["rows"]][:4] == ["theta0", "theta1", "no-creator", "eva"]
    assert rows["theta1"]["win_rate"] is not None and rows["theta1"]["score"] is not None
    assert rows["theta1"]["win_rate_vs_baseline"] is None
    assert rows["theta1"]["diff_win_rate_vs_default"] is not None
    assert "| theta1 |" in result.table_markdown and not result.missing
