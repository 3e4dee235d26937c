"""``evalign judge-check``: how far can a judge or reward model be trusted?

On labeled pairs (prompt, better answer, worse answer) — the project's own set, a user's
JSONL of the same shape, or MT-Bench human/GPT-4 judgment files — it measures:

* pairwise: accuracy of the both-orders verdict (Wilson 95% CI) overall, per category and
  per difficulty; accuracy of each order alone; how often the first answer is picked in each
  order (position bias); agreement between the two orders;
* pointwise (1–10 grades, rewards): how often the better answer scores higher, and the
  Spearman correlation of the scores with the labels' scores;
* speed: judge calls per second and seconds per labeled pair.

Judge variants (``--variant``, :data:`judging.VARIANTS`) are measured with the pairwise
check, one result per variant; the reward modes (pointwise, pairwise_anchor) with the base
judge. The result is cached per judge (model, kind, mode, template version — the version
includes the variant) under the evalign cache, so ablation reports can show it beside
their numbers; results measured for the built-in judge ship in ``data/judge_checks/``.
Judgments are cached in a run store so a rerun is free (and keeps the timing measured
when they were made).
"""

from __future__ import annotations

import json
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalign.config import Config, ModelSpec
from evalign.errors import InputError
from evalign.eval import formats, stats
from evalign.judge.judge import VARIANTS, GradeItem, Judge, PairItem
from evalign.weights import cache_dir
from evalign.prompts import builtin_path

KINDS = ("pairwise", "pointwise", "pairwise_anchor", "classifier")


@dataclass
class CheckResult:
    judge_id: str
    kind: str
    mode: str
    n: int
    accuracy: stats.Estimate
    calls_per_second: float
    seconds: float
    by_category: dict[str, dict[str, float]] = field(default_factory=dict)
    by_difficulty: dict[str, dict[str, float]] = field(default_factory=dict)
    order_accuracy: tuple[float, float] | None = None  # better first, better second
    first_position_rate: float | None = None
    first_rate_by_order: tuple[float, float] | None = None
    order_agreement: float | None = None
    spearman: float | None = None
    template_version: str = ""
    source: str = ""
    variant: str = "base"
    #: Judge (and tie-breaker) calls and wall seconds per labeled pair, both orders.
    calls_per_pair: float | None = None
    seconds_per_pair: float | None = None
    #: Mean both-orders P(better answer) with a bootstrap CI: the verdict's strength, which is
    #: what a win rate averages (``calibrated`` changes it, never the thresholded accuracy).
    soft_accuracy: stats.Estimate | None = None
    #: Per-phrasing both-orders accuracy (``ensemble``).
    components: dict[str, float] | None = None
    #: Pairs the policy decided and the accuracy on them (``policy_tiebreak``).
    tiebreaks: int | None = None
    tiebreak_accuracy: float | None = None
    #: True when every judgment came from the run store and the timing is the one saved when
    #: they were made.
    timing_from_cache: bool = False
    #: Per labeled pair, in input order: 1 right, 0.5 tie, 0 wrong (for paired comparisons).
    correct: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k not in ("accuracy", "soft_accuracy")}
        d["accuracy"] = self.accuracy.as_dict()
        d["soft_accuracy"] = self.soft_accuracy.as_dict() if self.soft_accuracy else None
        return d


def load_labeled(labeled: Path | None, mt_judgments: Path | None, mt_answers: Path | None,
                 mt_questions: Path | None, limit: int | None) -> tuple[list[formats.LabeledPair], str]:
    if mt_judgments is not None:
        if mt_answers is None or mt_questions is None:
            raise InputError("--mt-judgments needs --mt-answers (model_answer directory) and --mt-questions")
        pairs = formats.labeled_pairs_from_mt_judgments(mt_judgments, mt_answers, mt_questions)
        source = str(mt_judgments)
    else:
        path = labeled or builtin_path("labeled_pairs.jsonl")
        pairs = formats.load_labeled_pairs(path)
        source = "builtin:labeled" if labeled is None else str(labeled)
    if not pairs:
        raise InputError(f"{source}: no labeled pairs")
    if limit:
        from evalign.eval.sets import spread

        # Evenly over category x difficulty: the file lists each category's gross pairs first,
        # and a subset of gross pairs alone cannot tell judges apart.
        pairs = spread(pairs, limit, category=lambda p: (p.category, p.difficulty))
    return pairs, source


