"""The results table, one row per arm, as Markdown (for humans) and CSV (for analysis)."""

from __future__ import annotations

import csv
import io
from typing import Any


def pct(e: dict[str, float] | None) -> str:
    if not e:
        return "—"
    return f"{100 * e['value']:.1f} [{100 * e['ci_low']:.1f}, {100 * e['ci_high']:.1f}]"


def num(e: dict[str, float] | None) -> str:
    if not e:
        return "—"
    return f"{e['value']:.2f} [{e['ci_low']:.2f}, {e['ci_high']:.2f}]"


def diff(e: dict[str, float] | None, scale: float = 100.0, unit: str = "", resolvable: float | None = None) -> str:
    """A paired difference; '*' when its CI excludes 0, 'not resolved' when it is smaller
    than the judge's minimum detectable effect (``resolvable``, same scale as ``e``)."""
    if not e:
        return "—"
    v, lo, hi = (scale * e[k] for k in ("value", "ci_low", "ci_high"))
    mark = "" if lo <= 0 <= hi else " *"
    if resolvable is not None and abs(e["value"]) < resolvable:
        mark += " (not resolved)"
    return f"{v:+.1f}{unit} [{lo:+.1f}, {hi:+.1f}]{mark}"


def spread(r: dict[str, Any]) -> str:
    """The between-seed SD of a row's win rate vs θ0 and of its Δ vs the default (pp), for
    two or more seeds."""
    sp = r.get("seed_spread") or {}
    parts = [f"{label} {100 * sp[k]['sd']:.1f}" for k, label in (("win_rate", "win"), ("diff_win_rate_vs_default", "Δ"))
             if sp.get(k)]
    return "; ".join(parts) or "—"


def _n(e: dict[str, float] | None) -> str:
    return str(int(e["n"])) if e else "—"


def _opt(v: float | None, fmt: str = "{:.0f}") -> str:
    return "—" if v is None else fmt.format(v)


COLUMNS = [
    ("arm", lambda r: r["arm"]),
    ("win rate vs θ0 % [95% CI]", lambda r: pct(r.get("win_rate"))),
    ("n", lambda r: _n(r.get("win_rate"))),
    ("LC win rate %", lambda r: pct(r.get("lc_win_rate"))),
    ("Arena-Hard score vs θ0 % [95% CI]", lambda r: pct(r.get("arena_hard"))),
    ("win rate vs no-creator %", lambda r: pct(r.get("win_rate_vs_baseline"))),
    ("avg score [95% CI]", lambda r: num(r.get("score"))),
    ("n (questions)", lambda r: _n(r.get("score"))),
    ("turn 1", lambda r: num(r.get("turn1"))),
    ("turn 2", lambda r: num(r.get("turn2"))),
    ("Δ win rate vs eva (pp)", lambda r: diff(r.get("diff_win_rate_vs_default"),
                                               resolvable=r.get("detectable_effect"))),
    ("Δ score vs eva", lambda r: diff(r.get("diff_score_vs_default"), 1.0)),
    ("between-seed SD (pp)", spread),
    ("train pairs", lambda r: _opt(r.get("train_pairs"))),
    ("answer length (chars)", lambda r: _opt(r.get("mean_answer_chars"))),
    ("info of sampled", lambda r: _opt(r.get("mean_info_sampled"), "{:.2f}")),
    ("evolved kept / filtered", lambda r: f"{r['kept']} / {sum(r['filtered'].values())}" if r.get("evolved") else "—"),
    ("compute (s)", lambda r: _opt(r.get("compute_seconds"))),
    ("creator calls", lambda r: str(r.get("creator_calls", 0))),
    ("judgments", lambda r: str(r.get("judge_calls", 0))),
]


def markdown(results: dict[str, Any]) -> str:
    rows = results["rows"]
    head = "| " + " | ".join(c for c, _ in COLUMNS) + " |"
    sep = "|" + "|".join("---" for _ in COLUMNS) + "|"
    body = ["| " + " | ".join(fn(r) for _, fn in COLUMNS) + " |" for r in rows]
    notes = [
        "",
        "Win rates: the judge compares each answer with θ0's (or the no-creator arm's) answer in both orders; "
        "ties and split verdicts count half. θ0's own win rate is against θ0 resampled with another seed "
        "(the noise floor). Scores: 1–10 single-answer grading of every turn. Intervals: 95% bootstrap. "
        "Δ columns: paired bootstrap against the eva default arm; * marks an interval that excludes 0.",
    ]
    online = solver_note(rows)
    if online:
        notes += ["", online]
    start = results.get("start_arm")
    if start and any(r["arm"] == start for r in rows):
        notes += ["", start_note(start, online=bool(online))]
    notes += ["", interval_note(results)]
    methods = sorted({r["lc_method"] for r in rows if r.get("lc_method")})
    if methods:
        notes += ["", "LC win rate: " + "; ".join(methods) + "."]
    if any(r.get("arena_hard") for r in rows):
        notes += ["", ARENA_HARD_NOTE]
    shared = results.get("shared_judge")
    if shared:
        notes += ["", shared_judge_warning(shared)]
    jv = results.get("judge_validity")
    if jv:
        notes += ["", judge_block(jv)]
    return "\n".join([head, sep, *body, *notes]) + "\n"


