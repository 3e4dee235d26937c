"""Everything the report shows, read back from the run store.

With one seed, every interval is a bootstrap over the evaluation's prompts (questions for
scores), and every arm is compared with the eva default by a paired bootstrap over the same
prompts. With several seeds, every arm's win rate, LC win rate and score and every paired
difference use the two-level bootstrap (seeds, then prompts within each seed; differences
pair seed s of one arm with seed s of the other, prompt by prompt), so the interval includes
what varies between an arm's seeds, and each row carries the between-seed spread of its
per-seed estimates.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from typing import Any

import numpy as np

from evalign.eval import stats
from evalign.eval.alpaca import SIMPLIFIED_LC
from evalign.eval.arena_hard import arena_hard_score
from evalign.eval.score import turn_mean, turn_mean_over_seeds
from evalign.report.record import StageUse, StudyRecord
from evalign.store import RunStore

THETA0 = "theta0"


def _mean_over_seeds(rows: list[list[float | None]]) -> list[float | None]:
    """Per-item mean across seeds, ignoring missing values."""
    out = []
    for vals in zip(*rows):
        got = [v for v in vals if v is not None]
        out.append(sum(got) / len(got) if got else None)
    return out


def _lc(metrics: list[dict[str, Any]]) -> tuple[dict | None, str | None]:
    """The LC win rate and how it was computed. One seed: the evaluation's own (AlpacaEval's
    official LC where it applied). Several: the simplified LC fitted on every seed's prompts,
    with the two-level interval."""
    if not metrics:
        return None, None
    if len(metrics) == 1:
        return metrics[0].get("lc_win_rate"), metrics[0].get("lc_method") or SIMPLIFIED_LC
    ys, lms, lbs = [], [], []
    for m in metrics:
        ok = [i for i, o in enumerate(m["outcomes"]) if o is not None]
        if ok:
            ys.append([m["outcomes"][i] for i in ok])
            lms.append([m["lengths_model"][i] for i in ok])
            lbs.append([m["lengths_baseline"][i] for i in ok])
    if not ys:
        return None, None
    lc = stats.length_controlled_two_level(ys, lms, lbs)
    return stats.as_dict(lc), f"{SIMPLIFIED_LC}; {len(ys)} seeds pooled, two-level interval"


def _arena_hard(metrics: list[dict[str, Any]]) -> dict | None:
    """Arena-Hard v0.1's score of the stored verdicts: one seed's as evaluated; several seeds'
    battles pooled (Arena-Hard has no notion of seeds). None for results stored without labels."""
    if len(metrics) == 1:
        return metrics[0].get("arena_hard")
    if not metrics or not all(m.get("labels") for m in metrics):
        return None
    return stats.as_dict(arena_hard_score([tuple(pair) for m in metrics for pair in m["labels"]]))


def _question_means(scores: list[list[float | None]], turn: int | None = None) -> list[float | None]:
    out = []
    for row in scores:
        got = [s for k, s in enumerate(row) if s is not None and (turn is None or k == turn)]
        out.append(sum(got) / len(got) if got else None)
    return out


def _ci(values: list[float | None], estimator: str, n_boot: int = 2000) -> stats.Estimate | None:
    """A win rate's CI (``estimator`` "win") or a mean score's ("score")."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return stats.win_rate(vals, n_boot=n_boot) if estimator == "win" else stats.mean_ci(vals, n_boot=n_boot)


def _present(values: list[float | None]) -> list[float]:
    return [v for v in values if v is not None]


def _win_ci(per_seed: list[list[float | None]], n_boot: int = 2000) -> stats.Estimate | None:
    """A win rate over one seed's prompts, or over several seeds' with the two-level CI."""
    if len(per_seed) == 1:
        return _ci(per_seed[0], "win", n_boot)
    present = [v for v in map(_present, per_seed) if v]
    return stats.two_level_bootstrap(present, np.mean, n_boot) if present else None


def _score_ci(score_rows: list[list[list[float | None]]], turn: int | None) -> stats.Estimate | None:
    """FastChat's MT-Bench average (mean over graded turns), its CI two-level over seeds."""
    if len(score_rows) == 1:
        return turn_mean(score_rows[0], turn)
    return turn_mean_over_seeds(score_rows, turn)


