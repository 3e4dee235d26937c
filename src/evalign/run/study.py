"""The ablation study: every arm from one start, shared stages computed once, evaluated
against the starting policy (θ0) and the no-creator baseline.

Arms differ from the base config by a few overrides. Because stage keys hash inputs, not
arm names, the arms share what is equal: the seed pool, the θ0 samples and their rewards
(every arm), the informativeness and the sampled prompts (arms that differ only in the
operator), the evaluation answers of θ0 and every judgment already made.

With ``creator.first_iteration: 2`` (the paper's protocol, the ``cpu`` and ``paper`` presets)
iteration 1 of every arm is the same DPO round on the original prompts, θ0 → θ1: its stage
keys are equal across arms, so it is computed once and reused, and every arm's own round
(eva's creator, or the no-creator arm's second plain DPO round) starts from that θ1, which
gets its own row in the report (``start_arm``).

``evalign run`` is a study with one arm: the config itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from evalign.config import ArmSpec, Config, apply_overrides, validate
from evalign.errors import ConfigError
from evalign.eval.evaluator import Answers, store_scores, store_win_rate
from evalign.eval.exports import ExportPlan, write_exports
from evalign.hashing import key_of
from evalign.run.loop import Runner
from evalign.backends.pool import spec_model_id
from evalign.progress import say
from evalign.report import StudyResult, build_report
from evalign.report.record import ArmRecord, JudgeRecord, SeedRecord, StudyRecord
from evalign.run.session import Session, check_models, open_run

log = logging.getLogger(__name__)

DEFAULT_ARM = "eva"
BASELINE_ARM = "no-creator"
THETA0 = "theta0"

DEFAULT_ARMS: tuple[ArmSpec, ...] = (
    ArmSpec(name=BASELINE_ARM, set={"creator.enabled": False},
            description="DPO on the original prompts only (no creator)"),
    ArmSpec(name=DEFAULT_ARM, set={}, description="eva defaults: gap informativeness + evol_instruct"),
    ArmSpec(name="metric-variance", set={"creator.metric": "variance"}, description="A: informativeness = variance"),
    ArmSpec(name="metric-mean", set={"creator.metric": "mean"}, description="A: informativeness = mean reward"),
    ArmSpec(name="op-self_instruct", set={"creator.operator": "self_instruct"}, description="B: SelfInstruct"),
    ArmSpec(name="op-evol_quality", set={"creator.operator": "evol_quality"},
            description="B: EvolQuality (prompt-side adaptation)"),
    ArmSpec(name="op-evol_complexity", set={"creator.operator": "evol_complexity"},
            description="B: EvolComplexity"),
)


def arm_config(base: Config, arm: ArmSpec, seed_index: int) -> Config:
    data = apply_overrides(base.to_dict(), {**arm.set, "run.seed": base.run.seed + seed_index})
    return validate(data, f"arm {arm.name}")


def resolve_arms(cfg: Config, only: Sequence[str] | None = None) -> list[ArmSpec]:
    arms = list(cfg.ablation.arms) or list(DEFAULT_ARMS)
    if only:
        names = {a.name for a in arms}
        unknown = [n for n in only if n not in names]
        if unknown:
            raise ConfigError(f"unknown arm(s) {', '.join(unknown)}; arms of this study: {', '.join(sorted(names))}")
        arms = [a for a in arms if a.name in only]
    for a in arms:  # validate every arm's overrides up front: a typo fails before hours of work
        arm_config(cfg, a, 0)
    return arms


def shared_start(cfg: Config) -> tuple[str, int] | None:
    """(row name, rounds) of the policy the arms share before their own rounds: θ1 after one
    creator-off round when ``creator.first_iteration`` is 2; None when no round is shared
    (the creator starts at once, or never within ``run.iterations``)."""
    rounds = cfg.creator.first_iteration - 1
    if rounds < 1 or cfg.run.iterations <= rounds:
        return None
    return f"theta{rounds}", rounds


@dataclass
class _Start:
    """Where an arm's first ``rounds`` iterations left it: the shared start if they were shared."""

    policy_id: str
    checkpoint: str
    checkpoints: list[str]
    summary: dict[str, dict[str, Any]]


def _start_of(state, rounds: int) -> _Start | None:
    if len(state.after_iteration) < rounds:
        return None
    policy_id, path = state.after_iteration[rounds - 1]
    summary = {k: state.summary[k] for k in (f"iteration_{i}" for i in range(1, rounds + 1)) if k in state.summary}
    return _Start(policy_id, path, [c for c in state.checkpoints if c in
                                    {p for _, p in state.after_iteration[:rounds]}], summary)


def solver_label(cfg: Config) -> str | None:
    """How an arm's solver learns, for the record and the report: ``online:rloo`` /
    ``online:grpo``, or None for the offline loop (pairs and a preference loss)."""
    return f"online:{cfg.solver.online.algorithm}" if cfg.solver.mode == "online" else None