ONE_SEED_NOTE = ("One seed: the bootstrap resamples the evaluation prompts (questions for scores; Δ paired "
                 "prompt by prompt), so intervals cover the evaluation prompts only: creator sampling, evolution, "
                 "response sampling and the DPO seed are not resampled; a * says two checkpoints differ, not "
                 "that their recipes do. ablation.seeds ≥ 2 (--seeds) gives intervals that include them.")


def interval_note(results: dict[str, Any]) -> str:
    """What the table's intervals cover: prompts only (one seed), or seeds then prompts."""
    n = (results.get("intervals") or {}).get("n_seeds", 1)
    if n < 2:
        return ONE_SEED_NOTE
    return (f"With {n} seeds, intervals are two-level: seeds, then prompts (questions for scores) within each "
            "seed; Δ pairs seed s of an arm with seed s of eva, prompt by prompt, so a * holds across what the "
            "seeds vary (creator sampling, evolution, response sampling, the DPO seed). Between-seed SD: the "
            "standard deviation of the per-seed win rates vs θ0 and of the per-seed Δ win rates vs eva. θ0, untrained, has one row and no seeds to resample.")


ONLINE_NAMES = {"online:rloo": "RLOO (TRL RLOOTrainer)", "online:grpo": "GRPO (TRL GRPOTrainer)"}


def solver_note(rows: list[dict[str, Any]]) -> str:
    """The solver mode, when any arm learned online: what its rows mean and what does not apply."""
    modes = sorted({m.strip() for r in rows if r.get("solver") for m in r["solver"].split(",")})
    if not modes:
        return ""
    offline = [r["arm"] for r in rows if not r.get("solver") and r["arm"] != "theta0"]
    return ("Solver: online eva with " + " and ".join(ONLINE_NAMES.get(m, m) for m in modes)
            + ": each arm's policy learns from its own rollouts (k per prompt, scored by the reward model) on a "
            "buffer of original and evolved prompts; the creator's informativeness comes from the last phase's "
            "rollouts (before the first phase, from the policy's k samples); train pairs do not apply (—)."
            + (f" Offline arms (pairs + preference loss): {', '.join(offline)}." if offline else ""))


def start_note(start: str, online: bool = False) -> str:
    if online:
        return (f"{start}: the policy after the online phase on the original prompts that every arm shares "
                "(the paper's θ1, computed once); each arm's own phase starts from it. Its win rate is against θ0 "
                "only.")
    return (f"{start}: the policy after the DPO round on the original prompts that every arm shares "
            "(the paper's θ1, computed once); each arm's own round starts from it, so an arm's gain over "
            f"{start} is that round's. Its win rate is against θ0 only.")


ARENA_HARD_NOTE = ("Arena-Hard score: Arena-Hard-Auto v0.1's score of the same verdicts against θ0 (each order one "
                   "battle, a strong verdict three, ties half; 95% bootstrap of battles, seed 42), not the win rate "
                   "over prompts; several seeds pool their battles.")


def shared_judge_warning(shared: dict[str, str]) -> str:
    """Beside the table: the evaluation judge is the model the policies were trained to please."""
    grades = (" with the same 1–10 grading template, so the average score is the training reward measured on "
              "other prompts" if shared.get("reward_kind") == "judge_pointwise" else "")
    return (f"Warning: the reward model and the evaluation judge are the same model ({shared['model']}){grades}. "
            "A gain in these columns can be reward hacking rather than a better policy; set eval.judge to "
            "another model to measure the arms independently of their training signal.")