def _paired_over_seeds(a: dict[str, list[float | None]], b: dict[str, list[float | None]]
                       ) -> stats.Estimate | None:
    """a − b, pairing seed s with seed s and prompt i with prompt i; two-level over the seeds
    both have (several), else the prompt-paired bootstrap of the one seed."""
    pairs = []
    for seed in sorted(set(a) & set(b), key=str):
        both = [(x, y) for x, y in zip(a[seed], b[seed]) if x is not None and y is not None]
        if both:
            pairs.append(([x for x, _ in both], [y for _, y in both]))
    if len(pairs) == 1:
        return stats.paired_bootstrap_diff(*pairs[0]) if len(pairs[0][0]) >= 2 else None
    if not pairs:
        return None
    return stats.paired_two_level_diff([x for x, _ in pairs], [y for _, y in pairs])


def _spread(per_seed: list[float | None]) -> dict | None:
    """The between-seed spread of per-seed estimates, for two or more seeds."""
    vals = _present(per_seed)
    return stats.seed_spread(vals).as_dict() if len(vals) >= 2 else None


def _seed_metrics(store: RunStore, seeds: dict[str, Any], metric: str) -> dict[str, dict[str, Any]]:
    """Seed index -> the stored metric row of one evaluation, for the seeds that have it."""
    out = {}
    for key, entry in seeds.items():
        m = store.metric((entry.eval or {}).get(metric), metric) if entry.eval else None
        if m:
            out[key] = m
    return out


