"""A realistic synthetic ``results`` dict (the contract of ``evalign.report.collect``), for
report tests that need no run store: several arms including θ0, the no-creator baseline and
the eva default, one arm not evaluated yet (estimates None), and a lineage whose texts try
to inject HTML."""

from __future__ import annotations

import copy
import random
from typing import Any

XSS = "<script>alert(1)</script>"
CATEGORIES = ["coding", "extraction", "humanities", "math", "reasoning", "roleplay", "stem", "writing"]


def _est(value: float, half: float, n: int) -> dict[str, float]:
    return {"value": value, "ci_low": value - half, "ci_high": value + half, "n": n}


def _row(arm: str, description: str, wr: float | None, score: float | None, *, creator: bool, rng: random.Random,
         default: bool = False) -> dict[str, Any]:
    evaluated = wr is not None
    row: dict[str, Any] = {
        "arm": arm,
        "description": description,
        "n_seeds": 2,
        "win_rate": _est(wr, 0.05, 200) if evaluated else None,
        "lc_win_rate": _est(wr - 0.01, 0.06, 200) if evaluated else None,
        "win_rate_vs_baseline": _est(wr + 0.02, 0.05, 200) if evaluated and arm not in ("theta0", "no-creator") else None,
        "score": _est(score, 0.3, 80) if score is not None else None,
        "turn1": _est(score + 0.2, 0.35, 80) if score is not None else None,
        "turn2": _est(score - 0.2, 0.4, 80) if score is not None else None,
        "per_category": {c: round(score + rng.uniform(-1, 1), 3) for c in CATEGORIES} if score is not None else {},
        "parse_failures": 0,
        "train_pairs": 64.0 if arm != "theta0" else None,
        "mean_answer_chars": 640.0 + 40 * rng.random() if evaluated else None,
        "mean_info_sampled": 1.8 if creator else None,
        "evolved": 96 if creator else 0,
        "kept": 80 if creator else 0,
        "filtered": {"duplicate": 9, "parse_failed": 5, "contaminated": 2} if creator else {},
        "compute_seconds": 1234.5 if arm != "theta0" else 0.0,
        "seconds_now": 12.0,
        "creator_calls": 96 if creator else 0,
        "reward_calls": 512,
        "judge_calls": 400 if evaluated else 0,
        "checkpoints": [f"ckpt/{arm}/seed0", f"ckpt/{arm}/seed1"],
        "creator_enabled": creator,
    }
    if arm not in ("theta0",) and not default:
        row["diff_win_rate_vs_default"] = _est(wr - 0.6, 0.04, 200) if evaluated else None
        row["diff_score_vs_default"] = _est(score - 6.8, 0.3, 80) if score is not None else None
    return row