def _acc(correct: list[float]) -> stats.Estimate:
    k = sum(correct)
    return stats.proportion_ci(int(round(k)), len(correct)) if correct else stats.Estimate(float("nan"), 0, 0, 0)


def _breakdown(pairs, correct: list[float], key) -> dict[str, dict[str, float]]:
    groups: dict[str, list[float]] = defaultdict(list)
    for p, c in zip(pairs, correct):
        groups[str(key(p))].append(c)
    return {g: {"accuracy": sum(v) / len(v), "n": len(v)} for g, v in sorted(groups.items())}


def check_pairwise(judge: Judge, pairs: list[formats.LabeledPair], source: str) -> CheckResult:
    """Both orders of every pair, combined with the judge variant's rule (``Judge.combine``).
    An unparsed verdict counts as 0.5 for its order."""
    t0 = time.perf_counter()
    calls0, tb0 = judge.stats.calls, judge.stats.tiebreak_calls
    items = []
    for p in pairs:
        items += [PairItem(p.prompt, p.better, p.worse, category=p.category),
                  PairItem(p.prompt, p.worse, p.better, category=p.category)]
    verdicts = judge.compare(items, description=f"judge-check pairwise ({judge.variant})")
    correct, soft, o1, o2, first1, first2, agree, decided = [], [], [], [], [], [], [], []
    comp: dict[str, list[float]] = defaultdict(list)
    for i in range(len(pairs)):
        a, b = verdicts[2 * i], verdicts[2 * i + 1]  # better first, better second
        pa = a.p_a if a.p_a is not None else 0.5
        pb = b.p_a if b.p_a is not None else 0.5
        tb_before = judge.tiebreaks
        p_better = judge.combine(pa, pb, items[2 * i])
        if judge.tiebreaks > tb_before:
            decided.append(i)
        correct.append(1.0 if p_better > 0.5 else 0.5 if p_better == 0.5 else 0.0)
        soft.append(p_better)
        o1.append(float(pa > 0.5))
        o2.append(float(pb < 0.5))
        first1.append(float(pa > 0.5))
        first2.append(float(pb > 0.5))
        agree.append(float((pa > 0.5) == (pb < 0.5)))
        ca, cb = _components(a), _components(b)
        for name in ca.keys() & cb.keys():
            q = (ca[name] + 1 - cb[name]) / 2
            comp[name].append(1.0 if q > 0.5 else 0.5 if q == 0.5 else 0.0)
    seconds = time.perf_counter() - t0
    calls = judge.stats.calls - calls0 + judge.stats.tiebreak_calls - tb0
    n = len(pairs)
    tb = judge.tiebreak_llm is not None
    return CheckResult(
        judge.judge_id, "pairwise", judge.mode, n, _acc(correct), calls / seconds if seconds and calls else 0.0,
        seconds, _breakdown(pairs, correct, lambda p: p.category),
        _breakdown(pairs, correct, lambda p: p.difficulty or "-"),
        (sum(o1) / n, sum(o2) / n), (sum(first1) + sum(first2)) / (2 * n), (sum(first1) / n, sum(first2) / n),
        sum(agree) / n, None, judge.pair_version, source, variant=judge.variant,
        calls_per_pair=calls / n, seconds_per_pair=seconds / n,
        soft_accuracy=stats.mean_ci(soft, n_boot=2000, seed=0),
        components={k: sum(v) / len(v) for k, v in sorted(comp.items())} if comp else None,
        tiebreaks=len(decided) if tb else None,
        tiebreak_accuracy=(sum(correct[i] for i in decided) / len(decided)) if tb and decided else None,
        correct=correct,
    )


