"""Online eva (solver.mode: online) end to end on the tiny policy, with the scripted creator and judge:
the creator's stages between RLOO/GRPO phases, lineage, rollouts, resume after a kill mid-phase, and
the ablation's table."""

from __future__ import annotations

import csv
import io
import json

import pytest

from evalign.config import ArmSpec, validate
from evalign.run import loop
from evalign.run.study import DEFAULT_ARMS, run_study
from evalign.store import RunStore
from .test_loop import snapshot, tiny_config


def online_config(tmp_path, tiny_model_dir, name="run", iterations=1, algorithm="rloo", **sections):
    data = tiny_config(tmp_path, tiny_model_dir, name=name, **sections).to_dict()
    data["run"]["iterations"] = iterations
    data["solver"].update(mode="online", online={"algorithm": algorithm, "learning_rate": 1e-3, "prompts_per_step": 2})
    return validate(data)


def rollouts(run_dir):
    with RunStore(run_dir, readonly=True) as s:
        return sorted(tuple(r) for r in s.db.execute(
            "SELECT r.stage_key, p.uid, r.step, r.sample_index, r.text, round(r.reward, 9) "
            "FROM rollouts r JOIN prompts p ON p.id = r.prompt_id"))


def test_an_online_run_evolves_prompts_before_its_rloo_phase_and_keeps_their_lineage(tmp_path, tiny_model_dir):
    cfg = online_config(tmp_path, tiny_model_dir)
    result = run_study(cfg, arms=[ArmSpec(name="eva")], single=True)
    with RunStore(cfg.run_dir, readonly=True) as s:
        names = {r["name"] for r in s.stages() if r["status"] == "done"}
        assert {"generate_pool", "reward_pool", "informativeness", "sample", "evolve", "filter", "online"} <= names
        assert not names & {"pairs", "train", "generate_evolved", "reward_evolved"}  # offline stages: none
        evolved = s.db.execute("SELECT id, depth FROM prompts WHERE origin='evolved'").fetchall()
        assert evolved
        for row in evolved:
            chain = s.lineage(row["id"])
            assert chain[-1]["origin"] == "seed" and len(chain) == row["depth"] + 1
        origins = {r["origin"] for r in s.db.execute(
            "SELECT DISTINCT p.origin FROM rollouts r JOIN prompts p ON p.id = r.prompt_id")}
        assert origins == {"seed", "evolved"}  # the buffer mixes original and evolved prompts
        online = json.loads(next(r["outputs"] for r in s.stages() if r["name"] == "online"))
        assert online["steps"] >= 1 and online["n_rollouts"] > 0 and not online["skipped"]
        phase_calls = next(r["calls"] for r in s.stages() if r["name"] == "online")
        study = json.loads(s.get_meta("study"))
    assert phase_calls > 0  # the rollouts' rewards are judged (and counted) inside the phase
    seed = study["arms"]["eva"]["seeds"]["0"]
    assert seed["solver"] == "online:rloo" and seed["policy_id"].startswith("ckpt:")
    assert seed["summary"]["iteration_1"]["informativeness_from"] == "samples"
    assert "| eva |" in result.table_markdown and "| theta0 |" in result.table_markdown
    assert "Solver: online eva with RLOO (TRL RLOOTrainer)" in result.table_markdown
    rows = {r["arm"]: r for r in csv.DictReader(io.StringIO((tmp_path / "run" / "report" / "results.csv").read_text()))}
    assert rows["eva"]["solver"] == "online:rloo" and rows["theta0"]["solver"] == "offline"
    assert rows["eva"]["train_pairs"] == "" and int(rows["eva"]["reward_calls"]) >= phase_calls


def test_later_phases_read_informativeness_from_the_last_phases_rollouts(tmp_path, tiny_model_dir):
    cfg = online_config(tmp_path, tiny_model_dir, iterations=2, algorithm="grpo", eval={"enabled": False})
    run_study(cfg, arms=[ArmSpec(name="eva")], single=True)
    with RunStore(cfg.run_dir, readonly=True) as s:
        done = [r for r in s.stages() if r["status"] == "done"]
        by_iteration = {(r["name"], r["iteration"]) for r in done}
        study = json.loads(s.get_meta("study"))
        phase1 = next(r["key"] for r in done if r["name"] == "online" and r["iteration"] == 1)
        info2 = next(r["key"] for r in done if r["name"] == "informativeness" and r["iteration"] == 2)
        events = s.db.execute("SELECT COUNT(*) FROM prompt_events WHERE stage_key=? AND kind='informativeness'",
                              (info2,)).fetchone()[0]
    assert ("online", 1) in by_iteration and ("online", 2) in by_iteration
    assert ("generate_pool", 2) not in by_iteration  # no extra sampling: the rollouts are the samples
    summary = study["arms"]["eva"]["seeds"]["0"]["summary"]
    assert summary["iteration_2"]["informativeness_from"] == "rollouts"
    assert events == summary["iteration_2"]["pool"] and phase1
    # the second phase starts from the first phase's checkpoint
    assert len(study["arms"]["eva"]["seeds"]["0"]["checkpoints"]) == 2


