"""The study report, rebuilt from the run store alone (``evalign report RUN_DIR``).

``collect`` turns the store into one ``results`` dict (also written as ``results.json``);
``tables`` renders it as Markdown and CSV, ``plots`` as PNGs, ``html`` as one
self-contained page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from evalign.fsutil import atomic_write_text
from evalign.store import RunStore


@dataclass
class StudyResult:
    """Where a study's report was written, and its results table as Markdown."""

    run_dir: str
    report_dir: str
    html: str | None
    table_markdown: str
    #: What the table lacks: "ARM seed N: METRIC, ..." per arm seed whose evaluation is missing.
    missing: list[str] = field(default_factory=list)


def build_report(store: RunStore, out_dir: str | Path | None = None):
    """Write results.json, results.md, results.csv, the plots and report.html."""
    import json

    from evalign.report import collect, html, plots, tables

    out = Path(out_dir) if out_dir else store.dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    results = collect.collect(store)
    atomic_write_text(out / "results.json", json.dumps(results, indent=1, default=str))
    markdown = tables.markdown(results)
    atomic_write_text(out / "results.md", markdown)
    atomic_write_text(out / "results.csv", tables.csv_text(results))
    pngs = plots.make_plots(results, out)
    page = out / "report.html"
    atomic_write_text(page, html.render(results, pngs, markdown))
    return StudyResult(str(store.dir), str(out), str(page), markdown, missing_evaluation(store))


def missing_evaluation(store: RunStore) -> list[str]:
    """The arms and seeds of the study whose evaluation is not (yet) in the store, one entry
    each ("eva seed 0: win_rate_vs_theta0, score"); empty for a finished study, or one whose
    config turned evaluation off."""
    import yaml

    from evalign.report.collect import THETA0
    from evalign.report.record import StudyRecord

    study = StudyRecord.from_json(store.get_meta("study"))
    try:
        config = yaml.safe_load(store.get_meta("config") or "") or {}
    except yaml.YAMLError:
        config = {}
    if not study.arms or not (config.get("eval") or {}).get("enabled", True):
        return []
    out = []
    baseline = study.arms.get(study.baseline_arm or "")
    for name, arm in study.arms.items():
        for seed, entry in arm.seeds.items():
            wanted = ["score"] if name == THETA0 else ["win_rate_vs_theta0", "score"]
            if (name not in (THETA0, study.baseline_arm, study.start_arm) and baseline is not None
                    and seed in baseline.seeds and (config.get("eval") or {}).get("vs_baseline", True)):
                wanted.append("win_rate_vs_baseline")
            have = entry.eval or {}
            lacking = [m for m in wanted if store.metric(have.get(m), m) is None]
            if lacking:
                out.append(f"{name} seed {seed}: {', '.join(lacking)}")
    if THETA0 not in study.arms:
        out.append(f"{THETA0}: score")
    return out