def _components(v) -> dict[str, float]:
    if not v.raw.startswith("{"):
        return {}
    try:
        return {k: float(x) for k, x in json.loads(v.raw).get("components", {}).items()}
    except (ValueError, AttributeError, TypeError):
        return {}


def _score_result(kind: str, judge_id: str, mode: str, pairs, better: list[float], worse: list[float],
                  seconds: float, calls: int, version: str, source: str) -> CheckResult:
    correct = [1.0 if b > w else 0.5 if b == w else 0.0 for b, w in zip(better, worse)]
    labels = [x for p in pairs for x in (p.better_score, p.worse_score)]
    scores = [x for pair in zip(better, worse) for x in pair]
    rho = None
    if all(v is not None for v in labels):
        rho = stats.spearman(scores, labels)
    n = len(pairs)
    return CheckResult(judge_id, kind, mode, n, _acc(correct), calls / seconds if seconds and calls else 0.0,
                       seconds, _breakdown(pairs, correct, lambda p: p.category),
                       _breakdown(pairs, correct, lambda p: p.difficulty or "-"), spearman=rho,
                       template_version=version, source=source, calls_per_pair=calls / n if n else None,
                       seconds_per_pair=seconds / n if n else None, correct=correct)


def check_pointwise(judge: Judge, pairs, source: str) -> CheckResult:
    t0, calls0 = time.perf_counter(), judge.stats.calls
    items = [GradeItem(p.prompt, a) for p in pairs for a in (p.better, p.worse)]
    v = judge.grade(items, description="judge-check pointwise")
    scores = [x.score if x.score is not None else 5.5 for x in v]
    return _score_result("pointwise", judge.judge_id, judge.mode, pairs, scores[0::2], scores[1::2],
                         time.perf_counter() - t0, judge.stats.calls - calls0, judge.grade_version, source)


def check_reward(reward, pairs, source: str, kind: str) -> CheckResult:
    """A reward model's scores of the better and the worse answer. For a judge reward the
    calls are the judge's own (0 when every judgment came from the run store)."""
    t0 = time.perf_counter()
    judge = getattr(reward, "judge", None)
    calls0 = judge.stats.calls if judge is not None else 0
    scores = reward.score([p.prompt for p in pairs], [[p.worse, p.better] for p in pairs])
    seconds = time.perf_counter() - t0
    # pairwise_anchor: the first response (the worse one) is the anchor and scores 0.5;
    # a classifier scores both responses.
    calls = judge.stats.calls - calls0 if judge is not None else len(pairs) * 2
    mode = judge.mode if judge is not None else ""
    version = judge.pair_version if judge is not None else ""
    return _score_result(kind, reward.reward_id, mode, pairs, [s[1] for s in scores], [s[0] for s in scores],
                         seconds, calls, version, source)


def paired_comparison(a: list[float], b: list[float]) -> dict[str, float]:
    """Two judges on the same labeled pairs: pairs only ``a`` gets right, pairs only ``b``
    gets right, and the exact two-sided McNemar p-value (a binomial test on the discordant
    pairs; a tie counts as half right, so it is discordant against a right or a wrong)."""
    from scipy.stats import binomtest

    if len(a) != len(b):
        raise ValueError("paired comparison needs results on the same labeled pairs")
    only_a = sum(1 for x, y in zip(a, b) if x > y)
    only_b = sum(1 for x, y in zip(a, b) if y > x)
    n = only_a + only_b
    p = binomtest(only_a, n, 0.5).pvalue if n else 1.0
    return {"only_a": only_a, "only_b": only_b, "p_value": float(p)}


def cached_result_path(judge_id: str, kind: str, mode: str, version: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9_.@-]+", "_", judge_id)[:120]
    return cache_dir() / "judge-checks" / f"{slug}--{kind}--{mode or 'na'}--{version or 'na'}.json"


def save_result(result: CheckResult) -> Path:
    from evalign.fsutil import atomic_write_text

    path = cached_result_path(result.judge_id, result.kind, result.mode, result.template_version)
    atomic_write_text(path, json.dumps(result.as_dict(), indent=1))
    return path