def _kill_mid_phase(monkeypatch, after_batches: int):
    """Make the next online phase raise KeyboardInterrupt after scoring ``after_batches`` batches."""
    real = loop.train_online

    def killing(base, prompts, score, *args, **kw):
        seen = {"n": 0}

        def scored(texts, responses):
            if seen["n"] >= after_batches:
                raise KeyboardInterrupt("simulated kill")
            seen["n"] += 1
            return score(texts, responses)

        return real(base, prompts, scored, *args, **kw)

    monkeypatch.setattr(loop, "train_online", killing)


def test_a_kill_mid_phase_resumes_and_ends_like_an_uninterrupted_run(tmp_path, tiny_model_dir, monkeypatch):
    clean = online_config(tmp_path, tiny_model_dir, name="clean", eval={"enabled": False})
    run_study(clean, arms=[ArmSpec(name="eva")], single=True)

    killed = online_config(tmp_path, tiny_model_dir, name="killed", eval={"enabled": False})
    _kill_mid_phase(monkeypatch, after_batches=1)
    with pytest.raises(KeyboardInterrupt):
        run_study(killed, arms=[ArmSpec(name="eva")], single=True)
    with RunStore(killed.run_dir, readonly=True) as s:
        running = [r["name"] for r in s.stages() if r["status"] == "running"]
        assert running == ["online"]  # killed inside the phase, with its first rewards committed
        assert not s.db.execute("SELECT COUNT(*) FROM rollouts").fetchone()[0]
    assert not list((tmp_path / "killed" / "checkpoints").glob("*/model.safetensors"))
    monkeypatch.undo()
    run_study(killed, arms=[ArmSpec(name="eva")], single=True)
    assert snapshot(killed.run_dir) == snapshot(clean.run_dir)
    assert rollouts(killed.run_dir) == rollouts(clean.run_dir) != []
    from safetensors.torch import load_file

    [a] = (tmp_path / "clean" / "checkpoints").glob("*/model.safetensors")
    [b] = (tmp_path / "killed" / "checkpoints").glob("*/model.safetensors")
    wa, wb = load_file(str(a)), load_file(str(b))
    assert all((wa[k] == wb[k]).all() for k in wa)  # the same policy
    before = rollouts(killed.run_dir)
    run_study(killed, arms=[ArmSpec(name="eva")], single=True)  # a rerun does nothing again
    assert rollouts(killed.run_dir) == before


def test_the_online_ablation_has_the_offline_tables_shape(tmp_path, tiny_model_dir):
    arms = [a for a in DEFAULT_ARMS if a.name in ("no-creator", "eva", "op-self_instruct")]
    offline = tiny_config(tmp_path, tiny_model_dir, name="offline")
    online = online_config(tmp_path, tiny_model_dir, name="online")
    off = run_study(offline, arms=arms)
    on = run_study(online, arms=arms)

    def shape(markdown):
        lines = [ln for ln in markdown.splitlines() if ln.startswith("|")]
        return lines[0], [ln.split("|")[1].strip() for ln in lines[2:]]

    assert shape(on.table_markdown) == shape(off.table_markdown)
    assert shape(on.table_markdown)[1] == ["theta0", "no-creator", "eva", "op-self_instruct"]
    assert "Solver: online eva with RLOO" in on.table_markdown and "Solver:" not in off.table_markdown
    with RunStore(online.run_dir, readonly=True) as s:
        study = json.loads(s.get_meta("study"))
        phases = [r for r in s.stages() if r["name"] == "online" and r["status"] == "done"]
    assert {study["arms"][a.name]["seeds"]["0"]["solver"] for a in arms} == {"online:rloo"}
    assert len(phases) == 3  # one per arm: no-creator on the pool, the creator arms on their buffers
    baseline = study["arms"]["no-creator"]["seeds"]["0"]["summary"]["iteration_1"]
    assert baseline["buffer"] == baseline["pool"] and "sampled" not in baseline
