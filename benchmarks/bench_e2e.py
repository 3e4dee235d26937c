"""end_to_end: wall time of `evalign ablate --preset quickstart` and of one `evalign run`
iteration, with a per-stage breakdown read from the run store.

The breakdown comes from the study record's ``stage_uses`` (seconds of every stage computed
now; reused stages cost ~0) plus what happens outside stages, from the store's timestamps:
the final evaluation answers every policy (``generations`` rows written after the last loop
stage) and judges every pair and answer in one pass (``judgments`` rows) before its cheap
``eval_*`` stages read the cache; the rest (Python start, imports, report) is "other".

``--quickstart-run DIR`` reads an existing finished ablation directory instead of running
the ablation (about 10 minutes on 2 cores); `evalign run` always runs.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import common

TARGET_MIN = 10.0
EVAL_STAGES = ("eval_winrate", "eval_score")


def parse_time_file(text: str) -> float | None:
    """Seconds from `time`'s output ("real 27m14.383s" or "real 0:27:14" / "12.5")."""
    m = re.search(r"^real\s+(?:(\d+)m)?([\d.]+)s", text, re.M)
    if m:
        return int(m.group(1) or 0) * 60 + float(m.group(2))
    m = re.search(r"(?:(\d+):)?(\d+):([\d.]+)\s*(?:elapsed|wall)?", text)
    if m and ":" in m.group(0):
        return int(m.group(1) or 0) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
    return None


def read_study(run_dir: Path) -> dict:
    """The study record and timestamp-derived spans of a finished run directory (read-only)."""
    db = Path(run_dir) / "run.db"
    if not db.is_file():
        raise FileNotFoundError(f"{run_dir} is not an evalign run directory (no run.db)")
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        raw = con.execute("SELECT value FROM meta WHERE key='study'").fetchone()
        if not raw:
            raise ValueError(f"{run_dir}: no study record (the run did not finish)")
        study = json.loads(raw[0])
        loop_end = con.execute(
            f"SELECT max(finished_at) FROM stages WHERE name NOT IN {EVAL_STAGES}").fetchone()[0]
        eval_start = con.execute(
            f"SELECT min(started_at) FROM stages WHERE name IN {EVAL_STAGES}").fetchone()[0]
        first = con.execute("SELECT min(started_at) FROM stages").fetchone()[0]
        last = con.execute("SELECT max(finished_at) FROM stages").fetchone()[0]
        spans = {"first_stage": first, "last_stage": last, "loop_end": loop_end, "eval_start": eval_start}
        if loop_end and eval_start and eval_start > loop_end:
            g = con.execute("SELECT count(*), max(created_at) FROM generations WHERE created_at > ? AND created_at < ?",
                            (loop_end, eval_start)).fetchone()
            j = con.execute("SELECT count(*) FROM judgments WHERE created_at > ? AND created_at < ?",
                            (loop_end, eval_start)).fetchone()
            answers_end = g[1] or loop_end
            spans.update({"eval_answers": answers_end - loop_end, "eval_judging": eval_start - answers_end,
                          "eval_answers_n": g[0], "eval_judgments_n": j[0]})
    finally:
        con.close()
    return {"study": study, "spans": spans}


def breakdown(run: dict, wall: float) -> tuple[list[dict], dict]:
    """Per-stage seconds (computed now / reused) plus the evaluation outside stages and the rest."""
    uses = run["study"].get("stage_uses", [])
    agg: dict[str, dict] = defaultdict(lambda: {"seconds": 0.0, "computed": 0, "reused": 0, "calls": 0})
    for u in uses:
        a = agg[u["name"]]
        a["seconds"] += float(u.get("seconds") or 0.0)
        a["reused" if u.get("reused") else "computed"] += 1
        a["calls"] += int(u.get("calls") or 0)
    rows = [{"part": name, **a} for name, a in agg.items()]
    sp = run["spans"]
    if "eval_answers" in sp:
        rows.append({"part": "evaluation answers (outside stages)", "seconds": sp["eval_answers"], "computed": 1,
                     "reused": 0, "calls": sp["eval_answers_n"]})
        rows.append({"part": "evaluation judging (outside stages)", "seconds": sp["eval_judging"], "computed": 1,
                     "reused": 0, "calls": sp["eval_judgments_n"]})
    accounted = sum(r["seconds"] for r in rows)
    rows.append({"part": "other (start-up, imports, report, between stages)", "seconds": max(0.0, wall - accounted),
                 "computed": 0, "reused": 0, "calls": 0})
    rows.sort(key=lambda r: -r["seconds"])
    for r in rows:
        r["share"] = r["seconds"] / wall if wall else None
    return rows, {"accounted": accounted, "wall": wall}


