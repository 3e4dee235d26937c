"""cache: what a rerun costs once everything is in the run store.

* repeated evaluation — ``Evaluator`` win rate (θ0 against itself resampled with another
  seed: 8 prompts, both orders) and MT scores (4 two-turn questions) with the real built-in
  judge, store-backed; the same evaluation again from a fresh Evaluator and model pool on
  the same store, as a fraction of the first (models load lazily: a cached rerun loads none).
* resumed finished run — ``ablation.run_study`` on a small study (the quickstart preset,
  one arm, 6 prompts, 2 samples, small evaluation) and then again on the finished run
  directory, as a fraction of the first; plus the same resume as a fresh ``evalign run``
  process (Python and library imports included).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import common

SMALL_STUDY = {
    "prompts.limit": 6,
    "solver.num_samples": 2,
    "creator.num_evolutions": 1,
    "eval.winrate_limit": 4,
    "eval.mt_limit": 2,
    "eval.bootstrap_samples": 200,
}


def evaluation(run_dir: Path) -> tuple[float, dict]:
    from evalign.config import load_config
    from evalign.eval.evaluator import Evaluator
    from evalign.backends.pool import ModelPool, spec_model_id
    from evalign.store import RunStore

    cfg = load_config(preset="quickstart", overrides={"run.output_dir": str(run_dir), "eval.winrate_limit": 8,
                                                      "eval.mt_limit": 4})
    t0 = time.perf_counter()
    store = RunStore(run_dir)
    pool = ModelPool()
    try:
        ev = Evaluator(cfg.eval, store, pool)
        policy = pool.policy(cfg.policy, None, spec_model_id(cfg.policy))
        model, baseline = ev.answers(policy), ev.answers(policy, seed_offset=1)
        wr = ev.win_rate(model, baseline, label="θ0 vs θ0'")
        sc = ev.scores(model, label="θ0")
        loaded = [m.model_id for m in [policy, *pool._shared.values()] if m.loaded]
        calls = ev.judge.stats.calls
    finally:
        pool.close()
        store.close()
    seconds = time.perf_counter() - t0
    e, s = wr.estimate, sc.estimate
    return seconds, {"win_rate": e.value if e else None, "score": s.value if s else None, "judge_calls": calls,
                     "models_loaded": loaded}


def study(run_dir: Path):
    from evalign.run.study import run_study
    from evalign.config import ArmSpec, load_config

    cfg = load_config(preset="quickstart", overrides={"run.output_dir": str(run_dir), **SMALL_STUDY})
    t0 = time.perf_counter()
    result = run_study(cfg, arms=[ArmSpec(name="eva", description="this config")], seeds=1, single=True)
    return time.perf_counter() - t0, result


def run(args) -> dict:
    work = Path(args.workdir)
    ev_dir, st_dir = work / "eval_run", work / "study_run"
    common.log("first evaluation")
    t_first, first = evaluation(ev_dir)
    common.log(f"  {t_first:.1f}s {first}")
    t_again, again = evaluation(ev_dir)
    common.log(f"  repeated: {t_again:.2f}s {again}")
    same = first["win_rate"] == again["win_rate"] and first["score"] == again["score"]

    common.log("small study, first run")
    t_study, _ = study(st_dir)
    common.log(f"  {t_study:.1f}s")
    t_resume, _ = study(st_dir)
    common.log(f"  resumed: {t_resume:.2f}s")
    cli = [str(Path(sys.executable).with_name("evalign")), "run", "--preset", "quickstart", "--quiet",
           "--set", f"run.output_dir={st_dir}"] + [x for k, v in SMALL_STUDY.items() for x in ("--set", f"{k}={v}")]
    t0 = time.perf_counter()
    proc = subprocess.run(cli, capture_output=True, text=True, env={**os.environ})
    t_cli = time.perf_counter() - t0
    common.log(f"  resumed as a fresh `evalign run` process: {t_cli:.2f}s (rc {proc.returncode})")
    if proc.returncode != 0:
        common.log(proc.stderr[-2000:])

    pct = common.Target("<=", 0.05, unit="%")
    rows = [
        common.row("repeated evaluation (win rate + scores, store-backed) / first", "s", t_again, t_first,
                   target=pct, baseline_label="first", key="repeat_eval"),
        common.row("resumed finished run (run_study again) / first", "s", t_resume, t_study, target=pct,
                   baseline_label="first", key="resume_study"),
        common.row("resumed finished run as a fresh `evalign run` process / first", "s",
                   t_cli if proc.returncode == 0 else None, t_study, target=pct, baseline_label="first (in-process)",
                   key="resume_cli", note="includes starting Python and importing torch/transformers"),
    ]
    notes = [
        f"Evaluation: θ0 vs θ0 resampled, 8 win-rate prompts x 2 orders + 4 MT questions x 2 turns, built-in "
        f"judge; first run {t_first:.1f}s ({first['judge_calls']} judge calls, models loaded: "
        f"{', '.join(first['models_loaded']) or 'none'}); repeat {t_again:.2f}s ({again['judge_calls']} judge calls, "
        f"models loaded: {', '.join(again['models_loaded']) or 'none'}); identical results: {same}.",
        f"Study: quickstart preset with {', '.join(f'{k}={v}' for k, v in SMALL_STUDY.items())}, one arm; first "
        f"{t_study:.1f}s, resume {t_resume:.2f}s in-process, {t_cli:.2f}s as a new process.",
    ]
    return {"rows": rows, "notes": notes, "bounds": [],
            "details": {"evaluation": {"first": [t_first, first], "repeat": [t_again, again], "identical": same},
                        "study": {"first": t_study, "resume": t_resume, "resume_cli": t_cli,
                                  "cli_rc": proc.returncode}}}


if __name__ == "__main__":
    import argparse
    import json

    print(json.dumps(run(argparse.Namespace(quick=True, workdir=Path("/tmp/bench_cache"))), indent=1, default=str))