def collect(store: RunStore) -> dict[str, Any]:
    study = StudyRecord.from_json(store.get_meta("study"))
    default_arm = study.default_arm
    uses = study.stage_uses
    per_arm_outcomes: dict[str, dict[str, list]] = {}
    rows = []
    per_seed_outcomes: dict[str, dict[str, dict[str, list]]] = {}
    for name, arm in study.arms.items():
        seeds = arm.seeds
        wr_by_seed = _seed_metrics(store, seeds, "win_rate_vs_theta0")
        sc_by_seed = _seed_metrics(store, seeds, "score")
        wr, sc = list(wr_by_seed.values()), list(sc_by_seed.values())
        wb = list(_seed_metrics(store, seeds, "win_rate_vs_baseline").values())
        outcomes = _mean_over_seeds([m["outcomes"] for m in wr]) if wr else []
        score_rows = [m["scores"] for m in sc]
        q_scores = _mean_over_seeds([_question_means(s) for s in score_rows]) if sc else []
        lc, lc_method = _lc(wr)
        per_arm_outcomes[name] = {"win": outcomes, "score": q_scores}
        per_seed_outcomes[name] = {"win": {k: m["outcomes"] for k, m in wr_by_seed.items()},
                                   "score": {k: _question_means(m["scores"]) for k, m in sc_by_seed.items()}}
        summaries = [s.summary or {} for s in seeds.values()]
        its = [v for summ in summaries for v in summ.values()]
        filtered: Counter = Counter()
        for v in its:
            filtered.update(v.get("filtered", {}))
        infos = [v["mean_info_sampled"] for v in its if v.get("mean_info_sampled") is not None]
        arm_uses = [u for u in uses if u.arm == name]
        rows.append({
            "arm": name,
            "description": arm.description,
            "n_seeds": len(seeds),
            "win_rate": stats.as_dict(_win_ci([m["outcomes"] for m in wr])) if wr else None,
            "lc_win_rate": lc,
            "lc_method": lc_method,
            "arena_hard": _arena_hard(wr),
            "win_rate_vs_baseline": stats.as_dict(_win_ci([m["outcomes"] for m in wb])) if wb else None,
            "score": stats.as_dict(_score_ci(score_rows, None)) if sc else None,
            "turn1": stats.as_dict(_score_ci(score_rows, 0)) if sc else None,
            "turn2": stats.as_dict(_score_ci(score_rows, 1)) if sc else None,
            "seed_spread": {
                "win_rate": _spread([_mean(m["outcomes"]) for m in wr]),
                "score": _spread([e.value if e else None for e in (turn_mean(r, None, n_boot=1) for r in score_rows)]),
            },
            "per_category": _mean_dicts([m.get("per_category", {}) for m in sc]),
            "parse_failures": sum(m.get("parse_failures", 0) for m in wr + wb + sc),
            "train_pairs": _mean([s.train_pairs for s in seeds.values() if not s.solver]),
            "solver": ", ".join(sorted({s.solver for s in seeds.values() if s.solver})) or None,
            "mean_answer_chars": _mean([s.mean_answer_chars for s in seeds.values()]),
            "mean_info_sampled": _mean(infos),
            "evolved": sum(v.get("evolved", 0) for v in its),
            "kept": sum(v.get("kept", 0) for v in its),
            "filtered": dict(filtered),
            "compute_seconds": sum(u.original_seconds for u in arm_uses),
            "seconds_now": sum(u.seconds for u in arm_uses),
            "creator_calls": sum(u.calls for u in arm_uses if u.name == "evolve"),
            "reward_calls": sum(u.calls for u in arm_uses if u.name.startswith("reward") or u.name == "online"),
            "checkpoints": [s.checkpoint_in(store) for s in seeds.values()],
            "creator_enabled": any(s.creator_enabled for s in seeds.values()),
        })
    _add_eval_calls(rows, study, store)
    if default_arm in per_seed_outcomes:
        d = per_seed_outcomes[default_arm]
        for row in rows:
            if row["arm"] in (default_arm, THETA0):
                continue
            o = per_seed_outcomes[row["arm"]]
            row["diff_win_rate_vs_default"] = stats.as_dict(_paired_over_seeds(o["win"], d["win"]))
            row["diff_score_vs_default"] = stats.as_dict(_paired_over_seeds(o["score"], d["score"]))
            row["seed_spread"]["diff_win_rate_vs_default"] = _spread(
                [_mean([x - y for x, y in zip(o["win"][k], d["win"][k]) if x is not None and y is not None])
                 for k in sorted(set(o["win"]) & set(d["win"]), key=str)])
    rows.sort(key=lambda r: _order(r["arm"], study))
    validity = _judge_validity(study, per_arm_outcomes, default_arm, _stored_checks(store))
    for row in rows:
        row["detectable_effect"] = (validity or {}).get("detectable_effect")
    return {
        "run_dir": str(store.dir),
        "single": study.single,
        "default_arm": default_arm,
        "baseline_arm": study.baseline_arm,
        "start_arm": study.start_arm,
        "intervals": _intervals(rows),
        "rows": rows,
        "sharing": _sharing(uses),
        "wall_seconds": study.wall_seconds,
        "config": store.get_meta("config"),
        "versions": json.loads(store.get_meta("versions") or "{}"),
        "informativeness": _informativeness(store, study),
        "reward_length": _reward_length(store),
        "answer_lengths": _answer_lengths(store, study),
        "lineage": _lineage_examples(store),
        "judge_validity": validity,
        "shared_judge": _shared_judge(study),
        "stages": _stage_times(uses),
    }


def _intervals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What the table's intervals cover: the seeds of the trained arms, if several, and the prompts."""
    n_seeds = max((r["n_seeds"] for r in rows if r["arm"] != THETA0), default=1)
    return {"n_seeds": n_seeds, "levels": ["seeds", "prompts"] if n_seeds >= 2 else ["prompts"]}


def _shared_judge(study: StudyRecord) -> dict[str, str] | None:
    """The model that is both the training reward and the evaluation judge, if one is."""
    judge = study.judge
    if judge is None or judge.reward_id is None or judge.reward_id != judge.judge_id:
        return None
    return {"model": judge.judge_id, "reward_kind": judge.reward_kind or "?"}


def _stored_checks(store: RunStore) -> str | None:
    """The judge-check results measured against this run directory (``evalign judge-check --out``)."""
    from evalign.eval.judge_check import RUN_META_KEY

    return store.get_meta(RUN_META_KEY)