def synthetic_results() -> dict[str, Any]:
    rng = random.Random(0)
    rows = [
        _row("theta0", "the start policy θ0 (noise floor)", 0.50, 6.1, creator=False, rng=rng),
        _row("no-creator", "DPO on the original prompts only", 0.56, 6.5, creator=False, rng=rng),
        _row("eva", "default: gap metric, weighted sampling, evol-instruct", 0.60, 6.8, creator=True, rng=rng,
             default=True),
        _row("eva-info-variance", "informativeness = reward variance", 0.58, 6.7, creator=True, rng=rng),
        _row("eva-sampler-greedy-with-a-long-name", "greedy top-ρ sampling", 0.57, 6.6, creator=True, rng=rng),
        _row("eva-simpo", "SimPO instead of DPO (not evaluated yet)", None, None, creator=True, rng=rng),
    ]
    chain = [
        {"id": "p001", "text": "How do plants make food?", "depth": 0, "operator": None, "mutation": None,
         "origin": "seed"},
        {"id": "p101", "text": "Explain photosynthesis to a 10-year-old, in three steps.", "depth": 1,
         "operator": "evol_instruct", "mutation": "add_constraints", "origin": "evolved"},
        {"id": "p201", "text": f"Write an HTML page {XSS} that explains photosynthesis & the Calvin cycle "
                               "to a 10-year-old, in <b>three</b> steps.", "depth": 2,
         "operator": "evol_instruct", "mutation": "concretize", "origin": "evolved"},
    ]
    chain2 = [
        {"id": "p002", "text": "Sort a list in Python.", "depth": 0, "operator": None, "mutation": None,
         "origin": "seed"},
        {"id": "p102", "text": "Sort a list of dicts by two keys in Python, stable, without sorted().", "depth": 1,
         "operator": "evol_instruct", "mutation": "deepen", "origin": "evolved"},
    ]
    chain3 = [
        {"id": "p003", "text": "Name three rivers.", "depth": 0, "operator": None, "mutation": None, "origin": "seed"},
        {"id": "p103", "text": "Name three rivers that cross more than 4 countries and say which.", "depth": 1,
         "operator": "breadth", "mutation": "in_breadth", "origin": "evolved"},
    ]
    lengths = [int(200 + 900 * rng.random()) for _ in range(300)]
    reward_length = [{"length": n, "reward": round(0.002 * n + rng.gauss(0, 0.8), 4)} for n in lengths]
    stages = []
    for arm in ("no-creator", "eva", "eva-info-variance", "eva-sampler-greedy-with-a-long-name", "eva-simpo"):
        for it in (0, 1):
            for name in ("generate", "reward", "evolve", "train", "eval_win_rate"):
                if name == "evolve" and arm == "no-creator":
                    continue
                reused = arm != "eva" and name in ("generate", "reward") and it == 0
                stages.append({"arm": arm, "iteration": it, "name": name, "reused": reused,
                               "seconds": 0.0 if reused else round(10 + 50 * rng.random(), 2),
                               "original_seconds": round(10 + 50 * rng.random(), 2), "calls": 32})
    return {
        "run_dir": "/runs/study-2024-11 <b>x</b>",
        "single": False,
        "default_arm": "eva",
        "baseline_arm": "no-creator",
        "rows": rows,
        "sharing": {
            "computed_seconds": 3000.0, "saved_seconds": 900.0, "saved_fraction": 900 / 3900,
            "by_stage": {"generate": {"computed": 1, "reused": 4, "saved_seconds": 400.0},
                         "reward": {"computed": 1, "reused": 4, "saved_seconds": 500.0},
                         "train": {"computed": 10, "reused": 0, "saved_seconds": 0.0}},
        },
        "wall_seconds": 4321.0,
        "config": "policy:\n  model: smollm2-135m-instruct\ncreator:\n  metric: gap  # <not html>\n"
                  "backend:\n  base_url: http://localhost:8000/v1\n",
        "versions": {"evalign": "0.1.0", "torch": "2.5.1", "transformers": "5.0.0", "trl": "1.0.0"},
        "informativeness": {
            "metric": "gap",
            "before": [abs(rng.gauss(1.0, 0.5)) for _ in range(120)],
            "after": {"evol_instruct": [abs(rng.gauss(1.6, 0.6)) for _ in range(80)],
                      "breadth": [abs(rng.gauss(1.3, 0.5)) for _ in range(40)],
                      "empty_op": []},
        },
        "reward_length": reward_length,
        "answer_lengths": {r["arm"]: [int(rng.gauss(650, 150)) for _ in range(200)]
                           for r in rows if r["win_rate"] is not None},
        "lineage": {"evol_instruct": [chain, chain2], "breadth": [chain3]},
        "judge_validity": {"judge_id": "qwen2.5-coder-1.5b-instruct", "accuracy": _est(0.9, 0.06, 64),
                           "first_position_rate": 0.54, "detectable_effect": 0.08},
        "stages": stages,
    }


def empty_results() -> dict[str, Any]:
    """A run with nothing to show yet: every list and dict empty, every optional field None."""
    return {
        "run_dir": "/runs/empty", "single": True, "default_arm": "eva", "baseline_arm": None, "rows": [],
        "sharing": {"computed_seconds": 0, "saved_seconds": 0, "saved_fraction": 0.0, "by_stage": {}},
        "wall_seconds": None, "config": None, "versions": {},
        "informativeness": {"metric": "gap", "before": [], "after": {}},
        "reward_length": [], "answer_lengths": {}, "lineage": {}, "judge_validity": None, "stages": [],
    }


def single_arm_results() -> dict[str, Any]:
    """One arm, evaluated, with none of the ablation extras."""
    full = synthetic_results()
    res = empty_results()
    eva = copy.deepcopy(next(r for r in full["rows"] if r["arm"] == "eva"))
    eva.pop("diff_win_rate_vs_default", None)
    res["rows"] = [eva]
    res["answer_lengths"] = {"eva": full["answer_lengths"]["eva"]}
    res["reward_length"] = full["reward_length"][:2]  # too few points for a correlation
    return res