def _record_start(study: StudyRecord, name: str, rounds: int, seed_index: int,
                  starts: dict[str, _Start], theta0_id: str, solver: str | None = None) -> None:
    """The shared start policy of one seed, from the default arm (else the first arm); an arm
    whose first rounds ended elsewhere (its overrides change them) is named in a warning."""
    ref_arm = study.default_arm if study.default_arm in starts else next(iter(starts))
    ref = starts[ref_arm]
    apart = sorted(a for a, st in starts.items() if st.policy_id != ref.policy_id)
    if apart:
        log.warning("arm(s) %s do not start from the shared θ%d of %s (their overrides change the first "
                    "round(s)); their rows still compare with θ0 and the default arm", ", ".join(apart), rounds, ref_arm)
    if ref.policy_id == theta0_id:
        log.warning("the shared first round(s) trained nothing (too few pairs): θ%d is θ0, no row for it", rounds)
        return
    study.start_arm = name
    how = f"online {solver.split(':')[1].upper()} phase(s)" if solver else "DPO round(s)"
    desc = (f"θ{rounds}: θ0 after {rounds} shared {how} on the original prompts, "
            "the start of every arm's own round")
    entry = study.arms.setdefault(name, ArmRecord(desc))
    entry.description = desc
    entry.seeds[str(seed_index)] = SeedRecord(
        policy_id=ref.policy_id, checkpoint=ref.checkpoint, checkpoints=ref.checkpoints,
        train_pairs=sum(int(v.get("train_pairs") or 0) for v in ref.summary.values()), summary=ref.summary,
        creator_enabled=False, solver=solver)


def run_study(
    cfg: Config,
    *,
    arms: Sequence[ArmSpec] | None = None,
    seeds: int | None = None,
    verbose: bool = False,
    single: bool = False,
) -> StudyResult:
    """Run (or resume) the arms for every seed, evaluate, and build the report."""
    arm_specs = list(arms) if arms is not None else resolve_arms(cfg)
    n_seeds = seeds or cfg.ablation.seeds
    for arm in arm_specs:  # an arm may name other models: resolve them all before the first stage
        check_models(arm_config(cfg, arm, 0))
    with open_run(cfg, verbose=verbose) as s:
        runner = Runner(cfg, s.store, s.pool, eval_prompts=s.evaluator.texts() if s.evaluator else [])
        study = StudyRecord.from_json(s.store.get_meta("study"))
        runner.recorded = {u.key for u in study.stage_uses}
        runner.recorded_uses = {(u.arm, u.iteration, u.name, u.key) for u in study.stage_uses}
        if study.wall_seconds and not s.store.wall_seconds():  # a run from before wall time was stored
            with s.store.transaction():
                s.store.set_meta("wall:earlier", str(study.wall_seconds))
        study.single = single
        study.default_arm = DEFAULT_ARM if not single else arm_specs[0].name
        study.baseline_arm = BASELINE_ARM
        start = shared_start(cfg)
        for seed_index in range(n_seeds):
            starts: dict[str, _Start] = {}
            for arm in arm_specs:
                acfg = arm_config(cfg, arm, seed_index)
                t0 = time.perf_counter()
                state = runner.run_arm(arm.name, acfg)
                got = _start_of(state, start[1]) if start else None
                if got is not None:
                    starts[arm.name] = got
                entry = study.arms.setdefault(arm.name, ArmRecord(arm.description, arm.set))
                entry.seeds[str(seed_index)] = SeedRecord(
                    policy_id=state.policy_id, checkpoint=state.policy_path,
                    checkpoints=state.checkpoints, train_pairs=state.train_pairs,
                    summary=state.summary, seconds_now=time.perf_counter() - t0,
                    creator_enabled=acfg.creator.enabled, metric=acfg.creator.metric,
                    operator=acfg.creator.operator,
                    solver=solver_label(acfg),
                )
            if start and starts:
                _record_start(study, *start, seed_index, starts, spec_model_id(cfg.policy), solver_label(cfg))
        if s.evaluator is not None:
            evaluated = ([study.start_arm] if study.start_arm in study.arms else []) + [a.name for a in arm_specs]
            _evaluate(s, runner, study, evaluated, n_seeds)
        study.stage_uses = study.stage_uses + list(runner.uses)
        with s.store.transaction():
            s.store.note_wall()
            study.wall_seconds = s.store.wall_seconds()
            s.store.set_meta("study", study.to_json())
        result = build_report(s.store)
    return result


