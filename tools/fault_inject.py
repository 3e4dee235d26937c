#!/usr/bin/env python
"""Kill a real `evalign ablate` run again and again, resume it, and check nothing was lost.

A small study (tiny policy, scripted creator and judge, two arms) runs once uninterrupted as
the reference. Then the same study runs in fresh directories where it is SIGKILLed inside
every stage — at stage begin and end, right after cache commits, with a checkpoint written
but not yet renamed — and at random moments, resuming after every kill with the same command.
Each resumed run must end with exactly the reference's store contents: the same prompts,
generations, rewards, pairs, judgments, metrics and finished stages, no duplicate or missing
rows, and every checkpoint complete.

    python tools/fault_inject.py              # >= 20 kills (a few minutes on 2 cores)
    python tools/fault_inject.py --quick      # 3 kills, as the test suite runs it
    python tools/fault_inject.py --full       # the real built-in judge and creator (llama.cpp),
                                              # >= 20 kills (about an hour on 2 cores)
    python tools/fault_inject.py --online     # online eva (RLOO phases): kills inside the phase too

Besides the store, the report's work figures must match: every stage use (computed or reused,
and its model calls) and each arm's creator, reward and judge calls. Wall time cannot match; it
must count every process, the killed ones up to their last commit.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STAGE_POINTS = [
    "stage:seed_pool:end", "stage:generate_pool:begin", "commit:generations:1", "stage:generate_pool:end",
    "stage:reward_pool:begin", "commit:rewards:1", "commit:judgments:1", "stage:reward_pool:end",
    "stage:informativeness:end", "stage:sample:end", "stage:evolve:begin", "stage:evolve:end",
    "stage:filter:end", "stage:generate_evolved:begin", "stage:reward_evolved:end", "stage:pairs:end",
    "stage:train:begin", "checkpoint:written", "stage:train:end", "stage:eval_score:begin",
    "commit:judgments:6", "stage:eval_winrate:end",
]

CONFIG = """\
run: {{name: fault, seed: 0, iterations: 1, output_dir: {out}}}
policy: {{model: {policy}, backend: transformers, batch_size: 16}}
prompts: {{source: builtin:seed, limit: 6}}
creator:
  model: {{model: rewrite, backend: scripted}}
  num_evolutions: 2
  sample_fraction: 0.5
  sampling: {{max_new_tokens: 64}}
solver:
  num_samples: 3
  sampling: {{max_new_tokens: 8}}
  reward: {{kind: judge_pointwise, model: {{model: echo, backend: scripted}}}}
  train: {{learning_rate: 1.0e-3, epochs: 1, batch_size: 4, gradient_accumulation_steps: 1,
          max_length: 128, min_pairs: 1, warmup_ratio: 0.0}}
eval:
  judge: {{model: echo, backend: scripted}}
  winrate_limit: 4
  mt_limit: 2
  answer_sampling: {{max_new_tokens: 8}}
  bootstrap_samples: 200
  self_check: false