def _judge_validity(study: StudyRecord | dict[str, Any], outcomes: dict[str, dict[str, list]],
                    default_arm: str | None, stored: str | dict[str, Any] | None = None):
    """The eval judge's measured accuracy and position bias and the smallest win-rate
    difference this study can detect with it (``study`` may be the record or its JSON form).
    The measurement is one ``evalign judge-check`` made against this run directory
    (``stored``), else the one shipped for the built-in judge; never the per-user cache.

    The accuracy that counts is the one on the labeled pairs that resemble the study's
    comparison — two competent answers (the built-in set's subtle pairs; every pair of a set
    without difficulty labels) — and the detectable effect is derived from it: a judge that
    always spots gibberish says nothing about telling two arms' answers apart. The gross
    pairs' accuracy is kept as a sanity check."""
    from evalign.eval.judge_check import find_validity

    judge = (study if isinstance(study, StudyRecord) else StudyRecord.from_json(study)).judge
    if not judge:
        return None
    found = find_validity(stored, judge.judge_id, "pairwise", judge.mode, judge.pair_version)
    measured, origin = found if found else (None, None)
    out = {"judge_id": judge.judge_id, "mode": judge.mode, "n": judge.n_winrate, "measured": bool(measured),
           "origin": origin}
    if not measured:
        return out
    diffs = []
    if default_arm in outcomes:
        d = outcomes[default_arm]["win"]
        for arm, o in outcomes.items():
            if arm not in (default_arm, THETA0):
                diffs += [x - y for x, y in zip(o["win"], d) if x is not None and y is not None]
    sd = float(np.std(diffs, ddof=1)) if len(diffs) > 2 else 0.5
    like = _resembling(measured)
    acc, soft = like["accuracy"], like["soft_accuracy"]
    # The study's per-prompt outcomes are on the judge's own scale: probabilities averaged over
    # both orders in log-prob mode. A true difference shows up in them shrunk by the judge's
    # mean P(better answer) on labeled pairs (2 * mean - 1), not by its hard accuracy, so the
    # attenuation and the sd must come from the same scale.
    on_soft_scale = judge.mode == "logprobs" and bool(soft)
    signal_acc = soft["value"] if on_soft_scale else acc["value"]
    gross = (measured.get("by_difficulty") or {}).get("gross")
    graded = find_validity(stored, judge.judge_id, "pointwise", judge.mode, judge.grade_version) \
        if judge.grade_version else None
    if graded:  # the same pairs told apart by per-answer grades instead of the pairwise verdict
        out["grades_accuracy"] = _resembling(graded[0])["accuracy"]
    out.update({
        "resembling": like["label"], "accuracy": acc, "soft_accuracy": soft,
        "overall_accuracy": measured["accuracy"], "gross_accuracy": _group_estimate(gross) if gross else None,
        "first_position_rate": measured.get("first_position_rate"),
        "order_agreement": measured.get("order_agreement"), "labeled_n": measured.get("n"),
        "source": measured.get("source"), "labeled_limit": measured.get("limit"),
        "labeled_hash": measured.get("labeled_hash"), "injection_flip_rate": measured.get("injection_flip_rate"),
        "sd_paired": sd, "attenuation": 2 * signal_acc - 1,
        "detectable_effect": stats.min_detectable_effect(judge.n_winrate, signal_acc, sd=max(sd, 1e-6)),
        "method": ("closed form: (z_0.975 + z_0.8) * sd / sqrt(n) / (2 * a - 1), a = the judge's "
                   + ("mean P(better)" if on_soft_scale else "accuracy") + f" on the {like['label']} labeled pairs"
                   + (" (outcomes are probabilities)" if on_soft_scale else "")
                   + ("; this result has no mean P(better) per difficulty (measured before evalign stored it), "
                      "so its hard accuracy stands in" if judge.mode == "logprobs" and not soft else "")),
    })
    return out


def _group_estimate(group: dict[str, Any]) -> dict[str, float]:
    """A judge-check difficulty group's accuracy as an estimate; results stored before the
    groups carried a CI get the Wilson interval from their accuracy and n."""
    if "ci_low" in group:
        return {"value": group["accuracy"], "ci_low": group["ci_low"], "ci_high": group["ci_high"],
                "n": group["n"]}
    n = int(group["n"])
    return stats.as_dict(stats.proportion_ci(int(round(group["accuracy"] * n)), n))


def _resembling(measured: dict[str, Any]) -> dict[str, Any]:
    """The labeled pairs like the study's comparison: the subtle pairs where the set labels
    difficulty, else all of them (a user's own labeled set is taken to be of that kind)."""
    subtle = (measured.get("by_difficulty") or {}).get("subtle")
    if subtle and subtle.get("n"):
        return {"label": "subtle", "accuracy": _group_estimate(subtle), "soft_accuracy": subtle.get("soft_accuracy")}
    return {"label": "all", "accuracy": measured["accuracy"], "soft_accuracy": measured.get("soft_accuracy")}