def _evaluate(s: Session, runner: Runner, study: StudyRecord, arm_names: list[str], n_seeds: int) -> None:
    """Win rates and scores of every arm, judged in one batch so the judge's KV cache is
    reused across arms (θ0's answer opens half of all pairwise prompts for a question)."""
    from evalign.eval.score import grade_items
    from evalign.judge.verdicts import pair_items

    ev = s.evaluator
    assert ev is not None
    cfg = s.cfg
    judge_id = spec_model_id(cfg.eval.judge)
    eval_fp = cfg.fingerprint("eval")
    theta0_id = spec_model_id(cfg.policy)
    answers_cache: dict[str, Answers] = {}

    def answers(policy_id: str, path: str | None, offset: int = 0) -> Answers:
        key = f"{policy_id}#{offset}"
        if key not in answers_cache:
            llm = s.pool.policy(cfg.policy, path, policy_id)
            answers_cache[key] = ev.answers(llm, seed_offset=offset)
        return answers_cache[key]

    def checkpoint(entry: SeedRecord) -> str | None:
        path = entry.checkpoint_in(s.store)
        return None if path == cfg.policy.model else path

    say("[bold]evaluation[/bold]")
    study.judge = JudgeRecord(judge_id, ev.judge.mode, ev.judge.pair_version, ev.judge.variant,
                              len(ev.prompts), len(ev.questions),
                              spec_model_id(cfg.solver.reward.model), cfg.solver.reward.kind,
                              ev.judge.grade_version)
    theta = study.arms.setdefault(THETA0, ArmRecord("starting policy θ0 (no training)"))
    theta_entry = theta.seeds.setdefault("0", SeedRecord(theta0_id, cfg.policy.model))

    # The plan: (entry, metric name, stage name, stage inputs, model, baseline or None).
    theta0 = (theta0_id, None, 0)
    plan: list[tuple[SeedRecord, str, str, dict, tuple, tuple | None]] = []

    def add_score(entry, policy):
        plan.append((entry, "score", "eval_score", {"policy": policy[0]}, policy, None))

    def add_winrate(entry, name, policy, base):
        inputs = {"policy": policy[0], "baseline": base[0], "offset": base[2]}
        plan.append((entry, name, "eval_winrate", inputs, policy, base))

    add_score(theta_entry, theta0)
    if cfg.eval.self_check:
        add_winrate(theta_entry, "win_rate_vs_theta0", theta0, (theta0_id, None, 1))
    for seed_index in range(n_seeds):
        baseline_arm = study.arms.get(BASELINE_ARM)
        baseline = baseline_arm.seeds.get(str(seed_index)) if baseline_arm else None
        for name in arm_names:
            entry = study.arms[name].seeds.get(str(seed_index))
            if entry is None:  # θ1 of a seed whose shared round trained nothing: that seed has no row
                continue
            policy = (entry.policy_id, checkpoint(entry), 0)
            add_winrate(entry, "win_rate_vs_theta0", policy, theta0)
            add_score(entry, policy)
            if cfg.eval.vs_baseline and baseline is not None and name not in (BASELINE_ARM, study.start_arm):
                add_winrate(entry, "win_rate_vs_baseline", policy,
                            (baseline.policy_id, checkpoint(baseline), 0))

    def key(stage: str, inputs: dict) -> dict:
        return {**inputs, "eval": eval_fp, "judge": judge_id}

    todo = [job for job in plan if s.store.stage_outputs(key_of(job[2], key(job[2], job[3]))) is None]
    if todo:  # answer first, then judge everything still missing in one pass
        pairs, grades = [], []
        for _, metric, _, _, model, base in todo:
            m = answers(*model)
            if base is None:
                grades += grade_items(ev.questions, m.mt)[0]
            else:
                pairs += pair_items([p.prompt for p in ev.prompts], m.winrate_answers, answers(*base).winrate_answers)
        ev.judge.compare(pairs, description="judging win rates")
        ev.judge.grade(grades, description="grading answers")

    for entry, metric, stage, inputs, model, base in plan:
        label = study.label_of(entry)

        def run(k: str, metric=metric, model=model, base=base, label=label) -> dict[str, Any]:
            calls = ev.judge.stats.calls
            if base is None:
                store_scores(s.store, k, label, metric, ev.scores(answers(*model), label=f"{label} score"))
            else:
                wr = ev.win_rate(answers(*model), answers(*base), label=f"{label} {metric}")
                store_win_rate(s.store, k, label, metric, wr)
            return {"calls": ev.judge.stats.calls - calls}

        out = runner.stage(stage, label, 0, key(stage, inputs), run)
        if entry.eval is None:
            entry.eval = {}
        entry.eval[metric] = out["_key"]
    for arm in study.arms.values():
        for entry in arm.seeds.values():
            if entry.eval:
                policy = (entry.policy_id, checkpoint(entry), 0)
                winrate_answers = answers(*policy).winrate_answers
                entry.mean_answer_chars = sum(map(len, winrate_answers)) / max(1, len(winrate_answers))

    def export_name(entry: SeedRecord, offset: int = 0) -> str:
        seed = next(k for a in study.arms.values() for k, e in a.seeds.items() if e is entry)
        name = study.label_of(entry) + ("" if seed == "0" else f"-seed{seed}")
        return name + ("-resampled" if offset else "")

    def entry_of(policy: tuple) -> SeedRecord:
        return next(e for a in study.arms.values() for e in a.seeds.values()
                    if e.policy_id == policy[0] and checkpoint(e) == policy[1])

    exports = ExportPlan()
    for entry, _metric, _stage, _inputs, model, base in plan:
        if base is None:
            exports.grade(export_name(entry), answers(*model))
        else:
            exports.compare(export_name(entry), answers(*model), export_name(entry_of(base), base[2]), answers(*base))
    write_exports(ev, s.store.dir / "exports", exports)
    s.pool.release_policy()