def load_cached_result(judge_id: str, kind: str, mode: str, version: str) -> dict[str, Any] | None:
    """A judge-check result measured earlier for exactly this judge, template and mode."""
    for path in (cached_result_path(judge_id, kind, mode, version), _shipped_path(judge_id, kind, mode, version)):
        if path is not None and path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
    return None


def _shipped_path(judge_id: str, kind: str, mode: str, version: str) -> Path | None:
    """Results measured for the built-in judge and shipped with evalign (docs/judges.md)."""
    slug = re.sub(r"[^A-Za-z0-9_.@-]+", "_", judge_id)[:120]
    p = builtin_path("judge_checks") / f"{slug}--{kind}--{mode or 'na'}--{version or 'na'}.json"
    return p


def format_table(results: list[CheckResult]) -> str:
    head = ("| judge / reward | kind | variant | mode | n | accuracy % [95% CI] | gross / subtle % "
            "| better-first / better-second % | first-position rate | order agreement | Spearman | calls/s "
            "| s / pair |")
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        acc = f"{100 * r.accuracy.value:.1f} [{100 * r.accuracy.ci_low:.1f}, {100 * r.accuracy.ci_high:.1f}]"
        diff = " / ".join(f"{100 * r.by_difficulty[d]['accuracy']:.0f}" if d in r.by_difficulty else "—"
                          for d in ("gross", "subtle"))
        orders = f"{100 * r.order_accuracy[0]:.0f} / {100 * r.order_accuracy[1]:.0f}" if r.order_accuracy else "—"
        first = (f"{r.first_position_rate:.2f} ({r.first_rate_by_order[0]:.2f} / {r.first_rate_by_order[1]:.2f})"
                 if r.first_position_rate is not None else "—")
        agree = f"{r.order_agreement:.2f}" if r.order_agreement is not None else "—"
        rho = f"{r.spearman:.2f}" if r.spearman is not None else "—"
        spp = f"{r.seconds_per_pair:.2f}" if r.seconds_per_pair is not None else "—"
        variant = r.variant if r.kind == "pairwise" else "—"
        lines.append(f"| {r.judge_id} | {r.kind} | {variant} | {r.mode or '—'} | {r.n} | {acc} | {diff} | {orders} "
                     f"| {first} | {agree} | {rho} | {r.calls_per_second:.2f} | {spp} |")
    cats = sorted({c for r in results for c in r.by_category})
    if cats:
        lines += ["", "| kind / variant | " + " | ".join(cats) + " | gross | subtle |",
                  "|---|" + "---|" * (len(cats) + 2)]
        for r in results:
            cells = [f"{100 * r.by_category[c]['accuracy']:.0f}" if c in r.by_category else "—" for c in cats]
            cells += [f"{100 * r.by_difficulty[d]['accuracy']:.0f}" if d in r.by_difficulty else "—"
                      for d in ("gross", "subtle")]
            name = f"{r.kind} / {r.variant}" if r.kind == "pairwise" else r.kind
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    extras = []
    for r in results:
        bits = []
        if r.soft_accuracy is not None:
            bits.append(f"mean P(better) {r.soft_accuracy.fmt(pct=True)}")
        if r.components:
            bits.append("per phrasing " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in r.components.items()))
        if r.tiebreaks is not None:
            tba = f", {100 * r.tiebreak_accuracy:.0f}% right" if r.tiebreak_accuracy is not None else ""
            bits.append(f"policy decided {r.tiebreaks} pairs{tba}")
        if r.timing_from_cache:
            bits.append("timing from the run that made the judgments")
        if bits:
            extras.append(f"- {r.kind} / {r.variant}: " + "; ".join(bits))
    if extras:
        lines += [""] + extras
    return "\n".join(lines)