def _order(arm: str, study: StudyRecord) -> tuple:
    fixed = [THETA0, study.start_arm, study.baseline_arm, study.default_arm]
    return (fixed.index(arm) if arm in fixed else len(fixed), arm)


def _mean(values) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def _mean_dicts(dicts: list[dict[str, float]]) -> dict[str, float]:
    acc: dict[str, list[float]] = defaultdict(list)
    for d in dicts:
        for k, v in d.items():
            acc[k].append(v)
    return {k: sum(v) / len(v) for k, v in acc.items()}


def _add_eval_calls(rows, study: StudyRecord, store: RunStore) -> None:
    """Judgments each arm's evaluation rests on (two orders per win-rate prompt, one per graded
    turn), whether this run made them or found them cached."""
    for row in rows:
        n = 0
        for seed in study.arms[row["arm"]].seeds.values():
            for metric, key in (seed.eval or {}).items():
                m = store.metric(key, metric)
                if not m:
                    continue
                if "outcomes" in m:
                    n += 2 * len(m["outcomes"])
                else:
                    n += sum(s is not None for r in m.get("scores", []) for s in r)
        row["judge_calls"] = n


def _sharing(uses: list[StageUse]) -> dict[str, Any]:
    computed = sum(u.seconds for u in uses if not u.reused)
    saved = sum(u.original_seconds for u in uses if u.reused)
    by_stage: dict[str, dict[str, float]] = defaultdict(lambda: {"computed": 0, "reused": 0, "saved_seconds": 0.0})
    for u in uses:
        b = by_stage[u.name]
        if u.reused:
            b["reused"] += 1
            b["saved_seconds"] += u.original_seconds
        else:
            b["computed"] += 1
    return {"computed_seconds": computed, "saved_seconds": saved,
            "saved_fraction": saved / (saved + computed) if saved + computed else 0.0,
            "by_stage": dict(by_stage)}


def _stage_times(uses: list[StageUse]) -> list[dict[str, Any]]:
    return [{k: getattr(u, k) for k in ("arm", "iteration", "name", "reused", "seconds", "original_seconds", "calls")}
            for u in uses]


def _informativeness(store: RunStore, study: StudyRecord) -> dict[str, Any]:
    """Reward gap (max - min over the k samples) of pool prompts before evolution and of
    kept evolved prompts, by operator: did the creator find more informative prompts?"""
    before, after = [], defaultdict(list)
    for r in store.reward_gaps():
        if r["origin"] == "seed":
            before.append(r["value"])
        else:
            after[r["operator"]].append(r["value"])
    return {"metric": "gap", "before": before, "after": dict(after)}


def _reward_length(store: RunStore, limit: int = 3000) -> list[dict[str, float]]:
    """(response length, reward) of scored policy samples, for the length-bias scatter."""
    return [{"length": len(text), "reward": score} for text, score in store.scored_texts(limit)]


def _answer_lengths(store: RunStore, study: StudyRecord) -> dict[str, list[int]]:
    """Eval answer lengths (characters) per arm, from the win-rate judgments vs θ0."""
    out: dict[str, list[int]] = {}
    for name, arm in study.arms.items():
        for seed in arm.seeds.values():
            m = store.metric((seed.eval or {}).get("win_rate_vs_theta0"), "win_rate_vs_theta0")
            if m:
                out.setdefault(name, m["lengths_model"])
                out.setdefault(THETA0, m["lengths_baseline"])
    return out


def _lineage_examples(store: RunStore, per_operator: int = 3) -> dict[str, list[list[dict[str, Any]]]]:
    out: dict[str, list[list[dict[str, Any]]]] = {}
    for op in store.evolved_operators():
        chains = []
        for leaf in store.kept_leaves(op, per_operator):
            chain = store.lineage(leaf)
            chains.append([{"id": r["id"], "text": r["text"], "depth": r["depth"], "operator": r["operator"],
                            "mutation": r["mutation"], "origin": r["origin"]} for r in reversed(chain)])
        out[op] = chains
    return out
