"""cpu_study: wall time and peak RSS of `evalign ablate --preset cpu` (every arm, θ0 → θ1 →
each arm's round, then the evaluation), with the per-stage breakdown read from its store.

The study takes up to two hours on 2 cores, so the harness runs it only when named
(``--only cpu_study``); ``--cpu-run DIR`` reads a finished one instead. Its wall time and peak
RSS then come from ``DIR.time`` (or ``DIR/time.txt``): what ``/usr/bin/time -v -o DIR.time`` wrote around
the command, which covers the whole process (start-up, every stage, the report). Without that
file the study record's own run time is used and the peak RSS is unknown.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import common
from bench_e2e import breakdown, breakdown_table, parse_time_file, read_study, run_cli_checked

TARGET_MIN = 120.0
TARGET_RSS_GIB = 12.0


def peak_rss_gib(time_text: str) -> float | None:
    """Peak RSS from ``/usr/bin/time -v`` ("Maximum resident set size (kbytes): 11953152")."""
    m = re.search(r"Maximum resident set size \(kbytes\):\s*(\d+)", time_text)
    return int(m.group(1)) / 2**20 if m else None


def time_file(run_dir: Path) -> Path | None:
    for cand in (run_dir.with_name(run_dir.name + ".time"), run_dir / "time.txt"):
        if cand.is_file():
            return cand
    return None


def run(args) -> dict:
    notes, tables = [], {}
    rss = None
    if args.cpu_run:
        run_dir = Path(args.cpu_run)
        study = read_study(run_dir)
        wall = study["study"].get("wall_seconds")
        timed = time_file(run_dir)
        if timed is not None:
            text = timed.read_text(errors="replace")
            wall = parse_time_file(text) or wall
            rss = peak_rss_gib(text)
            notes.append(f"Wall time and peak RSS from `{timed.name}` (`/usr/bin/time -v` around the command).")
        else:
            notes.append("No `/usr/bin/time -v` file beside the run: wall time is the study record's; peak RSS unknown.")
        source = f"read from {run_dir} (finished run; not re-run)"
    else:
        run_dir = Path(args.workdir) / "cpu_study"
        common.log("evalign ablate --preset cpu (up to two hours)")
        wall = run_cli_checked(["ablate", "--preset", "cpu", "--quiet", "--set", f"run.output_dir={run_dir}"],
                               Path(args.workdir) / "ablate-cpu.log")
        study = read_study(run_dir)
        source = "run here (`evalign ablate --preset cpu`); peak RSS is this item's process tree's"
    arms = [a for a in study["study"].get("arms", {}) if a != "theta0"]
    rows_b, _ = breakdown(study, wall)
    tables["stage breakdown (`evalign ablate --preset cpu`)"] = breakdown_table(rows_b)
    rows = [common.row(f"`evalign ablate --preset cpu` wall ({len(arms)} rows after θ0)", "min", wall / 60,
                       target=common.Target("<=", TARGET_MIN, on="evalign", unit="min"), key="ablate_cpu",
                       note=source)]
    if rss is not None:
        rows.append(common.row("`evalign ablate --preset cpu` peak RSS", "GiB", rss,
                               target=common.Target("<=", TARGET_RSS_GIB, on="evalign", unit="GiB"),
                               key="ablate_cpu_rss"))
    notes.append(f"Rows: {', '.join(arms)}; stage uses reused: {sum(r['reused'] for r in rows_b)}.")
    top = [r for r in rows_b if r["share"]][:5]
    bounds = ["Where the time goes: " + "; ".join(f"{r['part']} {r['seconds'] / 60:.1f} min ({r['share']:.0%})"
                                                  for r in top) + ". The judge (reward stages, evaluation judging) is "
              "llama.cpp prompt evaluation, compute-bound; the creator is one-sequence llama.cpp decode, "
              "bandwidth-bound (see judge_scoring and creator_rewrites)."]
    details = {"wall": wall, "source": source, "breakdown": rows_b, "spans": study["spans"], "peak_rss_gib": rss}
    return {"rows": rows, "notes": notes, "bounds": bounds, "tables": tables, "details": details}


if __name__ == "__main__":
    from types import SimpleNamespace

    print(run(SimpleNamespace(cpu_run=Path(sys.argv[1]), workdir="/tmp"))["tables"])
