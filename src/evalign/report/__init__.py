"""The study report, rebuilt from the run store alone (``evalign report RUN_DIR``).

``collect`` turns the store into one ``results`` dict (also written as ``results.json``);
``tables`` renders it as Markdown and CSV, ``plots`` as PNGs, ``html`` as one
self-contained page.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    return StudyResult(str(store.dir), str(out), str(page), markdown)