"""

# The real built-in creator and judge (qwen2.5-coder-1.5b-instruct through llama.cpp), whose
# scores depended on what the process had scored before: a resumed run differed from an
# uninterrupted one. The policy stays tiny; sizes keep one run to a few minutes on 2 cores.
BUILTIN_JUDGE = "{model: qwen2.5-coder-1.5b-instruct, backend: llamacpp, n_ctx: 2048}"
FULL_CONFIG = CONFIG.replace("limit: 6", "limit: 4").replace(
    "model: {{model: rewrite, backend: scripted}}", "model: " + BUILTIN_JUDGE.replace("{", "{{").replace("}", "}}")
).replace(
    "reward: {{kind: judge_pointwise, model: {{model: echo, backend: scripted}}}}",
    "reward: {{kind: judge_pointwise, max_response_tokens: 16, model: "
    + BUILTIN_JUDGE.replace("{", "{{").replace("}", "}}") + "}}",
).replace(
    "judge: {{model: echo, backend: scripted}}", "judge: " + BUILTIN_JUDGE.replace("{", "{{").replace("}", "}}")
).replace("num_samples: 3", "num_samples: 2").replace("winrate_limit: 4", "winrate_limit: 3").replace(
    "mt_limit: 2", "mt_limit: 1")

# Online eva (solver.mode: online): the same study with RLOO phases instead of pairs and DPO.
ONLINE_CONFIG = CONFIG.replace("solver:\n  num_samples: 3", "solver:\n  mode: online\n"
                               "  online: {{learning_rate: 1.0e-3, prompts_per_step: 2}}\n  num_samples: 3")
# Each plan kills successive processes of one run at these points (a point's count is per
# process): the later points fall inside the online phase, whose rewards are committed per batch.
ONLINE_PLANS = [
    ["stage:reward_pool:begin", "stage:online:begin", "commit:judgments:2", "checkpoint:written",
     "stage:eval_score:begin"],
    ["commit:judgments:1", "stage:evolve:end", "commit:rewards:2", "stage:online:end", "commit:judgments:3"],
    ["stage:filter:end", "commit:rewards:1", "commit:rewards:3", "stage:eval_winrate:end"],
]

ARMS = ["--arm", "eva", "--arm", "no-creator"]


def snapshot(run_dir: Path) -> dict:
    from evalign.store import RunStore

    with RunStore(run_dir, readonly=True) as store:
        snap = store.contents()
        checkpoints = [store.checkpoint_path(json.loads(r["outputs"])["checkpoint"]) for r in store.stages()
                       if r["name"] in ("train", "online") and r["status"] == "done"
                       and not json.loads(r["outputs"]).get("skipped")]  # recorded relative to the run
    snap["complete_checkpoints"] = sorted(
        Path(c).name for c in checkpoints if (Path(c) / "model.safetensors").is_file() and (Path(c) / "config.json").is_file())
    snap["n_checkpoints"] = len(checkpoints)
    snap["figures"] = figures(run_dir)
    return snap


def figures(run_dir: Path) -> dict:
    """The report's work figures that do not depend on timing."""
    from evalign.report.collect import collect
    from evalign.store import RunStore

    with RunStore(run_dir, readonly=True) as store:
        uses = json.loads(store.get_meta("study") or "{}").get("stage_uses", [])
        rows = collect(store)["rows"]
    return {
        "stage_uses": sorted((u["arm"], u["iteration"], u["name"], u["key"], u["reused"], u["calls"]) for u in uses),
        "arm_calls": sorted((r["arm"], r["creator_calls"], r["reward_calls"], r["judge_calls"]) for r in rows),
    }


def wall_seconds(run_dir: Path) -> tuple[float, int]:
    """The run's recorded wall time and how many processes it counts."""
    from evalign.store import RunStore

    with RunStore(run_dir, readonly=True) as store:
        vals = [float(r[0]) for r in store.db.execute("SELECT value FROM meta WHERE key LIKE 'wall:%'")]
    return sum(vals), len(vals)


def run(config: Path, env_extra: dict | None = None, kill_after: float | None = None) -> int:
    env = {**os.environ, "EVALIGN_QUIET": "1", "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    cmd = [sys.executable, "-m", "evalign.cli", "ablate", str(config), *ARMS, "--quiet"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if kill_after is not None:
        try:
            proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=3600)
    if proc.returncode not in (0, -signal.SIGKILL):
        raise RuntimeError(f"evalign failed ({proc.returncode}):\n{err[-3000:]}")
    return proc.returncode