def _keep_timing(result: CheckResult) -> None:
    """A rerun served from the run store made no calls: keep the speed saved when it did."""
    if result.calls_per_second or not result.n:
        return
    old = load_cached_result(result.judge_id, result.kind, result.mode, result.template_version)
    if old and old.get("calls_per_second"):
        result.calls_per_second = old["calls_per_second"]
        result.seconds = old.get("seconds", result.seconds)
        result.calls_per_pair = old.get("calls_per_pair", result.calls_per_pair)
        result.seconds_per_pair = old.get("seconds_per_pair", result.seconds_per_pair)
        result.timing_from_cache = True


def _tiebreak_spec(cfg: Config) -> ModelSpec:
    """The policy that breaks ties: the configured policy, on transformers (sequence scoring
    reads the model directly; a built-in name would otherwise resolve to llama.cpp)."""
    from evalign.backends import resolve_backend

    spec = cfg.policy
    if resolve_backend(spec) == "llamacpp":
        spec = spec.model_copy(update={"backend": "transformers"})
    return spec


def run_judge_check(cfg: Config, *, judge: str | None = None, backend: str | None = None, kind: str = "all",
                    labeled: Path | None = None, mt_judgments: Path | None = None, mt_answers: Path | None = None,
                    mt_questions: Path | None = None, limit: int | None = None, variants=None,
                    out: Path | None = None, pool=None) -> list[CheckResult]:
    """Measure the judge on labeled pairs. ``variants``: judge variants for the pairwise check
    (one result each; default: ``eval.judge_variant`` when the config has it, else base).
    ``pool``: a ``ModelPool`` to take models from (tests pass scripted ones); closed only
    when created here."""
    from evalign.backends.pool import ModelPool
    from evalign.judge.reward import ClassifierReward, JudgePairwiseAnchorReward
    from evalign.store import RunStore

    spec = cfg.eval.judge
    if judge:
        spec = ModelSpec(model=judge, backend=backend or "auto")  # type: ignore[arg-type]
    elif backend:
        spec = spec.model_copy(update={"backend": backend})
    kinds = list(KINDS) if kind == "all" else [k.strip() for k in kind.split(",")]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise InputError(f"unknown --kind {', '.join(unknown)}; choose from {', '.join(KINDS)} or all")
    if kind == "all" and spec.backend != "transformers":
        kinds = [k for k in kinds if k != "classifier"]  # a chat judge is not a classifier
    names = list(dict.fromkeys(variants or [getattr(cfg.eval, "judge_variant", "base")]))
    bad = [v for v in names if v not in VARIANTS]
    if bad:
        raise InputError(f"unknown --variant {', '.join(bad)}; choose from {', '.join(VARIANTS)}")
    pairs, source = load_labeled(labeled, mt_judgments, mt_answers, mt_questions, limit)
    run_dir = out or Path("runs") / "judge-check"
    results: list[CheckResult] = []
    with RunStore(run_dir) as store:
        own_pool = pool is None
        pool = pool or ModelPool()
        try:
            for k in kinds:
                if k == "classifier":
                    results.append(check_reward(ClassifierReward(spec), pairs, source, k))
                    continue
                llm = pool.get(spec)
                for v in (names if k == "pairwise" else ["base"]):
                    policy = pool.get(_tiebreak_spec(cfg)) if v == "policy_tiebreak" else None
                    j = Judge(llm, mode=cfg.eval.judge_mode, store=store, parse_retries=cfg.eval.parse_retries,
                              max_answer_tokens=cfg.eval.max_judge_answer_tokens, variant=v, tiebreak_llm=policy)
                    if k == "pairwise":
                        results.append(check_pairwise(j, pairs, source))
                    elif k == "pointwise":
                        results.append(check_pointwise(j, pairs, source))
                    else:
                        results.append(check_reward(JudgePairwiseAnchorReward(j), pairs, source, k))
        finally:
            if own_pool:
                pool.close()
        for r in results:
            _keep_timing(r)
            save_result(r)
        from evalign.fsutil import atomic_write_text

        atomic_write_text(run_dir / "judge_check.json", json.dumps([r.as_dict() for r in results], indent=1))
    table = format_table(results)
    print(table)
    print(f"labeled pairs: {source} (n={len(pairs)}); results: {run_dir / 'judge_check.json'}")
    return results
