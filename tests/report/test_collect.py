"""The report's intervals from a run store with synthetic evaluations: one seed resamples
prompts only (and the table says so); several seeds resample seeds, then prompts, for every
arm and every Δ; the shared first round's policy θ1 gets its own row."""

from __future__ import annotations

import numpy as np
import pytest

from evalign.eval import stats
from evalign.report import build_report, missing_evaluation, tables
from evalign.report.collect import collect
from evalign.report.record import ArmRecord, SeedRecord, StudyRecord
from evalign.store import RunStore

N_PROMPTS = 40


def _win(store: RunStore, key: str, outcomes) -> dict[str, str]:
    n = len(outcomes)
    store.put_metric(key, None, "win_rate_vs_theta0", float(np.mean(outcomes)), None, None, n,
                     {"outcomes": [float(o) for o in outcomes], "lengths_model": [300] * n,
                      "lengths_baseline": [300] * n})
    scores = [[5.0 + 4 * float(o), 5.0] for o in outcomes[:8]]
    store.put_metric(key, None, "score", float(np.mean(scores)), None, None, len(scores), {"scores": scores})
    return {"win_rate_vs_theta0": key, "score": key}


def _study(store: RunStore, per_arm: dict[str, list], start_arm: str | None = None) -> None:
    """Store a study of θ0 and the arms of ``per_arm`` (arm -> one outcome list per seed)."""
    study = StudyRecord(default_arm="eva", baseline_arm="no-creator", start_arm=start_arm)
    theta0 = SeedRecord("theta0-model", "theta0-model", eval={"score": "theta0-0"})
    store.put_metric("theta0-0", None, "score", 5.0, None, None, 8, {"scores": [[5.0, 5.0]] * 8})
    study.arms["theta0"] = ArmRecord("θ0", seeds={"0": theta0})
    for arm, seeds in per_arm.items():
        record = study.arms.setdefault(arm, ArmRecord(arm))
        for s, outcomes in enumerate(seeds):
            record.seeds[str(s)] = SeedRecord(f"ckpt:{arm}{s}", f"ckpt/{arm}{s}",
                                              eval=_win(store, f"{arm}-{s}", outcomes))
    store.set_meta("study", study.to_json())


def _base(rng, n=N_PROMPTS):
    return rng.uniform(0.2, 0.7, n)


def test_an_effect_shared_by_every_prompt_of_one_seed_widens_the_two_level_delta(tmp_path):
    rng = np.random.default_rng(1)
    eva = [_base(rng), _base(rng)]
    # The other arm equals eva on seed 0 and beats it by 0.3 on every prompt of seed 1: a
    # difference of the seed (its training run), not of the prompts.
    other = [eva[0] + rng.normal(0, 0.02, N_PROMPTS), eva[1] + 0.3 + rng.normal(0, 0.02, N_PROMPTS)]
    with RunStore(tmp_path / "run") as store:
        _study(store, {"eva": eva, "other": other})
        results = collect(store)
    assert results["intervals"] == {"n_seeds": 2, "levels": ["seeds", "prompts"]}
    row = next(r for r in results["rows"] if r["arm"] == "other")
    d = row["diff_win_rate_vs_default"]
    pooled = stats.paired_bootstrap_diff(np.concatenate(other), np.concatenate(eva))
    assert d["value"] == pytest.approx(pooled.value)
    # The one-level bootstrap of the 80 pooled prompts is narrow and excludes 0; the two-level
    # interval reaches from "no difference" (seed 0 drawn twice) to 0.3 (seed 1 twice).
    assert pooled.ci_low > 0.1 and pooled.ci_high - pooled.ci_low < 0.1
    assert d["ci_high"] - d["ci_low"] > 2 * (pooled.ci_high - pooled.ci_low)
    assert d["ci_low"] < 0.02 and d["ci_high"] > 0.28
    assert d["n"] == N_PROMPTS
    # Each arm's own win rate is two-level too, and the spread between seeds is reported.
    one_level = stats.win_rate(np.concatenate(other))
    assert row["win_rate"]["ci_high"] - row["win_rate"]["ci_low"] > 2 * (one_level.ci_high - one_level.ci_low)
    spread = row["seed_spread"]["diff_win_rate_vs_default"]
    assert spread["sd"] == pytest.approx(0.3 / np.sqrt(2), abs=0.02)
    assert row["seed_spread"]["win_rate"]["per_seed"] == pytest.approx([float(np.mean(o)) for o in other])
    text = tables.markdown(results)
    assert "intervals are two-level: seeds, then prompts" in text
    assert "intervals cover the evaluation prompts only" not in text
    assert f"Δ {100 * spread['sd']:.1f}" in text  # the between-seed SD column
    assert "seed_sd_diff_win_rate_vs_default" in tables.csv_text(results).splitlines()[0]


def test_with_one_seed_the_table_says_what_its_intervals_cover(tmp_path):
    rng = np.random.default_rng(2)
    eva = _base(rng)
    other = eva + 0.1 + rng.normal(0, 0.05, N_PROMPTS)
    with RunStore(tmp_path / "run") as store:
        _study(store, {"eva": [eva], "other": [other]})
        results = collect(store)
    assert results["intervals"] == {"n_seeds": 1, "levels": ["prompts"]}
    row = next(r for r in results["rows"] if r["arm"] == "other")
    assert row["diff_win_rate_vs_default"] == stats.as_dict(stats.paired_bootstrap_diff(other, eva))
    assert row["seed_spread"] == {"win_rate": None, "score": None, "diff_win_rate_vs_default": None}
    text = tables.markdown(results)
    assert ("intervals cover the evaluation prompts only: creator sampling, evolution, response sampling and "
            "the DPO seed are not resampled; a * says two checkpoints differ") in text
    assert "two-level" not in text


def test_theta1_has_its_own_row_after_theta0_and_compares_with_theta0_only(tmp_path):
    rng = np.random.default_rng(3)
    per_arm = {arm: [_base(rng)] for arm in ("op-self_instruct", "eva", "no-creator", "theta1")}
    with RunStore(tmp_path / "run") as store:
        _study(store, per_arm, start_arm="theta1")
        results = collect(store)
        missing = missing_evaluation(store)
        report = build_report(store, tmp_path / "report")
    assert [r["arm"] for r in results["rows"]] == ["theta0", "theta1", "no-creator", "eva", "op-self_instruct"]
    assert results["start_arm"] == "theta1"
    # θ1 is not compared with the no-creator arm (it is where that arm starts too): no such
    # evaluation is wanted of it, while the eva arms lack theirs here.
    assert not any(m.startswith("theta1") for m in missing)
    assert any(m.startswith("eva seed 0") and "win_rate_vs_baseline" in m for m in missing)
    lines = report.table_markdown.splitlines()
    assert [ln.split("|")[1].strip() for ln in lines[2:7]] == [r["arm"] for r in results["rows"]]
    assert "theta1: the policy after the DPO round on the original prompts that every arm shares" in \
        report.table_markdown
    csv_rows = (tmp_path / "report" / "results.csv").read_text().splitlines()
    assert [ln.split(",")[0] for ln in csv_rows[1:3]] == ["theta0", "theta1"]
    page = (tmp_path / "report" / "report.html").read_text()
    assert '<tr data-arm="theta1">' in page and "arms start from theta1" in page