def breakdown_table(rows: list[dict]) -> str:
    return common.markdown_table(["part", "seconds", "share of wall", "computed", "reused", "calls"],
                                 [[r["part"], r["seconds"], f"{(r['share'] or 0) * 100:.1f}%", r["computed"],
                                   r["reused"], r["calls"]] for r in rows])


def run_cli(args: list[str], log_path: Path) -> tuple[int, float]:
    exe = str(Path(sys.executable).with_name("evalign"))
    t0 = time.perf_counter()
    with open(log_path, "w") as fh:
        rc = subprocess.run([exe, *args], stdout=fh, stderr=subprocess.STDOUT, env={**os.environ}).returncode
    return rc, time.perf_counter() - t0


def run_cli_checked(args: list[str], log: Path) -> float:
    """``run_cli`` that raises with the log's tail when the command fails; its wall seconds."""
    rc, wall = run_cli(args, log)
    if rc != 0:
        raise RuntimeError(f"evalign {args[0]} failed (rc {rc}): {common.tail(log, 2000)}")
    return wall


def run(args) -> dict:
    work = Path(args.workdir)
    notes, tables, details = [], {}, {}
    # --- the ablation
    if args.quickstart_run:
        qdir = Path(args.quickstart_run)
        abl = read_study(qdir)
        wall = abl["study"].get("wall_seconds")
        timed = None
        for cand in (qdir.with_name(qdir.name + ".time"), qdir / "time.txt"):
            if cand.is_file():
                timed = parse_time_file(cand.read_text())
                if timed:
                    notes.append(f"`{cand}` (the `time` of the CLI command) says {timed / 60:.1f} min wall; "
                                 f"the study record's run_study time is {wall / 60:.1f} min.")
                    break
        abl_wall = timed or wall
        source = f"read from {qdir} (finished run; not re-run)"
    else:
        qdir = work / "quickstart_ablation"
        common.log("evalign ablate --preset quickstart")
        abl_wall = run_cli_checked(["ablate", "--preset", "quickstart", "--quiet", "--set", f"run.output_dir={qdir}"],
                                   work / "ablate.log")
        abl = read_study(qdir)
        source = "run here (`evalign ablate --preset quickstart`)"
    common.log(f"ablation: {abl_wall / 60:.1f} min ({source})")
    arms = [a for a in abl["study"].get("arms", {}) if a != "theta0"]
    abl_rows, _ = breakdown(abl, abl_wall)
    tables["ablation breakdown (`evalign ablate --preset quickstart`)"] = breakdown_table(abl_rows)

    # --- one `evalign run` iteration
    rdir = work / "quickstart_run"
    common.log("evalign run --preset quickstart")
    run_wall = run_cli_checked(["run", "--preset", "quickstart", "--quiet", "--set", f"run.output_dir={rdir}"],
                               work / "run.log")
    one = read_study(rdir)
    run_rows, _ = breakdown(one, run_wall)
    tables["one iteration breakdown (`evalign run --preset quickstart`)"] = breakdown_table(run_rows)
    common.log(f"run: {run_wall / 60:.1f} min")

    rows = [
        common.row(f"`evalign ablate --preset quickstart` wall ({len(arms)} arms)", "min", abl_wall / 60,
                   target=common.Target("<=", TARGET_MIN, on="evalign", unit="min"), key="ablate",
                   note=source),
        common.row("`evalign run --preset quickstart` wall (1 iteration + evaluation)", "min", run_wall / 60,
                   key="run"),
    ]
    top = [r for r in abl_rows if r["share"]][:4]
    notes.append(f"Ablation {source}: arms {', '.join(arms)}; shared stages computed once ("
                 f"{sum(r['reused'] for r in abl_rows)} stage uses reused).")
    bounds = [
        "What the ablation's time goes to: " + "; ".join(f"{r['part']} {r['seconds'] / 60:.1f} min "
                                                      f"({r['share']:.0%})" for r in top) + ".",
        "Each part runs at its own bound (see the other items): the judge (reward stages and evaluation "
        "judging) is llama.cpp prompt evaluation, compute-bound on 2 cores; the creator (evolve) is llama.cpp "
        "decode, memory-bandwidth bound on one sequence; training is bf16 GEMMs; the policy's sampling and "
        "evaluation answers are small-batch decode of a 135M model.",
    ]
    details.update({"ablation": {"wall": abl_wall, "source": source, "breakdown": abl_rows, "spans": abl["spans"]},
                    "run": {"wall": run_wall, "breakdown": run_rows, "spans": one["spans"]}})
    return {"rows": rows, "notes": notes, "bounds": bounds, "tables": tables, "details": details}


if __name__ == "__main__":

    qs = Path(sys.argv[1]) if len(sys.argv) > 1 else None
    for r in breakdown(read_study(qs), read_study(qs)["study"]["wall_seconds"])[0]:
        print(r)