def judge_block(jv: dict[str, Any]) -> str:
    if not jv.get("measured"):
        return (
            f"Judge validity ({jv.get('judge_id', '?')}, {jv.get('mode')}): not measured for this judge and "
            f"template; run `evalign judge-check --out <this run directory>` with the same judge to see its "
            f"accuracy, position bias and the smallest difference this study (n={jv.get('n')}) can detect."
        )
    mde = jv.get("detectable_effect")
    mde_s = "∞ (judge at chance)" if mde is None or mde == float("inf") else f"{100 * mde:.1f} pp"
    flip = jv.get("injection_flip_rate")
    like = jv.get("resembling") or "all"
    acc = jv["accuracy"]
    what = ("the subtle labeled pairs (two competent answers, the kind of comparison this study makes)"
            if like == "subtle" else "the labeled pairs")
    gross = jv.get("gross_accuracy")
    return (
        f"Judge validity ({jv['judge_id']}, {jv['mode']}; {_validity_origin(jv)}): both-orders accuracy on "
        f"{what} {pct(acc)}% (n={_n(acc)})"
        + (f", mean P(better) {pct(jv['soft_accuracy'])}%" if jv.get("soft_accuracy") else "")
        + f". Minimum detectable win-rate difference at n={jv.get('n')} prompts (80% power, α=0.05), from that "
        f"accuracy: {mde_s} ({jv.get('method')}, sd={jv.get('sd_paired', 0):.2f}). "
        "Arm differences smaller than that are marked not resolved. "
        + _basis(jv, acc)
        + (f"Sanity check: on gross pairs (a competent answer against a broken, off-topic or refusing one) "
           f"{pct(gross)}% (n={_n(gross)}); all {jv.get('labeled_n')} pairs {pct(jv.get('overall_accuracy'))}%. "
           if gross else "")
        + f"First-position rate {_opt(jv.get('first_position_rate'), '{:.2f}')}, "
        f"order agreement {_opt(jv.get('order_agreement'), '{:.2f}')}"
        + (f", injection flip rate {pct(flip)}% (n={_n(flip)} answers with an instruction to the judge)"
           if flip else "")
        + "."
    )


def _basis(jv: dict[str, Any], pairwise: dict[str, Any]) -> str:
    """Why the win rate is the pairwise verdict: beside it, how often the same judge's per-answer
    grades put the better answer of the same pairs higher (measured by ``judge-check --kind pointwise``)."""
    graded = jv.get("grades_accuracy")
    if not graded:
        return ""
    better = ("the pairwise verdict separates them better" if pairwise["value"] > graded["value"] else
              "per-answer grades separate them at least as well; the win rate stays pairwise, as the "
              "field's win rates are")
    return (f"Win rates use the pairwise verdict: the same judge's per-answer grades rank the better answer of "
            f"the same pairs higher on {pct(graded)}% (n={_n(graded)}) against {pct(pairwise)}%, so {better}. ")


def _validity_origin(jv: dict[str, Any]) -> str:
    """Where the judge-check result came from: this run's directory or evalign's shipped one."""
    where = {"run": "measured by judge-check in this run directory",
             "shipped": "shipped with evalign for the built-in judge"}.get(jv.get("origin") or "", "measured")
    limit = f", --limit {jv['labeled_limit']}" if jv.get("labeled_limit") else ""
    return f"{where}, labeled set {jv.get('source') or '?'}{limit}"


def csv_text(results: dict[str, Any]) -> str:
    fields = ["arm", "description", "n_seeds", "lc_method"]
    est = ["win_rate", "lc_win_rate", "arena_hard", "win_rate_vs_baseline", "score", "turn1", "turn2",
           "diff_win_rate_vs_default", "diff_score_vs_default"]
    scalars = ["train_pairs", "mean_answer_chars", "mean_info_sampled", "evolved", "kept", "compute_seconds",
               "creator_calls", "reward_calls", "judge_calls", "parse_failures"]
    spreads = ["win_rate", "score", "diff_win_rate_vs_default"]
    levels = "+".join((results.get("intervals") or {}).get("levels") or ["prompts"])
    header = (fields + [f"{e}_{k}" for e in est for k in ("value", "ci_low", "ci_high", "n")] + scalars
              + [f"seed_sd_{k}" for k in spreads] + ["interval_levels", "filtered", "solver"])
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    for r in results["rows"]:
        line = [r.get(f) for f in fields]
        for e in est:
            v = r.get(e) or {}
            line += [v.get(k) for k in ("value", "ci_low", "ci_high", "n")]
        line += [r.get(s) for s in scalars]
        sp = r.get("seed_spread") or {}
        line += [(sp.get(k) or {}).get("sd") for k in spreads]
        line.append(levels)
        line.append(";".join(f"{k}={v}" for k, v in sorted(r.get("filtered", {}).items())))
        line.append(r.get("solver") or "offline")
        w.writerow(line)
    return buf.getvalue()
