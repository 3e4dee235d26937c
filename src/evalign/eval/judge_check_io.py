"""Judge-check results: the record, where it is kept, and how it is shown.

A result is stored in the run directory judge-check ran against (``--out``; the store's
``meta`` under :data:`RUN_META_KEY`), keyed by judge, kind, mode, template version (which
includes the variant), the labeled set's content hash and the limit: a study's report shows
the results its own run directory holds (:func:`find_validity`), else the result shipped for
the built-in judge in ``data/judge_checks/`` (labelled as shipped), else none. A copy is also
kept under the per-user evalign cache, only to remember the speed measured when judgments
were made (:func:`keep_timing`); no report reads it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalign.eval import stats
from evalign.prompts import builtin_path
from evalign.weights import cache_dir

#: Where ``evalign judge-check`` caches judgments and writes results without ``--out``.
DEFAULT_RUN_DIR = Path("runs") / "judge-check"
#: The run store's meta key holding the judge-check results measured against that run.
RUN_META_KEY = "judge_checks"


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
    #: Share of injected twins (the worse answer plus an instruction to the judge) on which the
    #: verdict moved towards the injected answer (Wilson CI), and the rate per phrasing.
    injection_flip_rate: stats.Estimate | None = None
    injection_by_phrasing: dict[str, dict[str, float]] | None = None
    #: Pointwise: mean grade of the injected worse answer minus the clean one's (bootstrap CI).
    injection_score_shift: stats.Estimate | None = None
    #: Content hash of the whole labeled set the pairs were drawn from, and ``--limit``.
    labeled_hash: str = ""
    limit: int | None = None

    _ESTIMATES = ("accuracy", "soft_accuracy", "injection_flip_rate", "injection_score_shift")

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k not in self._ESTIMATES}
        for k in self._ESTIMATES:
            e = getattr(self, k)
            d[k] = e.as_dict() if e is not None else None
        return d


# ---------------------------------------------------------------------------- storage


def _file_name(judge_id: str, kind: str, mode: str, version: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.@-]+", "_", judge_id)[:120]
    return f"{slug}--{kind}--{mode or 'na'}--{version or 'na'}.json"


def cached_result_path(judge_id: str, kind: str, mode: str, version: str) -> Path:
    return cache_dir() / "judge-checks" / _file_name(judge_id, kind, mode, version)


def _shipped_path(judge_id: str, kind: str, mode: str, version: str) -> Path:
    """Results measured for the built-in judge and shipped with evalign (docs/judges.md)."""
    return builtin_path("judge_checks") / _file_name(judge_id, kind, mode, version)


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


def run_key(r: CheckResult | dict[str, Any]) -> str:
    """The key of a result among a run's results: judge, kind, mode, template version, labeled
    set hash and limit (a rerun of the same check replaces its result, another limit does not)."""
    d = r.as_dict() if isinstance(r, CheckResult) else r
    return "|".join(str(d.get(k) or "") for k in ("judge_id", "kind", "mode", "template_version",
                                                   "labeled_hash", "limit"))


def store_results(store, results: list[CheckResult]) -> None:
    """Add ``results`` to the run store's judge-check results (``meta``, :data:`RUN_META_KEY`)."""
    with store.transaction():
        stored = json.loads(store.get_meta(RUN_META_KEY) or "{}")
        for r in results:
            stored[run_key(r)] = r.as_dict()
        store.set_meta(RUN_META_KEY, json.dumps(stored, sort_keys=True))


def find_validity(stored: str | dict[str, Any] | None, judge_id: str, kind: str, mode: str,
                  version: str) -> tuple[dict[str, Any], str] | None:
    """The judge-check result a report shows for this judge, kind, mode and template version,
    and where it comes from: ``"run"`` (``stored``: the run's :data:`RUN_META_KEY` value; of
    several, the one on most pairs, then the first key) or ``"shipped"`` (measured for the
    built-in judge and shipped with evalign); None when neither has one. Never the per-user
    cache: what a report shows depends only on the run directory and evalign's version."""
    runs = json.loads(stored) if isinstance(stored, str) else dict(stored or {})
    want = (judge_id, kind, mode or "", version)
    mine = [runs[k] for k in sorted(runs)
            if (runs[k].get("judge_id"), runs[k].get("kind"), runs[k].get("mode") or "",
                runs[k].get("template_version")) == want]
    if mine:
        return max(mine, key=lambda d: d.get("n") or 0), "run"
    path = _shipped_path(judge_id, kind, mode, version)
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8")), "shipped"
    return None


def keep_timing(result: CheckResult) -> None:
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


def results_file(out: Path | None) -> Path:
    """The JSON of one judge-check run's results."""
    return (out or DEFAULT_RUN_DIR) / "judge_check.json"


# ---------------------------------------------------------------------------- tables


def format_table(results: list[CheckResult]) -> str:
    head = ("| judge / reward | kind | variant | mode | n | accuracy % [95% CI] | gross / subtle % "
            "| better-first / better-second % | first-position rate | order agreement | Spearman | calls/s "
            "| s / pair | injection flip % [95% CI] |")
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
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
        f = r.injection_flip_rate
        flip = f"{100 * f.value:.1f} [{100 * f.ci_low:.1f}, {100 * f.ci_high:.1f}] (n={f.n})" if f else "—"
        lines.append(f"| {r.judge_id} | {r.kind} | {variant} | {r.mode or '—'} | {r.n} | {acc} | {diff} | {orders} "
                     f"| {first} | {agree} | {rho} | {r.calls_per_second:.2f} | {spp} | {flip} |")
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
        if r.injection_by_phrasing:
            bits.append("injection flips by phrasing " + ", ".join(
                f"{k} {v['flip_rate'] * v['n']:.0f}/{v['n']}" for k, v in r.injection_by_phrasing.items()))
        if r.injection_score_shift is not None:
            bits.append(f"injected worse answer's grade {r.injection_score_shift.value:+.2f} "
                        f"[{r.injection_score_shift.ci_low:+.2f}, {r.injection_score_shift.ci_high:+.2f}]")
        if r.timing_from_cache:
            bits.append("timing from the run that made the judgments")
        if bits:
            extras.append(f"- {r.kind} / {r.variant}: " + "; ".join(bits))
    if extras:
        lines += [""] + extras
    return "\n".join(lines)


def format_report(results: list[CheckResult], out: Path | None = None) -> str:
    """What ``evalign judge-check`` prints: the table, then where the labeled pairs came from
    and where the results were written (``out`` as given to the run)."""
    where = f"results: {results_file(out)}"
    if not results:
        return format_table(results) + "\n" + where
    return format_table(results) + "\n" + f"labeled pairs: {results[0].source} (n={results[0].n}); {where}"