def stage_running(run_dir: Path) -> str:
    from evalign.store import RunStore

    try:
        with RunStore(run_dir, readonly=True) as store:
            rows = [r["name"] for r in store.stages() if r["status"] == "running"]
    except (sqlite3.Error, FileNotFoundError):
        return "-"
    return ",".join(rows) or "-"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 targeted kills in one run (the test suite's check)")
    ap.add_argument("--online", action="store_true", help="online eva (RLOO phases): targeted kills inside the phase")
    ap.add_argument("--full", action="store_true",
                    help="the real built-in judge and creator; random kills interleaved with the targeted ones")
    ap.add_argument("--random-kills", type=int, default=6, help="kills at random moments, besides the targeted ones")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--random-only", action="store_true", help="--full: only the run killed at random moments")
    ap.add_argument("--random-within", type=float, default=90.0,
                    help="--full: a random kill comes 5 s to this many seconds after a start")
    ap.add_argument("--keep-reference", action="store_true",
                    help="reuse the uninterrupted run (and tiny policy) an earlier call left in --workdir")
    args = ap.parse_args()
    from evalign.testing import make_tiny_model, save_builtin_tokenizer

    work = args.workdir or Path(tempfile.mkdtemp(prefix="evalign-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    keep = args.keep_reference and (work / "reference" / "run.db").is_file() and (work / "policy").is_dir()
    policy = work / "policy" if keep else make_tiny_model(save_builtin_tokenizer(work / "tok"), work / "policy")

    def config_for(name: str) -> Path:
        out = work / name
        shutil.rmtree(out, ignore_errors=True)
        path = work / f"{name}.yaml"
        path.write_text((FULL_CONFIG if args.full else ONLINE_CONFIG if args.online else CONFIG).format(
            out=out, policy=policy))
        return path

    t0 = time.time()
    if not keep:
        assert run(config_for("reference")) == 0
    reference = snapshot(work / "reference")
    ref_wall, _ = wall_seconds(work / "reference")
    ref_seconds = time.time() - t0 if not keep else ref_wall

    rng = random.Random(args.seed)
    if args.quick:
        plans = [["stage:reward_pool:begin", "commit:generations:2", "checkpoint:written"]]
        random_kills = 0
    elif args.online:
        plans = [list(p) for p in ONLINE_PLANS]
        random_kills = args.random_kills
    elif args.full:
        # Three runs each killed at a third of the stage points, in run order (a random kill
        # between them would carry the run past the next point), and a fourth killed at random
        # moments soon after each start: in model loading, or in whichever stage is next.
        plans = [] if args.random_only else [list(STAGE_POINTS[i::3]) for i in range(3)]
        random_kills = args.random_kills
    else:
        points = list(STAGE_POINTS)
        plans = [points[i::3] for i in range(3)]
        random_kills = args.random_kills
    kills = identical = 0
    report = []
    for n, plan in enumerate(plans + [[None] * random_kills] if random_kills else plans):
        name = f"killed-{n}"
        cfg = config_for(name)
        for target in plan:
            if target is None:
                code = run(cfg, kill_after=rng.uniform(5.0, args.random_within) if args.full else rng.uniform(1.0, ref_seconds))
                where = stage_running(work / name) if code == -signal.SIGKILL else "finished first"
            else:
                code = run(cfg, env_extra={"EVALIGN_KILL_AT": target})
                where = target if code == -signal.SIGKILL else f"{target} (not reached)"
            if code == -signal.SIGKILL:
                kills += 1
            report.append(f"{name}: SIGKILL at {where}" if code == -signal.SIGKILL else f"{name}: {where}")
        assert run(cfg) == 0  # resume to the end
        got = snapshot(work / name)
        wall, processes = wall_seconds(work / name)
        report.append(f"{name}: wall time {wall:.0f} s over {processes} processes "
                      f"(uninterrupted: {ref_wall:.0f} s)")
        same = got == reference
        identical += int(same)
        if not same:
            diff = {k: (len(reference[k]) if isinstance(reference[k], list) else reference[k],
                        len(got[k]) if isinstance(got[k], list) else got[k])
                    if k != "figures" else "figures differ"
                    for k in reference if reference[k] != got[k]}
            report.append(f"{name}: DIFFERS from the reference: {diff}")
    print("\n".join(report))
    rows = sum(len(v) for v in reference.values() if isinstance(v, list))
    print(f"{kills} kills in {len(plans) + (1 if random_kills else 0)} runs; "
          f"{identical}/{len(plans) + (1 if random_kills else 0)} resumed runs identical to the uninterrupted one "
          f"({rows} rows compared); lost or duplicated rows: "
          f"{0 if identical == len(plans) + (1 if random_kills else 0) else 'see above'}")
    return 0 if identical == len(plans) + (1 if random_kills else 0) else 1


if __name__ == "__main__":
    sys.exit(main())
