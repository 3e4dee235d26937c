"""The study report as one self-contained HTML page.

The page opens from disk with no server and no network: CSS is inline, plots are embedded
as base64 ``data:`` URIs, there are no scripts, and a Content-Security-Policy forbids
loading anything else. Every string taken from ``results`` (prompt texts above all: the
creator wrote them) is HTML-escaped.
"""

from __future__ import annotations

import base64
import html as _html
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from evalign.creator.operators import operator_label
from evalign.report import tables
from evalign.report.plots import PLOTS

MAX_TEXT_CHARS = 2000  # a lineage step longer than this is cut (the full text is in the store)
MAX_STAGE_ROWS = 400

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:1.5rem auto;
max-width:1400px;padding:0 1rem;color:#1a1a1a;line-height:1.45;font-size:15px}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.25rem;border-bottom:2px solid #ddd;padding-bottom:.2rem;
margin-top:2rem}h3{font-size:1.05rem;margin-bottom:.3rem}
.meta{color:#555;font-size:.9rem}.meta code{background:#f3f3f3;padding:0 .25rem}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}
th,td{border:1px solid #ccc;padding:.25rem .45rem;text-align:right;vertical-align:top}
td{white-space:nowrap}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}
td.text,th.text{text-align:left;white-space:normal}
table#results td:first-child{white-space:nowrap}
table#results{font-size:.8rem}
tr.default td{background:#fff1e6;font-weight:600}tr.total td{font-weight:600;background:#f7f7f7}
.note{color:#444;font-size:.88rem;max-width:60rem}
.judge{border-left:4px solid #4c72b0;background:#f2f5fa;padding:.5rem .8rem;max-width:60rem}
.plots{display:flex;flex-wrap:wrap;gap:1rem}
figure.plot{margin:0;border:1px solid #ddd;padding:.5rem;background:#fff;max-width:100%;break-inside:avoid}
figure.plot img{max-width:100%;height:auto;display:block}
figure.plot figcaption{font-size:.85rem;color:#444;margin-top:.3rem;max-width:40rem}
.nodata{color:#888;font-style:italic}
ol.lineage{padding-left:1.8rem;margin:.3rem 0 1rem;border-left:3px solid #d95f02}
.chain{font-size:.85rem;font-weight:600;margin:.6rem 0 0}ol.lineage li{margin-bottom:.4rem}
.step{font-size:.8rem;color:#555}
.prompt{white-space:pre-wrap;word-wrap:break-word;background:#fafafa;border:1px solid #e3e3e3;padding:.3rem .5rem;
margin:.15rem 0 0;font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:.82rem}
pre{background:#f6f6f6;border:1px solid #ddd;padding:.6rem;overflow-x:auto;font-size:.8rem;white-space:pre-wrap}
details{margin:.5rem 0}summary{cursor:pointer;font-weight:600}
@media print{body{max-width:none;font-size:11px}table#results{font-size:7.5px}h2{break-after:avoid}.scroll{overflow:visible}
figure.plot{border:none}}
"""

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def esc(value: Any) -> str:
    """HTML-escape anything (``None`` becomes the "—" placeholder)."""
    return "—" if value is None else _html.escape(str(value), quote=True)


def render(results: dict[str, Any], pngs: Sequence[str | Path], markdown: str,
           *, generated_at: datetime | None = None) -> str:
    """The report page for ``results`` with the plots ``pngs`` embedded; ``markdown`` is
    ``tables.markdown(results)``, whose notes under the table are shown with the HTML table."""
    when = (generated_at or datetime.now(timezone.utc)).strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    run_dir = results.get("run_dir")
    title = "evalign report" + (f" — {Path(str(run_dir)).name}" if run_dir else "")
    body = [
        _header(results, when),
        _results_section(results, markdown),
        _judge_section(results),
        _plots_section(pngs),
        _sharing_section(results),
        _lineage_section(results),
        _categories_section(results),
        _stages_section(results),
        _provenance_section(results),
    ]
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        + "\n".join(b for b in body if b)
        + "\n</body>\n</html>\n"
    )


# ---------------------------------------------------------------- building blocks


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, id_: str | None = None,
           row_attrs: Iterable[str] | None = None, text_cols: Iterable[int] = (0,)) -> str:
    text_cols = set(text_cols)
    cls = lambda i: ' class="text"' if i in text_cols else ""  # noqa: E731
    head = "".join(f"<th{cls(i)} scope=\"col\">{esc(h)}</th>" for i, h in enumerate(headers))
    attrs = iter(row_attrs) if row_attrs is not None else None
    body = []
    for row in rows:
        a = next(attrs, "") if attrs is not None else ""
        cells = "".join(f"<td{cls(i)}>{esc(v)}</td>" for i, v in enumerate(row))
        body.append(f"<tr{a}>{cells}</tr>")
    id_attr = f' id="{esc(id_)}"' if id_ else ""
    return (f'<div class="scroll"><table{id_attr}>\n<thead><tr>{head}</tr></thead>\n<tbody>\n'
            + "\n".join(body) + "\n</tbody>\n</table></div>")


def _fmt(v: Any, fmt: str = "{:.1f}") -> str:
    if v is None:
        return "—"
    try:
        return fmt.format(v)
    except (TypeError, ValueError):
        return str(v)


def _section(id_: str, title: str, *parts: str) -> str:
    return f'<section id="{id_}">\n<h2>{esc(title)}</h2>\n' + "\n".join(p for p in parts if p) + "\n</section>"


def _nodata(what: str) -> str:
    return f'<p class="nodata">no data for {esc(what)}</p>'


# ---------------------------------------------------------------- sections


def _header(results: dict[str, Any], when: str) -> str:
    bits = [f"run directory <code>{esc(results.get('run_dir'))}</code>", f"generated {esc(when)}"]
    if results.get("wall_seconds") is not None:
        bits.append(f"wall time {esc(_fmt(results['wall_seconds'], '{:.0f}'))} s")
    if results.get("default_arm"):
        bits.append(f"default arm <strong>{esc(results['default_arm'])}</strong>")
    if results.get("baseline_arm"):
        bits.append(f"baseline arm {esc(results['baseline_arm'])}")
    if results.get("start_arm"):
        bits.append(f"arms start from {esc(results['start_arm'])} (one shared DPO round)")
    n_seeds = (results.get("intervals") or {}).get("n_seeds")
    if n_seeds:
        bits.append(f"{esc(n_seeds)} seed{'s' if n_seeds != 1 else ''}")
    if results.get("single"):
        bits.append("single run (no ablation)")
    return ('<header>\n<h1>evalign report</h1>\n<p class="meta">eva: Evolving Alignment via Asymmetric '
            'Self-Play — ablation results</p>\n<p class="meta">' + " · ".join(bits) + "</p>\n</header>")


def _notes(markdown: str, judge_text: str | None) -> list[str]:
    """The paragraphs under the Markdown table (its notes), minus the judge block."""
    paras, cur = [], []
    for line in (markdown or "").splitlines():
        if line.startswith("|"):
            continue
        if line.strip():
            cur.append(line.strip())
        elif cur:
            paras.append(" ".join(cur))
            cur = []
    if cur:
        paras.append(" ".join(cur))
    return [p for p in paras if p != judge_text]


def _results_section(results: dict[str, Any], markdown: str) -> str:
    rows = results.get("rows") or []
    default = results.get("default_arm")
    parts = []
    if rows:
        attrs = [f' data-arm="{esc(r.get("arm"))}"' + (' class="default"' if r.get("arm") == default else "")
                 for r in rows]
        parts.append(_table([c for c, _ in tables.COLUMNS], [[_cell(fn, r) for _, fn in tables.COLUMNS]
                                                            for r in rows], id_="results", row_attrs=attrs))
    else:
        parts.append(_table([c for c, _ in tables.COLUMNS], [], id_="results"))
        parts.append(_nodata("any arm (nothing evaluated yet)"))
    jv = results.get("judge_validity")
    judge_text = tables.judge_block(jv) if jv else None
    parts += [f'<p class="note">{esc(p)}</p>' for p in _notes(markdown, judge_text)]
    parts.append('<p class="note">— : not measured (for example an arm not evaluated yet).</p>')
    if rows:
        arm_rows = []
        for r in rows:
            filt = r.get("filtered") or {}
            arm_rows.append([
                r.get("arm"), r.get("description") or "", _fmt(r.get("n_seeds"), "{}"),
                "yes" if r.get("creator_enabled") else "no", _fmt(r.get("evolved"), "{}"), _fmt(r.get("kept"), "{}"),
                ", ".join(f"{k}: {v}" for k, v in sorted(filt.items())) or "—",
            ])
        parts.append("<h3>Arms</h3>")
        parts.append(_table(["arm", "description", "seeds", "creator", "evolved", "kept", "filtered (reason: count)"],
                            arm_rows, id_="arms", text_cols=(0, 1, 6)))
    return _section("results-section", "Results", *parts)


def _cell(fn, row: dict[str, Any]) -> str:
    try:
        return fn(row)
    except (KeyError, TypeError, ValueError, AttributeError):
        return "—"


def _judge_section(results: dict[str, Any]) -> str:
    jv = results.get("judge_validity")
    if not jv:
        return _section("judge", "Judge validity",
                        '<p class="note">Not measured for this run: win-rate differences are not '
                        "calibrated against the judge's accuracy.</p>")
    return _section("judge", "Judge validity", f'<p class="judge">{esc(tables.judge_block(jv))}</p>')


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _plots_section(pngs: Sequence[str | Path]) -> str:
    by_name = {Path(p).stem: Path(p) for p in pngs}
    known = [name for name, _ in PLOTS]
    order = list(PLOTS) + [(stem, stem.replace("_", " ")) for stem in by_name if stem not in known]
    figs = []
    for name, caption in order:
        path = by_name.get(name)
        if path is not None and path.is_file():
            figs.append(f'<figure class="plot" data-name="{esc(name)}">\n<img src="{_data_uri(path)}" '
                        f'alt="{esc(caption)}">\n<figcaption>{esc(caption)}</figcaption>\n</figure>')
        else:
            figs.append(f'<figure class="plot missing" data-name="{esc(name)}">\n'
                        f'{_nodata(caption[0].lower() + caption[1:])}\n</figure>')
    return _section("plots", "Plots", '<div class="plots">\n' + "\n".join(figs) + "\n</div>")


def _sharing_section(results: dict[str, Any]) -> str:
    sh = results.get("sharing") or {}
    by_stage = sh.get("by_stage") or {}
    if not by_stage:
        return _section("sharing", "Computation shared between arms", _nodata("stage sharing (no stages recorded)"))
    computed, saved = sh.get("computed_seconds") or 0.0, sh.get("saved_seconds") or 0.0
    frac = sh.get("saved_fraction") or 0.0
    summary = (f'<p>Stages whose inputs are equal across arms were computed once and reused. Computed: '
               f'<strong>{esc(_fmt(computed, "{:.0f}"))} s</strong>; reused instead of recomputed: '
               f'<strong>{esc(_fmt(saved, "{:.0f}"))} s</strong> saved '
               f'({esc(_fmt(100 * frac, "{:.0f}"))}% of the total work).</p>')
    rows = [[stage, b.get("computed", 0), b.get("reused", 0), _fmt(b.get("saved_seconds"), "{:.1f}")]
            for stage, b in by_stage.items()]
    return _section("sharing", "Computation shared between arms", summary,
                    _table(["stage", "computed (times)", "reused (times)", "seconds saved"], rows, id_="sharing-table"))


def _lineage_section(results: dict[str, Any]) -> str:
    lineage = results.get("lineage") or {}
    parts = ['<p class="note">A few kept evolved prompts per operator, each traced back to its seed prompt '
             "(seed first, newest last).</p>"]
    if not any(lineage.values()):
        parts.append(_nodata("evolved prompts (the creator did not run, or kept nothing)"))
    for op, chains in sorted(lineage.items()):
        parts.append(f'<h3>Operator: {esc(operator_label(op))}</h3>')
        if not chains:
            parts.append(_nodata(f"kept prompts from {op}"))
            continue
        for k, chain in enumerate(chains, 1):
            parts.append(f'<p class="chain">Example {k} of {len(chains)}: {len(chain) - 1} evolution step(s) '
                         'from the seed</p>')
            steps = []
            for step in chain:
                text = str(step.get("text") or "")
                if len(text) > MAX_TEXT_CHARS:
                    text = text[:MAX_TEXT_CHARS] + " …[cut]"
                info = [f"depth {esc(step.get('depth'))}", esc(step.get("origin") or "?")]
                if step.get("origin") != "seed":
                    info.append(f"operator {esc(step.get('operator'))}")
                    info.append(f"mutation {esc(step.get('mutation'))}")
                info.append(f"id {esc(step.get('id'))}")
                steps.append(f'<li><div class="step">{" · ".join(info)}</div>'
                             f'<div class="prompt">{esc(text)}</div></li>')
            parts.append(f'<ol class="lineage" data-operator="{esc(op)}">\n' + "\n".join(steps) + "\n</ol>")
    return _section("lineage", "Evolved prompts and their lineage", *parts)


def _categories_section(results: dict[str, Any]) -> str:
    rows = [r for r in results.get("rows") or [] if r.get("per_category")]
    if not rows:
        return _section("categories", "Score per category", _nodata("per-category scores"))
    cats = sorted({c for r in rows for c in r["per_category"]})
    table = _table(["arm", *cats], [[r.get("arm"), *(_fmt(r["per_category"].get(c), "{:.2f}") for c in cats)]
                                    for r in rows], id_="categories",
                   row_attrs=[' class="default"' if r.get("arm") == results.get("default_arm") else ""
                              for r in rows])
    return _section("categories", "Score per category", '<p class="note">Mean 1–10 score per question category '
                    "(averaged over seeds).</p>", table)


def _stages_section(results: dict[str, Any]) -> str:
    stages = results.get("stages") or []
    if not stages:
        return _section("stages", "Stage timings", _nodata("stage timings"))
    by_arm: dict[str, list[float]] = {}
    for s in stages:
        acc = by_arm.setdefault(str(s.get("arm")), [0, 0, 0.0, 0.0, 0])
        acc[0 if not s.get("reused") else 1] += 1
        acc[2] += s.get("seconds") or 0
        acc[3] += s.get("original_seconds") or 0
        acc[4] += s.get("calls") or 0
    summary = _table(["arm", "stages computed", "stages reused", "seconds (this run)", "seconds (when computed)",
                      "calls"], [[arm, a[0], a[1], _fmt(a[2]), _fmt(a[3]), a[4]] for arm, a in by_arm.items()],
                     id_="stages-by-arm")
    rows = [[s.get("arm"), s.get("iteration"), s.get("name"), "reused" if s.get("reused") else "computed",
             _fmt(s.get("seconds")), _fmt(s.get("original_seconds")), _fmt(s.get("calls"), "{}")]
            for s in stages[:MAX_STAGE_ROWS]]
    rows.append(["total", "", "", f"{sum(1 for s in stages if s.get('reused'))} reused",
                 _fmt(sum(s.get("seconds") or 0 for s in stages)),
                 _fmt(sum(s.get("original_seconds") or 0 for s in stages)),
                 _fmt(sum(s.get("calls") or 0 for s in stages), "{}")])
    attrs = [""] * (len(rows) - 1) + [' class="total"']
    detail = _table(["arm", "iteration", "stage", "status", "seconds (this run)", "seconds (when computed)",
                     "calls"], rows, id_="stages", row_attrs=attrs, text_cols=(0, 2, 3))
    if len(stages) > MAX_STAGE_ROWS:
        detail = (f'<p class="note">First {MAX_STAGE_ROWS} of {len(stages)} stage uses shown; '
                  f"totals are over all.</p>\n{detail}")
    return _section("stages", "Stage timings",
                    '<p class="note">A reused stage took no time in this run; "when computed" is what it cost '
                    "the arm that computed it.</p>", summary,
                    f"<details><summary>All {len(stages)} stage uses</summary>\n{detail}\n</details>")


def _provenance_section(results: dict[str, Any]) -> str:
    versions = results.get("versions") or {}
    parts = []
    if versions:
        parts.append(_table(["package", "version"], sorted(versions.items(), key=lambda kv: str(kv[0])),
                            id_="versions", text_cols=(0, 1)))
    else:
        parts.append(_nodata("package versions"))
    config = results.get("config")
    if config:
        parts.append(f"<details><summary>Resolved config</summary>\n<pre>{esc(config)}</pre>\n</details>")
    else:
        parts.append(_nodata("the resolved config"))
    return _section("provenance", "Versions and config", *parts)
